"""Model registry, local lookup, downloads from a local URL, and the `glimpse3d models` CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from glimpse3d_cli.main import app
from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError, UnknownModelError
from glimpse3d_core.models.registry import MODELS, FileKind, FileSpec, ModelSpec, Source, get_spec
from glimpse3d_core.models.store import Status

runner = CliRunner()
SNAPSHOT = "fedcba9876543210fedcba9876543210fedcba98"


def test_registry_covers_every_stage_and_is_consistent():
    stages = {s.stage for s in MODELS.values()}
    assert {"segment", "depth", "reconstruct", "multiview", "enhance", "metrics"} <= stages
    for spec in MODELS.values():
        assert spec.licence and spec.files and spec.size > 0
        assert all(f.size is None or f.size > 0 for f in spec.files)
        if spec.source is Source.HUGGINGFACE:
            assert spec.repo and "/" in spec.repo
        else:
            assert all(f.url and f.md5 for f in spec.files)
        weights = [f for f in spec.files if f.kind is not FileKind.CONFIG]
        assert weights and all(f.size for f in weights), spec.id
    assert get_spec("triposr").repo == "stabilityai/TripoSR"
    with pytest.raises(UnknownModelError, match="known ids"):
        get_spec("no-such-model")


def test_size_tolerance():
    approx = FileSpec("w.safetensors", FileKind.SAFETENSORS, size=1000 * 1000)
    exact = replace(approx, size_exact=True)
    assert approx.size_ok(1_010_000) and not approx.size_ok(2_000_000) and not approx.size_ok(500_000)
    assert exact.size_ok(1_000_000) and not exact.size_ok(1_000_001)


def small_spec(model_id: str = "tiny-dpt") -> ModelSpec:
    return ModelSpec(
        id=model_id, stage="depth", description="test", source=Source.HUGGINGFACE, repo="someone/tiny",
        licence="MIT", loader="dpt",
        files=(FileSpec("config.json", FileKind.CONFIG),
               FileSpec("model.safetensors", FileKind.SAFETENSORS, size=10, size_exact=True)))


def test_status_missing_incomplete_wrong_size_present(empty_env):
    store, spec = empty_env, small_spec()
    assert store.status(spec).status is Status.MISSING
    folder = store.model_dir(spec)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert store.status(spec).status is Status.INCOMPLETE
    (folder / "model.safetensors").write_bytes(b"x" * 9)
    status = store.status(spec)
    assert status.status is Status.WRONG_SIZE and "has 9 bytes, expected 10" in status.problems()[0]
    with pytest.raises(CorruptWeightsError, match="glimpse3d models download tiny-dpt"):
        store.require(spec)
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    status = store.require(spec)[0]
    assert status.location == "models dir" and status.path("model.safetensors") == folder / "model.safetensors"


def test_hf_cache_lookup_at_the_spec_revision(empty_env):
    store, spec = empty_env, small_spec()
    repo = store.hf_cache_dir / "models--someone--tiny"
    snap = repo / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"y" * 10)
    assert store.status(spec).status is Status.MISSING  # no ref for "main" yet
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    status = store.require(spec)[0]
    assert status.location == "HF cache" and status.root == snap
    pinned = replace(spec, revision="0" * 40)
    assert store.status(pinned).status is Status.MISSING


def test_missing_weights_error_names_every_download(empty_env):
    with pytest.raises(MissingWeightsError) as info:
        empty_env.require("dpt-large", "clip-vit-base-patch32")
    message = str(info.value)
    assert "glimpse3d models download dpt-large clip-vit-base-patch32" in message
    assert "model.safetensors not found" in message
    assert isinstance(info.value, FileNotFoundError)


def test_url_download_checks_md5_and_lands_atomically(empty_env, tmp_path):
    payload = b"onnx-bytes" * 100
    source = tmp_path / "release" / "model.onnx"
    source.parent.mkdir()
    source.write_bytes(payload)
    good = FileSpec("model.onnx", FileKind.ONNX, size=len(payload), size_exact=True,
                    md5=hashlib.md5(payload).hexdigest(), url=source.as_uri())
    spec = ModelSpec(id="tiny-rembg", stage="segment", description="test", source=Source.URL, licence="MIT",
                     loader="rembg", files=(good,), options={"session": "u2net"})
    messages: list[str] = []
    status = empty_env.download(spec, progress=messages.append)
    assert status.present and status.path("model.onnx").read_bytes() == payload
    assert not list(status.path("model.onnx").parent.glob("*.part"))
    empty_env.download(spec, progress=messages.append)
    assert "already present" in messages[-1]

    bad = replace(spec, id="tiny-rembg-bad", files=(replace(good, md5="0" * 32),))
    with pytest.raises(CorruptWeightsError, match="md5"):
        empty_env.download(bad, progress=messages.append)


# ---- CLI ------------------------------------------------------------------------------------------------------


def test_cli_list_on_a_fresh_machine_shows_every_model_missing(empty_env):
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for model_id in MODELS:
        assert f"glimpse3d models download {model_id}" in result.output
    assert result.output.count("missing") == len(MODELS)
    assert "present" not in result.output


def test_cli_list_piped_is_plain_and_whole_and_json_is_complete(empty_env):
    """Through a pipe (CliRunner's stdout is no terminal) the list is tab-separated with every id whole, at any
    width; --json carries every model."""
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.splitlines() if not line.startswith("#")]
    assert rows[0][:3] == ["id", "stage", "status"]
    assert [r[0] for r in rows[1:]] == list(MODELS)
    assert "…" not in result.output
    data = json.loads(runner.invoke(app, ["models", "list", "--json"]).output)
    assert [m["id"] for m in data["models"]] == list(MODELS)
    assert {m["status"] for m in data["models"]} == {"missing"}
    assert data["models"][0]["download"] == f"glimpse3d models download {next(iter(MODELS))}"


def test_cli_download_without_ids_and_unknown_id(empty_env):
    assert runner.invoke(app, ["models", "download"]).exit_code == 2
    result = runner.invoke(app, ["models", "download", "nope"])
    assert result.exit_code == 2 and "unknown model id" in result.output


def test_cli_verify_loads_strictly_and_catches_corruption(empty_env, monkeypatch):
    """A tiny DPT loads strictly, and verify then reports that its shapes are not the released file's."""
    from tests.test_backends import save_tiny_dpt, tiny_spec

    real = get_spec("dpt-large")
    folder = empty_env.model_dir(real)
    save_tiny_dpt(folder)
    monkeypatch.setitem(MODELS, real.id, tiny_spec(real, folder))
    result = runner.invoke(app, ["models", "verify"], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "DPTForDepthEstimation loaded strictly" in result.output
    assert "model.safetensors: layout differs from the released key list" in result.output
    assert "shape: dpt.embeddings.cls_token [1, 1, 32] vs [1, 1, 1024]" in result.output

    # Same size, damaged content: the safetensors header no longer parses.
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff" * 8
    weights.write_bytes(bytes(data))
    result = runner.invoke(app, ["models", "verify", "dpt-large"], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and "not a readable safetensors file" in result.output

    # A config that asks for a different architecture: the strict load names the mismatch.
    save_tiny_dpt(folder)
    config = json.loads((folder / "config.json").read_text())
    config["fusion_hidden_size"] = 24
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setitem(MODELS, real.id, tiny_spec(real, folder))
    result = runner.invoke(app, ["models", "verify", "dpt-large"], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and "DPTForDepthEstimation cannot load" in result.output


def test_cli_verify_named_missing_model_fails(empty_env):
    result = runner.invoke(app, ["models", "verify", "triposr"])
    assert result.exit_code == 1 and "glimpse3d models download triposr" in result.output


def test_cli_check_layout_reports_differences(tmp_path):
    from glimpse3d_core.models.layout import reference_layout

    layout, _ = reference_layout("triposr")
    assert runner.invoke(app, ["models", "check-layout", "triposr"]).exit_code == 0
    dropped = next(iter(layout))
    altered = {k: list(v) for k, v in layout.items() if k != dropped}
    altered["extra.weight"] = [1]
    against = tmp_path / "altered.json"
    against.write_text(json.dumps({"keys": altered}))
    result = runner.invoke(app, ["models", "check-layout", "triposr", "--against", str(against)])
    assert result.exit_code == 1
    assert f"unexpected: {dropped}" in result.output and "missing: extra.weight" in result.output
    assert runner.invoke(app, ["models", "check-layout", "nope"]).exit_code == 2
