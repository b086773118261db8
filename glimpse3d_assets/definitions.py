"""The Dagster definitions (``dagster dev`` loads them through workspace.yaml).

Resources are configured from the environment, so the same code serves a laptop, a Celery cluster or
Kubernetes:

* ``GLIMPSE3D_STORAGE``: storage root, a folder or s3://bucket/prefix (default ``$DAGSTER_HOME/storage``,
  without DAGSTER_HOME ``./glimpse3d_data/storage``);
* ``GLIMPSE3D_S3_ENDPOINT``: S3-compatible endpoint URL (MinIO, moto; default AWS);
* ``GLIMPSE3D_INBOX``: folder or s3:// URL the inbox sensor watches (default ``<home>/inbox`` for local storage);
* ``GLIMPSE3D_VARIANTS``: comma-separated variants the sensors run for each new image (default ``default``);
* ``GLIMPSE3D_MLFLOW_URI``: MLflow tracking URI (default ``sqlite:///<home>/mlflow.db``);
* ``GLIMPSE3D_PRESET``, ``GLIMPSE3D_DEVICE``, ``GLIMPSE3D_INPUT_CAMERA``: fast|quality, auto|cpu|cuda,
  canonical|syncdreamer16;
* ``GLIMPSE3D_EXECUTOR`` (+ broker/Kubernetes settings): see :mod:`glimpse3d_assets.executors`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, JobDefinition

from glimpse3d_assets.assets.image_stages import IMAGE_ASSETS
from glimpse3d_assets.assets.variant_stages import VARIANT_ASSETS
from glimpse3d_assets.executors import executor_from_env
from glimpse3d_assets.io_manager import GlimpseIOManager
from glimpse3d_assets.jobs import image_job, variant_job
from glimpse3d_assets.resources import Inbox, MlflowTracker, PipelineSettings
from glimpse3d_assets.sensors import inbox_sensor, variants_sensor
from glimpse3d_assets.slot_wait import install as install_slot_wait

install_slot_wait()  # a step waiting for a pool slot sleeps and reports every 30 s (a Dagster 1.13 fix)


def default_home() -> Path:
    """Where local state lives when nothing is configured: $DAGSTER_HOME, else ./glimpse3d_data."""
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / "glimpse3d_data").resolve()


def default_mlflow_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def build_resources(
    storage: str | None = None,
    *,
    endpoint_url: str | None = None,
    inbox: str | None = None,
    variants: list[str] | None = None,
    mlflow_uri: str | None = None,
    settings: PipelineSettings | None = None,
) -> dict:
    """The resources by key: arguments first, then the environment (see the module docstring), then defaults."""
    env = os.environ.get
    home = default_home()
    storage = storage or env("GLIMPSE3D_STORAGE") or str(home / "storage")
    endpoint_url = endpoint_url or env("GLIMPSE3D_S3_ENDPOINT") or None
    inbox = inbox or env("GLIMPSE3D_INBOX") or (str(home / "inbox") if "://" not in storage else "")
    variants = variants or [v for v in env("GLIMPSE3D_VARIANTS", "default").split(",") if v]
    settings = settings or PipelineSettings(
        preset=env("GLIMPSE3D_PRESET", "fast"), device=env("GLIMPSE3D_DEVICE", "auto"),
        input_camera=env("GLIMPSE3D_INPUT_CAMERA", "canonical"),
    )
    return {
        "io_manager": GlimpseIOManager(root=storage, endpoint_url=endpoint_url),
        "inbox": Inbox(url=inbox, endpoint_url=endpoint_url, variants=variants),
        "mlflow": MlflowTracker(tracking_uri=mlflow_uri or env("GLIMPSE3D_MLFLOW_URI") or default_mlflow_uri(home)),
        "settings": settings,
    }


def build_definitions(resources: dict | None = None, executor=None) -> Definitions:
    return Definitions(
        assets=[*IMAGE_ASSETS, *VARIANT_ASSETS],
        jobs=[image_job, variant_job],
        sensors=[inbox_sensor, variants_sensor],
        resources=resources or build_resources(),
        executor=executor or executor_from_env(),
    )


def definitions_from_env() -> Definitions:
    """``build_definitions()`` from the current environment, so every process rebuilds the definitions from its
    own GLIMPSE3D_* settings instead of a module-level copy made earlier."""
    return build_definitions()


def job_from_env(name: str) -> JobDefinition:
    """Job ``name`` of :func:`definitions_from_env`: the target Celery/Kubernetes runs point at
    (``dagster.build_reconstructable_job(__name__, "job_from_env", (name,))``)."""
    return definitions_from_env().resolve_job_def(name)


defs = build_definitions()
