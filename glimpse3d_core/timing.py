"""Wall-clock timing of named blocks (stage timings in metrics.json, the export's parts)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of the block as ``timings[name]`` (only when it finishes)."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
