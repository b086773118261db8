"""check_layout: our architectures, built on the meta device, against the released checkpoints' key/shape lists."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from glimpse3d_core.models.layout import LayoutError, check_layout, compare, reference_layout


def test_triposr_matches_the_packaged_layout() -> None:
    report = check_layout("triposr")
    assert report.ok, report.summary()
    assert len(report.matched) == report.total_reference == 549
    assert "549/549" in report.summary()


def test_packaged_layouts_equal_the_shared_reference(shared_data: Path) -> None:
    for name in ("triposr", "syncdreamer"):
        shared = shared_data / "checkpoints" / f"{name}_state_dict.json"
        assert reference_layout(name, shared)[0] == reference_layout(name)[0]


def test_syncdreamer_matches_the_packaged_layout() -> None:
    try:
        importlib.import_module("glimpse3d_core.models.syncdreamer").build_for_layout  # noqa: B018
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"SyncDreamer layout builder not available yet: {exc}")
    report = check_layout("syncdreamer")
    assert report.ok, report.summary()
    assert len(report.matched) == 1618


def test_compare_reports_each_kind_of_difference(tmp_path: Path) -> None:
    reference = {"a": (2, 3), "b": (4,), "c": (1,)}
    built = {"a": (2, 3), "b": (5,), "d": (7,)}
    report = compare("toy", built, reference, "toy.json")
    assert report.matched == ["a"] and report.missing == ["c"] and report.unexpected == ["d"]
    assert report.shape_mismatch == [("b", (5,), (4,))]
    assert not report.ok and report.summary().startswith("toy: 1/3 keys match")

    layout, _ = reference_layout("triposr")
    first = next(iter(layout))
    edited = {k: list(v) for k, v in layout.items() if k != first}  # one key fewer than we build
    edited["decoder.layers.0.weight"] = [1, 1]  # change one shape
    edited["extra.key"] = [3]  # one key we do not build
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({"keys": edited}))
    report = check_layout("triposr", path)
    assert (len(report.missing), len(report.unexpected), len(report.shape_mismatch)) == (1, 1, 1)
    assert report.missing == ["extra.key"] and report.unexpected == [first] and len(report.matched) == 547
    assert report.shape_mismatch == [("decoder.layers.0.weight", (64, 120), (1, 1))]


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="unknown model"):
        check_layout("zero123")  # type: ignore[arg-type]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LayoutError, match="not a layout file"):
        check_layout("triposr", bad)
    with pytest.raises(LayoutError, match="cannot read"):
        check_layout("triposr", tmp_path / "absent.json")
