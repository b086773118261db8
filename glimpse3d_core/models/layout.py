"""Compare state-dict layouts (key names and shapes) with the released checkpoints' key lists.

The reference layouts (``layouts/<name>.json``, shipped with the package) map checkpoint key -> shape, plus
provenance:

* ``triposr``, ``syncdreamer`` (copies of ../shared/data/checkpoints/<name>_state_dict.json): derived from the
  original code on the meta device. Each model package provides a lazy builder,
  ``glimpse3d_core.models.<name>:build_for_layout() -> Mapping[str, Tensor]``, returning our full-size
  architecture's state dict under the checkpoint's key names, built on the meta device (no memory, no weights).
  A returned ``nn.Module`` is taken as its ``state_dict()``.
* the library-backed models' weight files (:data:`glimpse3d_core.models.library_layouts.RELEASED_FILES`):
  derived from the library architecture built from the released config values on the meta device, minus the keys
  the released file is known to omit (``research/make_released_layouts.py`` writes them).

Keys that :mod:`glimpse3d_core.models.released` allows a model's files to omit or to hold in addition are
optional in every comparison: reported, never an error.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from glimpse3d_core.models.library_layouts import RELEASED_FILES
from glimpse3d_core.models.released import optional_key

BUILDERS: dict[str, str] = {
    "triposr": "glimpse3d_core.models.triposr:build_for_layout",
    "syncdreamer": "glimpse3d_core.models.syncdreamer:build_for_layout",
}
WEIGHT_FILES: dict[str, tuple[str, str]] = {
    "triposr": ("triposr", "model.ckpt"),
    "syncdreamer": ("syncdreamer", "syncdreamer-pretrain.ckpt"),
    **{name: (f.model_id, f.weights) for name, f in RELEASED_FILES.items()},
}
"""Layout name -> (registry model id, weight file in its folder)."""
Shape = tuple[int, ...]


class LayoutError(ValueError):
    """An unknown model name, an unreadable reference file, or a builder that cannot be loaded."""


@dataclass(frozen=True)
class LayoutReport:
    """Keys present on both sides with equal shapes (``matched``), only in the reference (``missing``), only in
    our build (``unexpected``), on both sides with different shapes (``shape_mismatch``: key, ours, ref), and on
    one side only but allowed to be (``optional``)."""

    name: str
    reference: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)

    @property
    def total_reference(self) -> int:
        return len(self.matched) + len(self.missing) + len(self.shape_mismatch)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        """One line: matched/total and the counts of each kind of difference."""
        optional = f", optional keys on one side only {len(self.optional)}" if self.optional else ""
        return (
            f"{self.name}: {len(self.matched)}/{self.total_reference} keys match ({self.reference}); "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape mismatches {len(self.shape_mismatch)}{optional}"
        )

    def details(self, limit: int = 5) -> str:
        """The differences by name (at most ``limit`` of each kind), for an error message."""
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape", [f"{k} {list(a)} vs {list(b)}" for k, a, b in self.shape_mismatch])):
            if keys:
                parts.append(f"{label}: " + ", ".join(keys[:limit]) + (" ..." if len(keys) > limit else ""))
        return "; ".join(parts)


def _check_name(name: str) -> None:
    if name not in WEIGHT_FILES:
        raise LayoutError(f"unknown model {name!r}; layouts exist for {', '.join(WEIGHT_FILES)}")


def layouts_of(model_id: str) -> list[tuple[str, str]]:
    """(layout name, weight file) of each released weight file of ``model_id`` that has a key list."""
    return [(name, weights) for name, (owner, weights) in WEIGHT_FILES.items() if owner == model_id]


def reference_layout(name: str, against: Path | None = None) -> tuple[dict[str, Shape], str]:
    """(checkpoint key -> shape, where it came from) from ``against`` or the packaged ``layouts/<name>.json``."""
    _check_name(name)
    if against is None:
        resource = resources.files("glimpse3d_core.models") / "layouts" / f"{name}.json"
        text, origin = resource.read_text(encoding="utf-8"), f"packaged layouts/{name}.json"
    else:
        try:
            text, origin = Path(against).read_text(encoding="utf-8"), str(against)
        except (OSError, UnicodeDecodeError) as exc:
            raise LayoutError(f"cannot read {against}: {exc}") from exc
    try:
        keys = json.loads(text)["keys"]
        layout = {str(k): tuple(int(d) for d in shape) for k, shape in keys.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise LayoutError(f"{origin} is not a layout file (a JSON object whose 'keys' maps names to shapes)") from exc
    return layout, origin


def built_layout(name: str) -> dict[str, Shape]:
    """Checkpoint key -> shape of our full-size architecture, built on the meta device: the library class from
    the released config, or our own model's lazy builder."""
    _check_name(name)
    if name in RELEASED_FILES:
        return {k: tuple(v.shape) for k, v in RELEASED_FILES[name].build().state_dict().items()}
    module_name, function = BUILDERS[name].split(":")
    try:
        builder = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise LayoutError(f"no layout builder {BUILDERS[name]}: {exc}") from exc
    built = builder()
    state = built.state_dict() if isinstance(built, torch.nn.Module) else built
    if not isinstance(state, Mapping):
        raise LayoutError(f"{BUILDERS[name]} returned {type(built).__name__}, not a state dict")
    return {k: tuple(v.shape) for k, v in state.items()}


def compare(name: str, built: Mapping[str, Shape], reference: Mapping[str, Shape], origin: str,
            optional: Callable[[str], bool] = lambda key: False) -> LayoutReport:
    """The differences between two key -> shape layouts; a key on one side only for which ``optional`` holds is
    listed as optional, not as missing or unexpected."""
    report = LayoutReport(name, origin)
    for key, shape in reference.items():
        if key not in built:
            (report.optional if optional(key) else report.missing).append(key)
        elif tuple(built[key]) != tuple(shape):
            report.shape_mismatch.append((key, tuple(built[key]), tuple(shape)))
        else:
            report.matched.append(key)
    for key in built:
        if key not in reference:
            (report.optional if optional(key) else report.unexpected).append(key)
    return report


def check_layout(name: str, against: Path | None = None) -> LayoutReport:
    """Build ``name``'s full architecture on the meta device and compare its checkpoint-named state dict with
    the reference layout (``against``, or the packaged one)."""
    reference, origin = reference_layout(name, against)
    return compare(name, built_layout(name), reference, origin, optional_key(WEIGHT_FILES[name][0]))


def check_state_dict(name: str, state: Mapping[str, torch.Tensor | Shape]) -> LayoutReport:
    """Compare a checkpoint's own key -> tensor or shape (e.g. a downloaded file's) with the packaged released
    layout of ``name``."""
    reference, origin = reference_layout(name)
    shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v) for k, v in state.items()}
    return compare(name, shapes, reference, origin, optional_key(WEIGHT_FILES[name][0]))
