"""``glimpse3d run`` and ``glimpse3d rerun``: the asset graph, materialised in-process on a persistent local Dagster
instance (``dagster dev`` with the same DAGSTER_HOME shows these runs afterwards).

Layout under ``--out DIR``: ``DIR/<image key>/`` holds the final files (model.ply, mesh.glb, mesh.obj,
turntable.mp4, preview.png, metrics.json; ``DIR/<key>/<variant>/`` when several variants run), and
``DIR/.glimpse3d/`` the state: ``dagster/`` (DAGSTER_HOME: runs, events, dagster.yaml; ``--dagster-home`` puts
it elsewhere), ``storage/``
(every stage's files, unless ``--storage`` puts them elsewhere, e.g. on S3), ``mlflow.db`` (+ ``mlartifacts/``),
``images.json`` (path -> key) and ``settings.json`` (the settings and storage ``rerun`` reuses).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from glimpse3d_core.chain import Chain
from glimpse3d_core.config import ConfigError, parse_assignments
from glimpse3d_core.io.atomic import atomic_write_bytes
from glimpse3d_core.models.errors import ModelError
from glimpse3d_core.naming import assign_keys
from glimpse3d_core.viewer.gallery import ERROR_FILE

STATE_DIR = ".glimpse3d"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Workspace:
    """The state of one output directory; ``storage_url`` (a folder or s3:// URL, default ``STATE/storage``) and
    ``endpoint_url`` (S3-compatible endpoint) say where the stage files live."""

    out: Path
    storage_url: str = ""
    endpoint_url: str | None = None
    home: str = ""

    @property
    def state(self) -> Path:
        return self.out / STATE_DIR

    @property
    def dagster_home(self) -> Path:
        return Path(self.home).resolve() if self.home else self.state / "dagster"

    @property
    def storage(self) -> str:
        return self.storage_url or str(self.state / "storage")

    def storage_root(self):
        from glimpse3d_assets.io_manager import storage_path

        return storage_path(self.storage, self.endpoint_url)

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.state / 'mlflow.db'}"

    @property
    def images_file(self) -> Path:
        return self.state / "images.json"

    @property
    def settings_file(self) -> Path:
        return self.state / "settings.json"


def open_instance(ws: Workspace):
    """The persistent Dagster instance of ``ws`` (created with the packaged dagster.yaml on first use), its ``gpu``
    pool sized to the host's GPU lease slots (at least 1, so GPU-tagged stages also run on a CPU-only machine)."""
    from dagster import DagsterInstance

    from glimpse3d_assets.package_data import INSTANCE_FILE, instance_yaml
    from glimpse3d_core.gpu_lease import GpuLeaseConfig

    ws.dagster_home.mkdir(parents=True, exist_ok=True)
    target = ws.dagster_home / INSTANCE_FILE
    if not target.exists():
        atomic_write_bytes(target, instance_yaml().encode("utf-8"))
    instance = DagsterInstance.from_config(str(ws.dagster_home))  # as DAGSTER_HOME=<that folder> would
    instance.event_log_storage.set_concurrency_slots("gpu", GpuLeaseConfig.from_env().pool_size)
    return instance


STEP_MARKS = {"STEP_START": "…", "STEP_SUCCESS": "✓", "STEP_FAILURE": "✗"}


class ProgressHandler(logging.Handler):
    """Prints one line per stage start/finish/failure of Dagster's structured events, and who holds the pool
    slot a step waits for (every 30 s: :mod:`glimpse3d_assets.slot_wait`)."""

    def __init__(self, label: str, instance) -> None:
        super().__init__(logging.DEBUG)
        self.label, self.instance = label, instance

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is not None and event.event_type_value == "ENGINE_EVENT" and event.step_key:
            pool = (event.engine_event_data.metadata or {}).get("pool")
            if pool is not None:
                from glimpse3d_cli.recovery import describe_slot_wait

                typer.echo(f"  [{self.label}] {describe_slot_wait(self.instance, event.step_key, pool.value)}",
                           err=True)
        if event is None or event.event_type_value not in STEP_MARKS:
            return
        typer.echo(f"  [{self.label}] {STEP_MARKS[event.event_type_value]} {event.step_key}", err=True)


def _progress_logger(label: str, instance):
    from dagster import logger

    @logger
    def progress(_init_context):
        log = logging.getLogger(f"glimpse3d.progress.{label}")
        log.handlers = [ProgressHandler(label, instance)]
        log.setLevel(logging.DEBUG)
        log.propagate = False
        return log

    return progress


def failure_message(result) -> str:
    """The first step failure of a Dagster result, as a user reads it."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error is not None:
                error = data.error
                while error.cause is not None:  # the user code's own exception, not Dagster's wrapper
                    error = error.cause
                return f"{event.step_key}: {error.message.strip()}"
    return "the run failed (see `dagster dev` for its events)"


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Every image file named or inside a named folder (sorted, recursively); a missing path is an error."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p.resolve() for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            files.append(item.resolve())
        else:
            raise typer.BadParameter(f"{item} does not exist")
    return list(dict.fromkeys(files))


class Runner:
    """Runs the two jobs of the graph for images and variants of one workspace, reporting failures per image."""

    def __init__(self, ws: Workspace, settings, *, force: bool = False) -> None:
        from glimpse3d_assets.definitions import build_definitions, build_resources
        from glimpse3d_cli.recovery import Session

        self.ws, self.settings, self.force = ws, settings, force
        self.instance = open_instance(ws)
        local = [ws.out] + ([Path(ws.storage)] if "://" not in ws.storage else [])
        self.session = Session(ws.state, self.instance, local)  # lock OUT, reap killed runs, sweep their leftovers
        resources = build_resources(ws.storage, endpoint_url=ws.endpoint_url, mlflow_uri=ws.mlflow_uri,
                                    settings=settings, inbox="")
        self.defs = build_definitions(resources)
        self.digests: dict[str, str] = {}  # image key -> SHA-256 of its photo (what fingerprints start from)

    def _execute(self, job_name: str, partition_key, label: str, *, fingerprint: str, run_config=None,
                 selection=None) -> str | None:
        """Run a job for one partition; returns None on success or the failure message."""
        from glimpse3d_assets.runs import FINGERPRINT_TAG, owner_tags

        job = self.defs.resolve_job_def(job_name).with_logger_defs({"progress": _progress_logger(label,
                                                                                                self.instance)})
        run_config = {**(run_config or {}), "loggers": {"progress": {}}}  # replaces Dagster's console logger
        result = job.execute_in_process(run_config=run_config, instance=self.instance, partition_key=partition_key,
                                        raise_on_error=False, asset_selection=selection,
                                        tags={**owner_tags(), FINGERPRINT_TAG: fingerprint})
        return None if result.success else failure_message(result)

    def _resume(self, job_name: str, partition, label: str, fingerprint: str, *, run_config=None) -> str | None:
        """Materialise what of ``job_name`` is not up to date for ``partition`` (everything with ``--force``)."""
        from dagster import AssetKey

        from glimpse3d_assets.assets.common import IMAGE_LEVEL_ASSETS, STAGE_NAMES
        from glimpse3d_assets.jobs import IMAGE_JOB
        from glimpse3d_cli.recovery import plan

        assets = [a for a in [*STAGE_NAMES, "quality_metrics"] if (a in IMAGE_LEVEL_ASSETS) == (job_name == IMAGE_JOB)]
        todo = plan(self.instance, assets, str(partition), fingerprint, self.ws.storage_root(), self.force)
        if not todo:
            typer.echo(f"  [{label}] up to date (same photo, settings and code): skipped", err=True)
            return None
        if len(todo) < len(assets):
            typer.echo(f"  [{label}] resuming at {todo[0]} ({len(assets) - len(todo)} stage(s) already done)",
                       err=True)
        if "source_image" not in todo:
            run_config = None
        return self._execute(job_name, partition, label, fingerprint=fingerprint, run_config=run_config,
                             selection=[AssetKey(a) for a in todo])

    def image_fingerprint(self, key: str) -> str:
        """Fingerprint of the image stages: the photo's SHA-256 (of the file given to ``run``, else as recorded by
        ``source_image``), the image-level configuration and the code version."""
        from glimpse3d_assets.assets.common import latest_metadata
        from glimpse3d_assets.resources import code_version
        from glimpse3d_assets.runs import fingerprint

        if key not in self.digests:
            self.digests[key] = latest_metadata(self, "source_image", key).get("sha256", "")
        return fingerprint(self.digests[key], self.settings.image_config().model_dump(mode="json"), code_version())

    def variant_fingerprint(self, key: str, variant: str) -> str:
        from glimpse3d_assets.resources import code_version
        from glimpse3d_assets.runs import fingerprint

        return fingerprint(self.image_fingerprint(key), self.settings.variant_config(variant).model_dump(mode="json"),
                           code_version())

    def image_stages(self, key: str, *, uri: str | None = None, selection=None) -> str | None:
        from glimpse3d_assets.jobs import IMAGE_JOB
        from glimpse3d_assets.sensors import source_run_config

        config = source_run_config(uri) if uri else None
        if selection is None:
            return self._resume(IMAGE_JOB, key, key, self.image_fingerprint(key), run_config=config)
        return self._execute(IMAGE_JOB, key, key, fingerprint=self.image_fingerprint(key), run_config=config,
                             selection=selection)

    def variant_stages(self, key: str, variant: str, *, selection=None) -> str | None:
        from glimpse3d_assets.jobs import VARIANT_JOB
        from glimpse3d_assets.partitions import image_variant_key

        partition, label = image_variant_key(key, variant), f"{key}/{variant}"
        if selection is None:
            return self._resume(VARIANT_JOB, partition, label, self.variant_fingerprint(key, variant))
        return self._execute(VARIANT_JOB, partition, label, fingerprint=self.variant_fingerprint(key, variant),
                             selection=selection)

    def deliver(self, key: str, variant: str, target: Path) -> None:
        """Copy the stored exports of (key, variant) to ``target`` (replaced atomically)."""
        from glimpse3d_assets.io_manager import publish_folder, read_value

        exports = read_value(self.ws.storage_root() / "exports" / key / variant)
        publish_folder(exports.path, target)


def _settings(preset: str, device: str, input_camera: str, elevation: float | None, distance: float | None,
              focal: float | None, overrides: dict[str, dict]):
    from glimpse3d_assets.resources import PipelineSettings

    explicit = [v is not None for v in (elevation, distance, focal)]
    if any(explicit) and not all(explicit):
        raise typer.BadParameter("--elevation, --distance and --focal go together")
    camera = "explicit" if all(explicit) else input_camera
    settings = PipelineSettings(preset=preset, device=device, input_camera=camera, elevation_deg=elevation,
                                distance=distance, focal_px=focal, overrides=overrides)
    settings.image_config().context()  # a bad camera, device or setting is an error before any work
    return settings


def resolve_preset(preset: str, device: str) -> str:
    """``auto``: ``quality`` where the run gets a CUDA GPU (``--device cuda``, or ``auto`` with CUDA present), else
    ``fast``; any other name as it is."""
    if preset != "auto":
        return preset
    import torch

    return "quality" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "fast"


def _target(out: Path, key: str, variant: str, variants: list[str]) -> Path:
    return out / key if len(variants) == 1 else out / key / variant


def run(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(help="image files and/or folders of images")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out"),
    variant: Annotated[list[str], typer.Option(help="variant(s) from glimpse3d_assets/ablations.yaml")] = ["default"],  # noqa: B006
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    preset: Annotated[str, typer.Option(help="preset: auto (quality on CUDA, else fast) | fast | quality | smoke")]
    = "auto",
    input_camera: Annotated[str, typer.Option(help="canonical | syncdreamer16")] = "canonical",
    elevation: Annotated[float | None, typer.Option(help="known input camera elevation (deg)")] = None,
    distance: Annotated[float | None, typer.Option(help="known input camera distance")] = None,
    focal: Annotated[float | None, typer.Option(help="known focal length (px at 256 px)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="FIELD.PATH=VALUE configuration override, e.g. "
                                                       "optimize.iterations=50 or depth.backend=dpt (repeatable; "
                                                       "`glimpse3d config` shows every field)")]
    = [],  # noqa: B006
    storage: Annotated[str | None, typer.Option(help="stage storage: folder or s3://bucket/prefix "
                                                     "(default OUT/.glimpse3d/storage)")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3-compatible endpoint URL (env GLIMPSE3D_S3_ENDPOINT)")]
    = None,
    dagster_home: Annotated[Path | None, typer.Option(envvar="GLIMPSE3D_DAGSTER_HOME",
                                                      help="Dagster instance folder (default OUT/.glimpse3d/dagster)")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="redo every stage, even those up to date")] = False,
) -> None:
    """Photo(s) -> Gaussian splat, mesh and turntable per image, through the Dagster asset graph. Stages already
    materialised from the same photo, settings and code are skipped (an interrupted image resumes)."""
    from glimpse3d_assets.partitions import images_partitions

    try:
        settings = _settings(resolve_preset(preset, device), device, input_camera, elevation, distance, focal,
                             parse_assignments(set_))
    except ConfigError as exc:  # an unknown or invalid field: exit 2 before any work
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    for name in variant:  # a bad variant, or a named model backend without weights: an error before any work
        try:
            Chain.prepare(settings.variant_config(name))
        except (ModelError, ConfigError) as exc:
            typer.echo(f"variant {name}: {exc}", err=True)
            raise typer.Exit(code=2) from exc
    files = collect_inputs(inputs)
    if not files:
        raise typer.BadParameter("no image files found in the inputs")
    ws = Workspace(out.resolve(), storage or "", s3_endpoint or os.environ.get("GLIMPSE3D_S3_ENDPOINT"),
                   str(dagster_home or ""))
    ws.state.mkdir(parents=True, exist_ok=True)
    runner = Runner(ws, settings, force=force)  # waits while another command uses OUT
    ctx.call_on_close(runner.session.close)
    known = json.loads(ws.images_file.read_text()) if ws.images_file.exists() else {}
    keys = assign_keys([str(f) for f in files], known)
    ws.images_file.write_text(json.dumps(keys, indent=1, sort_keys=True))
    ws.settings_file.write_text(json.dumps({"settings": settings.model_dump(mode="json"), "storage": ws.storage_url,
                                            "endpoint_url": ws.endpoint_url, "home": ws.home}, indent=1))

    runner.instance.add_dynamic_partitions(images_partitions.name, sorted({keys[str(f)] for f in files}))
    failed: dict[str, str] = {}
    for f in files:
        key = keys[str(f)]
        typer.echo(f"{f.name} -> {key}", err=True)
        runner.digests[key] = hashlib.sha256(f.read_bytes()).hexdigest()
        error = runner.image_stages(key, uri=str(f))
        for name in variant if error is None else []:
            error = runner.variant_stages(key, name)
            if error is not None:
                error = f"variant {name}: {error}"
                break
            runner.deliver(key, name, _target(ws.out, key, name, variant))
        if error is None:
            (ws.out / key / ERROR_FILE).unlink(missing_ok=True)  # an earlier failure of this image is history now
            typer.echo(f"  ok: {ws.out / key}", err=True)
        else:
            failed[str(f)] = error
            typer.echo(f"  FAILED {f.name}: {error}", err=True)
            # The gallery (`glimpse3d view`) shows this instead of a card; files of an earlier success stay.
            atomic_write_bytes(ws.out / key / ERROR_FILE, json.dumps({"error": error, "input": str(f)}).encode())
    typer.echo(f"Dagster UI: DAGSTER_HOME={ws.dagster_home} GLIMPSE3D_STORAGE={ws.storage} "
               f"GLIMPSE3D_MLFLOW_URI={ws.mlflow_uri} dagster dev -m glimpse3d_assets.definitions", err=True)
    _summary(len(files), failed)


def rerun(
    ctx: typer.Context,
    stage: Annotated[str, typer.Argument(help="asset to re-materialise (with everything downstream), e.g. "
                                              "refined_gaussians")],
    images: Annotated[list[str], typer.Option("--images", help="image keys (as in OUT/<key>/)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder of an earlier `glimpse3d run`")] = Path("out"),
    variant: Annotated[list[str], typer.Option(help="variant(s) to redo (default: the ones stored for the image)")]
    = [],  # noqa: B006
) -> None:
    """Re-materialise one stage and everything downstream of it for chosen images; others are untouched."""
    from dagster import AssetKey, AssetSelection

    from glimpse3d_assets.assets.common import IMAGE_LEVEL_ASSETS, STAGE_NAMES
    from glimpse3d_assets.resources import PipelineSettings

    stages = [*STAGE_NAMES, "quality_metrics"]
    if stage not in stages:
        raise typer.BadParameter(f"unknown stage {stage!r}; choose one of {', '.join(stages)}")
    state = Workspace(out.resolve()).settings_file
    if not state.exists():
        raise typer.BadParameter(f"{out} holds no earlier `glimpse3d run` (missing {state})")
    saved = json.loads(state.read_text())
    ws = Workspace(out.resolve(), saved["storage"], saved["endpoint_url"], saved.get("home", ""))
    runner = Runner(ws, PipelineSettings.model_validate(saved["settings"]))
    ctx.call_on_close(runner.session.close)
    graph = runner.defs.resolve_asset_graph()
    downstream = AssetSelection.assets(stage).downstream().resolve(graph)
    image_sel = [k for k in downstream if k.to_user_string() in IMAGE_LEVEL_ASSETS]
    variant_sel = [k for k in downstream if k.to_user_string() not in IMAGE_LEVEL_ASSETS]
    failed: dict[str, str] = {}
    for key in images:
        variants = variant or _stored_variants(ws, key)
        error = runner.image_stages(key, selection=image_sel) if image_sel else None
        for name in variants if error is None else []:
            error = runner.variant_stages(key, name, selection=sorted(variant_sel, key=AssetKey.to_user_string))
            if error is not None:
                break
            runner.deliver(key, name, _target(ws.out, key, name, variants))
        if error is not None:
            failed[key] = error
            typer.echo(f"  FAILED {key}: {error}", err=True)
    _summary(len(images), failed)


def _stored_variants(ws: Workspace, key: str) -> list[str]:
    root = ws.storage_root() / "exports" / key
    found = sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists()) if root.exists() else []
    if not found:
        raise typer.BadParameter(f"image {key!r} has no stored results in {ws.out}")
    return found


def _summary(total: int, failed: dict[str, str]) -> None:
    typer.echo(f"{total - len(failed)} of {total} image(s) done" + (f", {len(failed)} failed" if failed else ""),
               err=True)
    if failed:
        raise typer.Exit(code=1)
