"""Compare our model implementations' state-dict layouts with the released checkpoints' (names and shapes).

The reference layouts (``layouts/<name>.json``, shipped with the package; copies of
../shared/data/checkpoints/<name>_state_dict.json) were derived from the original code on the meta device: a
``keys`` mapping of checkpoint key -> shape, plus provenance. Each model package provides a lazy builder,
``glimpse3d_core.models.<name>:build_for_layout() -> Mapping[str, Tensor]``, returning the full-size
architecture's state dict under the checkpoint's key names, built on the meta device (no memory, no weights).
A returned ``nn.Module`` is taken as its ``state_dict()``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import torch

LayoutName = Literal["triposr", "syncdreamer"]
BUILDERS: dict[str, str] = {
    "triposr": "glimpse3d_core.models.triposr:build_for_layout",
    "syncdreamer": "glimpse3d_core.models.syncdreamer:build_for_layout",
}
Shape = tuple[int, ...]


class LayoutError(ValueError):
    """An unknown model name, an unreadable reference file, or a builder that cannot be loaded."""


@dataclass(frozen=True)
class LayoutReport:
    """Keys present on both sides with equal shapes (``matched``), only in the reference (``missing``), only in
    our build (``unexpected``), and on both sides with different shapes (``shape_mismatch``: key, ours, ref)."""

    name: str
    reference: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, Shape, Shape]] = field(default_factory=list)

    @property
    def total_reference(self) -> int:
        return len(self.matched) + len(self.missing) + len(self.shape_mismatch)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        """One line: matched/total and the counts of each kind of difference."""
        return (
            f"{self.name}: {len(self.matched)}/{self.total_reference} keys match ({self.reference}); "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape mismatches {len(self.shape_mismatch)}"
        )


def _check_name(name: str) -> None:
    if name not in BUILDERS:
        raise LayoutError(f"unknown model {name!r}; layouts exist for {', '.join(BUILDERS)}")


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
    """Checkpoint key -> shape of our full-size architecture, built on the meta device by its lazy builder."""
    _check_name(name)
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


def compare(name: str, built: Mapping[str, Shape], reference: Mapping[str, Shape], origin: str) -> LayoutReport:
    """The differences between two key -> shape layouts."""
    report = LayoutReport(name, origin)
    for key, shape in reference.items():
        if key not in built:
            report.missing.append(key)
        elif tuple(built[key]) != tuple(shape):
            report.shape_mismatch.append((key, tuple(built[key]), tuple(shape)))
        else:
            report.matched.append(key)
    report.unexpected.extend(k for k in built if k not in reference)
    return report


def check_layout(name: LayoutName, against: Path | None = None) -> LayoutReport:
    """Build ``name``'s full architecture on the meta device and compare its checkpoint-named state dict with
    the reference layout (``against``, or the packaged one)."""
    reference, origin = reference_layout(name, against)
    return compare(name, built_layout(name), reference, origin)


def check_state_dict(name: LayoutName, state: Mapping[str, torch.Tensor]) -> LayoutReport:
    """Compare a checkpoint's own key -> shape (e.g. a downloaded file's state dict) with the packaged released
    layout of ``name``."""
    reference, origin = reference_layout(name)
    return compare(name, {k: tuple(v.shape) for k, v in state.items()}, reference, origin)
