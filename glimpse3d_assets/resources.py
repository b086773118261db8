"""MLflow tracking: one MLflow run per (image, variant) materialisation of ``quality_metrics``.

Dagster's ``dagster-mlflow`` resource opens one MLflow run per Dagster *run*; an ablation needs one per
partition, so this small resource opens its own. It talks to MLflow through an ``MlflowClient`` bound to its
tracking URI (no process-global active run, so in-process runs of several partitions never mix).

Default store: SQLite next to the Dagster storage (MLflow 3 refuses the old ``./mlruns`` file store);
``mlflow ui --backend-store-uri sqlite:///<path>`` shows it. Artifacts go to the experiment's artifact location
(a local folder beside the database unless the tracking server says otherwise).
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from collections.abc import Mapping
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from glimpse3d_assets.variants import RUN_FIELDS, build_config, get_variant
from glimpse3d_core import input_camera
from glimpse3d_core.chain import IMAGE_STAGES
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.input_camera import InputCameraSpec

MLFLOW_PARAM_LIMIT = 6000
"""MLflow's longest parameter value (characters)."""
MLFLOW_BATCH = 100
"""Params/metrics per log_batch call (MLflow accepts at most 100 params per batch)."""
PACKAGE = "glimpse3d"
SQLITE_PREFIX = "sqlite:///"
REPO_ROOT = Path(__file__).resolve().parents[1]


@cache
def code_version() -> dict[str, str]:
    """The package version and, where the code is a git checkout, its commit (``+dirty`` with local changes)."""
    version = {"code.package_version": importlib_metadata.version(PACKAGE)}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        version["code.git_sha"] = sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        version["code.git_sha"] = "unknown"
    return version


class MlflowTracker(ConfigurableResource):
    """Opens one MLflow run per (image, variant) and logs params, metrics, tags and artifacts to it. MLflow is
    imported on first use: only the step that logs pays for it (about a fifth of a step process's start-up)."""

    tracking_uri: str = Field(description="MLflow tracking URI, e.g. sqlite:////abs/path/mlflow.db or http://host:5000")
    experiment: str = Field("glimpse3d", description="MLflow experiment name")
    artifact_location: str | None = Field(
        None, description="where a new experiment keeps artifacts (default: mlartifacts/ beside a sqlite store)")

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        client = self._client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = self.artifact_location
        if location is None and self.tracking_uri.startswith(SQLITE_PREFIX):
            location = (Path(self.tracking_uri[len(SQLITE_PREFIX) :]).parent / "mlartifacts").as_uri()
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by a concurrent step
            return client.get_experiment_by_name(self.experiment).experiment_id

    def log_run(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, object],
        metrics: Mapping[str, float],
        artifacts: list[Path],
    ) -> str:
        """Create a finished MLflow run with everything at once; returns its run id. Non-finite metrics are left
        out (MLflow stores them, but they break averages in comparisons) and listed in tag ``nonfinite_metrics``."""
        from mlflow.entities import Metric, Param, RunTag

        client = self._client()
        run = client.create_run(self.experiment_id(), run_name=run_name, tags=dict(tags))
        run_id = run.info.run_id
        try:
            all_params = [Param(k, str(v)[:MLFLOW_PARAM_LIMIT]) for k, v in {**code_version(), **params}.items()]
            finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
            skipped = sorted(set(metrics) - finite.keys())
            stamp = run.info.start_time
            metric_rows = [Metric(k, v, stamp, 0) for k, v in finite.items()]
            for i in range(0, max(len(all_params), len(metric_rows)), MLFLOW_BATCH):
                client.log_batch(run_id, metrics=metric_rows[i : i + MLFLOW_BATCH],
                                 params=all_params[i : i + MLFLOW_BATCH])
            if skipped:
                client.log_batch(run_id, tags=[RunTag("nonfinite_metrics", ",".join(skipped))])
            for path in artifacts:
                client.log_artifact(run_id, str(path))
        except Exception:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        return run_id


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class Inbox(ConfigurableResource):
    """A folder of input photos at any fsspec URL (local path or ``s3://bucket/prefix``), read through fsspec.

    Files are identified by their path relative to the inbox (POSIX separators) and fingerprinted by content:
    SHA-256 of the bytes for local files, the object's ETag (its MD5 for ordinary uploads) on an object store.
    """

    url: str = Field("", description="inbox folder: a local path or an fsspec URL such as s3://bucket/inbox")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); None = AWS")
    variants: list[str] = Field(["default"], description="variants the sensor runs for every new image")

    def _root(self):
        from glimpse3d_assets.io_manager import storage_path

        return storage_path(self.url, self.endpoint_url)

    def uri(self, name: str) -> str:
        """The URL of the file ``name`` (relative to the inbox)."""
        return str(self._root() / name)

    def list_images(self) -> dict[str, str]:
        """{relative name: content fingerprint} for every image file (by suffix) under the inbox, recursively."""
        root = self._root()
        fs, base = root.fs, root.path.rstrip("/")
        fs.invalidate_cache(base)  # other writers (uploads) change an object store behind s3fs's listing cache
        if not fs.exists(base):
            return {}
        found: dict[str, str] = {}
        for path, info in fs.find(base, detail=True).items():
            if not path.lower().endswith(IMAGE_SUFFIXES) or info.get("type") != "file":
                continue
            name = path[len(base) :].lstrip("/")
            if any(part.startswith(".") for part in name.split("/")):
                continue  # hidden files and half-uploaded temporaries
            etag = str(info.get("ETag", "")).strip('"')
            found[name] = f"etag:{etag}" if etag else f"sha256:{hashlib.sha256(fs.cat_file(path)).hexdigest()}"
        return found

    def read_uri(self, uri: str) -> bytes:
        """The bytes at ``uri`` (any local path or fsspec URL; s3:// URLs use this inbox's endpoint)."""
        from glimpse3d_assets.io_manager import storage_path

        path = storage_path(uri, self.endpoint_url)
        return path.fs.cat_file(path.path)


class PipelineSettings(ConfigurableResource):
    """The run's pipeline configuration: preset, input camera, device, seed and run-level overrides.

    Image-level stages use exactly this; variant-level stages use the variant's preset (if it names one) and its
    overrides on top (see :mod:`glimpse3d_assets.variants`).
    """

    preset: str = Field("fast", description="pipeline preset: fast | quality | smoke (glimpse3d_core.config)")
    device: str = Field("auto", description="auto | cpu | cuda (auto: cuda when available)")
    input_camera: str = Field("canonical", description="canonical | syncdreamer16 | explicit")
    elevation_deg: float | None = Field(None, description="explicit input camera elevation (deg)")
    distance: float | None = Field(None, description="explicit input camera distance (world units)")
    focal_px: float | None = Field(None, description="explicit input camera focal length (px at 256 px)")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="run-level stage -> {field: value} overrides, for every stage")
    seed: int = Field(0, description="random seed of the stochastic stages")

    def camera_spec(self) -> InputCameraSpec:
        if self.input_camera == "explicit":
            if None in (self.elevation_deg, self.distance, self.focal_px):
                raise ValueError("an explicit input camera needs elevation_deg, distance and focal_px")
            return input_camera.explicit(self.elevation_deg, self.distance, self.focal_px)
        return input_camera.preset(self.input_camera)

    def image_config(self) -> PipelineConfig:
        """Configuration of the image-level stages (and the run-wide fields: device, seed, input camera)."""
        base = {"device": self.device, "seed": self.seed, "input_camera": self.camera_spec()}
        return build_config(self.preset, base, self.overrides)

    def variant_config(self, variant: str) -> PipelineConfig:
        """Full configuration of one variant: the image-level stages and run-wide fields as :meth:`image_config`,
        the later stages from the variant's preset with the run-level, then the variant's overrides."""
        spec = get_variant(variant)
        image = self.image_config()
        merged = build_config(spec.preset or self.preset, self.overrides, spec.overrides)
        return merged.model_copy(update={name: getattr(image, name) for name in (*IMAGE_STAGES, *RUN_FIELDS)})
