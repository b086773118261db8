"""Crash safety of ``glimpse3d run``: real SIGKILLs at named points (``GLIMPSE3D_FAILPOINT``, see
:mod:`glimpse3d_core.failpoints`), each followed by a rerun of the same command.

The chain: ``glimpse3d run`` on two photos (preset ``smoke``, fixed seed) is killed at one point after another in
pipeline order (every stage boundary, inside optimize and inside export, while a value is staged and after it
is stored but before Dagster recorded it, then in the second photo); each rerun reaps the dead run (its ``gpu``
slot freed, so it never hangs), resumes where the dead one stopped, and is killed at the next point; the last
one completes. The results must equal those of an uninterrupted run byte for byte (``metrics.json`` without its
wall-clock entries: ``timings`` and ``optimize_iterations_per_second``), every asset partition must have been
materialised exactly once, and nothing temporary or half-written may remain. The same, shorter, with the stage
storage on S3 (moto server).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from glimpse3d_assets.assets.common import IMAGE_LEVEL_ASSETS, STAGE_NAMES
from glimpse3d_cli.recovery import ATOMIC_TMP, STAGING
from glimpse3d_core.failpoints import ENV, POINTS
from tests.conftest import REPO
from tests.test_dagster_graph import glimpse3d
from tests.test_s3_storage import BUCKET, moto_s3  # noqa: F401  (the loopback S3 server fixture)

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

PHOTOS = {"cactus_rgba": "threestudio/cactus_rgba.png", "ghost_rgba": "dreamgaussian/ghost_rgba.png"}
"""Run in this order (sorted file names)."""
ARGS = ["--preset", "smoke", "--device", "cpu"]
CHAIN = ["stage.segment", "store.published", "stage.reconstruct", "publish.staged", "stage.multiview",
         "optimize.midway", "stage.refine", "export.midway", "stage.depth"]
"""Kill points in the order a run reaches them: each rerun gets past the previous one. The first eight land in
cactus_rgba, ``stage.depth`` in ghost_rgba (cactus_rgba then done)."""
S3_CHAIN = ["store.uploading", "optimize.midway", "export.midway"]
WALL_CLOCK_METRICS = ("timings", "optimize_iterations_per_second", "export_seconds")
ASSETS = [*STAGE_NAMES, "quality_metrics"]


def run_cli(inbox: Path, out: Path, tmp: Path, point: str | None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    env.pop(ENV, None)
    if point:
        env[ENV] = point
    return subprocess.run([sys.executable, "-m", "glimpse3d_cli.main", "run", str(inbox), "--out", str(out),
                           *ARGS, *extra], env=env, capture_output=True, text=True, timeout=600)


def comparable(folder: Path) -> dict[str, bytes]:
    """Every result file of ``folder``; metrics.json without its wall-clock entries."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "metrics.json":
            metrics = {k: v for k, v in json.loads(data).items() if k not in WALL_CLOCK_METRICS}
            data = json.dumps(metrics, sort_keys=True).encode()
        files[path.relative_to(folder).as_posix()] = data
    return files


def leftovers(*roots: Path) -> list[str]:
    """Staging folders, temporary files and private temporary folders under ``roots``."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if STAGING.match(path.name) or ATOMIC_TMP.match(path.name) or path.name.startswith("glimpse3d-"):
                found.append(str(path))
    return found


def materialisations(out: Path, keys: list[str]) -> dict[tuple[str, str], int]:
    instance = DagsterInstance.from_config(str(out / ".glimpse3d" / "dagster"))
    counts = {}
    for key in keys:
        for asset in ASSETS:
            partition = key if asset in IMAGE_LEVEL_ASSETS else f"{key}|default"
            counts[asset, partition] = len(instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=10).records)
    return counts


@pytest.fixture(scope="module")
def inbox(tmp_path_factory, shared_data) -> Path:
    folder = tmp_path_factory.mktemp("inbox")
    for key, rel in PHOTOS.items():
        (folder / f"{key}.png").write_bytes((shared_data / "inputs" / rel).read_bytes())
    return folder


@pytest.fixture(scope="module")
def reference(inbox, tmp_path_factory) -> Path:
    """An uninterrupted run of the same command (in this process: no kill needed)."""
    out = tmp_path_factory.mktemp("reference")
    result = glimpse3d("run", inbox, "--out", out, *ARGS)
    assert result.exit_code == 0, result.output
    return out


def kill_chain(inbox: Path, out: Path, tmp: Path, chain: list[str], *extra: str) -> str:
    """Kill ``glimpse3d run`` at each point of ``chain`` in turn, then let it finish; returns the last output."""
    for i, point in enumerate(chain):
        result = run_cli(inbox, out, tmp, point, *extra)
        assert result.returncode == -signal.SIGKILL, f"not killed at {point}: {result.stderr[-3000:]}"
        if i:  # the previous run died unfinished: this one marked it failed and freed its slots
            assert "marked 1 interrupted run(s) failed and freed their pool slots" in result.stderr, result.stderr
    final = run_cli(inbox, out, tmp, None, *extra)
    assert final.returncode == 0, final.stderr
    assert "marked 1 interrupted run(s) failed" in final.stderr
    return final.stderr


def test_chain_points_exist():
    assert set(CHAIN) | set(S3_CHAIN) <= set(POINTS) and len(set(CHAIN)) >= 8


def test_killed_at_every_point_resumes_to_identical_results(inbox, reference, tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    log = kill_chain(inbox, out, tmp, CHAIN)
    assert "[cactus_rgba] up to date (same photo, settings and code): skipped" in log
    assert "[cactus_rgba/default] up to date" in log and "[ghost_rgba] resuming at depth" in log
    for key in PHOTOS:
        assert comparable(out / key) == comparable(reference / key), key
    for (asset, partition), count in materialisations(out, list(PHOTOS)).items():
        assert count == 1, f"{asset} {partition} materialised {count} times"
    assert leftovers(out, tmp) == []
    # the stored values of every stage too (quality_metrics and exports carry the wall-clock timings)
    stored, expected = (comparable(o / ".glimpse3d" / "storage") for o in (out, reference))
    timed = ("quality_metrics/", "exports/")
    assert {k: v for k, v in stored.items() if not k.startswith(timed)} == \
        {k: v for k, v in expected.items() if not k.startswith(timed)}

    again = glimpse3d("run", inbox, "--out", out, *ARGS)  # all up to date: nothing runs or is materialised again
    assert again.exit_code == 0 and again.output.count("up to date") == 4, again.output
    assert set(materialisations(out, list(PHOTOS)).values()) == {1}
    forced = glimpse3d("run", inbox, "--out", out, *ARGS, "--force")
    assert forced.exit_code == 0 and "up to date" not in forced.output
    assert set(materialisations(out, list(PHOTOS)).values()) == {2}


def test_killed_with_storage_on_s3_resumes_to_identical_results(inbox, reference, moto_s3, tmp_path):  # noqa: F811
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    one = tmp_path / "inbox"
    one.mkdir()
    (one / "cactus_rgba.png").write_bytes((inbox / "cactus_rgba.png").read_bytes())
    kill_chain(one, out, tmp, S3_CHAIN, "--storage", f"s3://{BUCKET}/faults", "--s3-endpoint", moto_s3)
    assert comparable(out / "cactus_rgba") == comparable(reference / "cactus_rgba")
    assert set(materialisations(out, ["cactus_rgba"]).values()) == {1}
    assert leftovers(out, tmp) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 16 KiB tmpfs (too small for the exports of even the smoke preset)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_during_export_fails_that_image_cleanly(reference, full_disk):
    results, storage = reference / "cactus_rgba", reference / ".glimpse3d" / "storage"
    before, stored = comparable(results), comparable(storage)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(full_disk)}  # export writes its files there
    env.pop(ENV, None)
    result = subprocess.run([sys.executable, "-m", "glimpse3d_cli.main", "rerun", "exports", "--images",
                             "cactus_rgba", "--out", str(reference)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 1, result.stderr
    assert "FAILED cactus_rgba: export failed for image 'cactus_rgba': the disk is full (No space left on " \
           "device" in result.stderr, result.stderr
    assert list(full_disk.iterdir()) == []  # no partial file
    assert comparable(results) == before and comparable(storage) == stored  # the earlier result stands, whole
    assert leftovers(reference) == []
