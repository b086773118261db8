"""Backend selection for every stage with a model backend, decided before any work starts.

Rules (DESIGN.md "Stages and backends"): ``auto`` takes the stage's model backend when all its weights are on
this machine and the weight-free backend otherwise (absent or partly downloaded), and logs which; a file of the
wrong size is an error even under ``auto``; naming a model backend whose weights are
missing raises :class:`~glimpse3d_core.models.errors.MissingWeightsError` naming the download command.
:func:`check_backends_available` resolves every stage of a pipeline configuration at once, so a run fails with
one message listing every missing model before the first stage runs; the returned selections are what the
pipeline records (log, metadata, MLflow params).

Stage configs are read by attribute (``backend``, and the nested backend settings ``rembg``, ``dpt``, ``sdxl``),
so this module does not import the stage modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glimpse3d_core.models.errors import MissingWeightsError
from glimpse3d_core.models.registry import ENHANCE_MODELS
from glimpse3d_core.models.store import ModelStore, Status

log = logging.getLogger(__name__)

AUTO = "auto"
WEIGHT_FREE: dict[str, str] = {"segment": "matting", "depth": "inflation", "reconstruct": "carving",
                               "multiview": "initial_renders", "enhance": "identity"}
"""The weight-free backend ``auto`` falls back to, per stage."""


def _segment_models(config: Any) -> tuple[str, ...]:
    return () if config.rembg.onnx_path else (config.rembg.model,)


def _enhance_models(config: Any) -> tuple[str, ...]:
    return (*ENHANCE_MODELS, *((config.sdxl.controlnet,) if config.sdxl.controlnet else ()))


MODEL_BACKENDS: dict[str, dict[str, Callable[[Any], tuple[str, ...]]]] = {
    "segment": {"rembg": _segment_models},
    "depth": {"dpt": lambda config: (config.dpt.model,)},
    "reconstruct": {"triposr": lambda config: ("triposr",)},
    "multiview": {"syncdreamer": lambda config: ("syncdreamer",)},
    "enhance": {"sdxl-lightning": _enhance_models},
}
"""Per stage: model backend name -> the registry ids it needs, given the stage config."""

AUTO_MODEL_BACKEND: dict[str, str] = {"segment": "rembg", "depth": "dpt", "reconstruct": "triposr",
                                       "multiview": "syncdreamer", "enhance": "sdxl-lightning"}
"""The model backend ``auto`` tries, per stage (each stage factory builds it under ``auto``)."""


@dataclass(frozen=True)
class Selection:
    """The backend a stage will run, the models it needs, and why it was chosen."""

    stage: str
    backend: str
    models: tuple[str, ...]
    reason: str

    @property
    def uses_model(self) -> bool:
        return self.backend in MODEL_BACKENDS.get(self.stage, {})


def _check_custom_file(stage: str, config: Any) -> None:
    rembg = getattr(config, "rembg", None)
    path = rembg.onnx_path if rembg is not None else None
    if path and not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"{stage}: custom model file {path} does not exist")


def select_backend(stage: str, config: Any, store: ModelStore | None = None) -> Selection:
    """Resolve ``config.backend`` for ``stage`` (see the module docstring); raises MissingWeightsError for a
    named model backend whose weights are absent."""
    store = store or ModelStore()
    requested = config.backend
    models = MODEL_BACKENDS.get(stage, {})
    if requested == AUTO:
        name = AUTO_MODEL_BACKEND.get(stage)
        if name is None:
            return Selection(stage, WEIGHT_FREE[stage], (), "auto: no model backend is chosen automatically here")
        ids = models[name](config)
        statuses = [store.status(i) for i in ids]
        if any(s.status is Status.WRONG_SIZE for s in statuses):
            store.require(*ids)  # a broken download is an error, not an absent model
        if all(s.present for s in statuses):
            _check_custom_file(stage, config)
            choice = Selection(stage, name, ids, "auto: weights present")
        else:
            missing = [s.spec.id for s in statuses if not s.present]
            choice = Selection(stage, WEIGHT_FREE[stage], (), f"auto: weights absent ({', '.join(missing)})")
        log.info("%s: backend %s (%s)", stage, choice.backend, choice.reason)
        return choice
    if requested in models:
        ids = models[requested](config)
        store.require(*ids)
        _check_custom_file(stage, config)
        return Selection(stage, requested, ids, "requested; weights present")
    return Selection(stage, requested, (), "requested")


def check_backends_available(config: Any, store: ModelStore | None = None) -> dict[str, Selection]:
    """Resolve every stage of a pipeline configuration (attributes named as the stages) before any work starts.

    Raises one MissingWeightsError naming every missing model of every stage that asked for a model backend.
    """
    store = store or ModelStore()
    selections: dict[str, Selection] = {}
    missing: list[str] = []
    details: list[str] = []
    for stage in MODEL_BACKENDS:
        stage_config = getattr(config, stage, None)
        if stage_config is None:
            continue
        try:
            selections[stage] = select_backend(stage, stage_config, store)
        except MissingWeightsError as exc:
            missing += [i for i in exc.model_ids if i not in missing]
            details.append(f"  stage {stage} asks for backend {stage_config.backend!r}")
    if missing:
        raise MissingWeightsError(missing, details)
    return selections
