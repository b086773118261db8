"""Atomic file writes: write to a temporary file beside the target, then rename it into place.

A reader never sees a half-written file, and a failed write leaves the previous file (if any) untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600 files and 0700 folders; what we publish gets what open()/mkdir() would give.
FILE_MODE = 0o666 & ~_process_umask()
DIR_MODE = 0o777 & ~_process_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder (same suffix, so libraries that infer the format from the
    name still work); on normal exit it is renamed over ``path``, on an exception it is deleted.

    The parent folder is created if needed. Usage::

        with atomic_write("out/model.glb") as tmp:
            mesh.export(tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    os.chmod(tmp_name, FILE_MODE)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"the temporary file for {target} disappeared before it could be renamed")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
