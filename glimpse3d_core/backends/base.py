"""Backends: one object per way of running a stage, one registry, one selection per run.

A :class:`Backend` has a name, the stage it serves, a settings model (:class:`BackendSettings`: frozen,
``extra="forbid"``, discriminated by its ``name``), the model-registry ids it needs, ``build(settings, context)``
returning the callable the stage runs, and :meth:`Backend.verify`. :func:`register` puts it in the one registry;
:func:`backend_field` turns a stage's registered backends into the stage config's ``backend`` field: a
discriminated union of their settings plus ``auto``, whose ``model`` (tried when its weights are present) and
``fallback`` (the weight-free backend) hold the settings each would run with.

Selection (:func:`select`, :func:`select_all`) turns ``auto`` into a concrete backend once per run, before any
work; a named model backend without weights raises :class:`MissingWeightsError` naming the download command.
The selected settings are then built with the run's :class:`RunContext` (device, dtype, seed, model store) and
handed to the stage. Adding a backend: docs/backends.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from glimpse3d_core.errors import ConfigError
from glimpse3d_core.models.errors import MissingWeightsError
from glimpse3d_core.models.loading import check_files, inference_dtype
from glimpse3d_core.models.store import ModelStore, Status

log = logging.getLogger(__name__)

AUTO = "auto"


class BackendSettings(BaseModel):
    """Settings of one backend; subclasses narrow ``name`` to a ``Literal`` (the union's discriminator)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str


@dataclass(frozen=True)
class RunContext:
    """What every backend of a run shares, resolved once: the torch device (every model and tensor of the run goes
    there), the model backends' inference dtype (``dtype_name``: a key of
    :data:`~glimpse3d_core.models.loading.DTYPES`, or ``auto``: fp16 on CUDA, fp32 on CPU), the seed and the model
    store."""

    device: torch.device
    seed: int = 0
    store: ModelStore = field(default_factory=ModelStore)
    dtype_name: str = AUTO

    @property
    def dtype(self) -> torch.dtype:
        return inference_dtype(self.device, self.dtype_name)

    @classmethod
    def resolve(cls, device: str | torch.device = AUTO, seed: int = 0, store: ModelStore | None = None,
                dtype: str = AUTO) -> RunContext:
        """``device``: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'; ``dtype``: 'auto',
        'float16', 'bfloat16' or 'float32'."""
        if str(device) == AUTO:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} was asked for but CUDA is not available")
        return cls(device=device, seed=seed, store=store or ModelStore(), dtype_name=dtype)


@dataclass(frozen=True)
class Backend:
    """One way of running a stage. ``build(settings, context)`` returns the callable the stage calls (its signature
    is the stage's: see each stage module); ``models(settings)`` lists the registry ids it needs (none for a
    weight-free backend); ``gpu_gib``: the GPU memory one step with it needs, in GiB, where that is more than a
    GPU lease slot holds (:mod:`glimpse3d_core.gpu_lease`; 0: one slot)."""

    name: str
    stage: str
    settings: type[BackendSettings]
    build: Callable[[Any, RunContext], Callable[..., Any]]
    models: Callable[[Any], tuple[str, ...]] = lambda settings: ()
    description: str = ""
    gpu_gib: float = 0.0

    @property
    def weight_free(self) -> bool:
        return not self.models(self.settings())

    def verify(self, settings: BackendSettings, context: RunContext) -> list[str]:
        """Report lines: the weights are present and intact (checksums, readable files), then the backend builds
        (a strict load of its models) on ``context``'s device. Raises a ModelError on the first failure."""
        lines = []
        for status in context.store.require(*self.models(settings)):
            lines += check_files(status)
        self.build(settings, context)
        lines.append(f"{self.stage}/{self.name}: built on {context.device}")
        return lines


REGISTRY: dict[str, dict[str, Backend]] = {}
"""stage -> backend name -> backend, in registration order (the first model backend is what ``auto`` tries)."""


def register(backend: Backend) -> Backend:
    """Add ``backend`` to the registry (names are unique per stage)."""
    stage = REGISTRY.setdefault(backend.stage, {})
    if backend.name in stage or backend.name == AUTO:
        raise ValueError(f"{backend.stage}: backend name {backend.name!r} is taken")
    stage[backend.name] = backend
    return backend


def get_backend(stage: str, name: str) -> Backend:
    try:
        return REGISTRY[stage][name]
    except KeyError:
        names = ", ".join([AUTO, *REGISTRY.get(stage, {})])
        raise ConfigError(f"unknown {stage} backend {name!r}; choose one of {names}") from None


def _union(classes: list[type[BackendSettings]]) -> Any:
    return classes[0] if len(classes) == 1 else Annotated[Union[tuple(classes)], Field(discriminator="name")]  # noqa: UP007


def _by_name(value: Any) -> Any:
    """A bare backend name stands for that backend with its default settings."""
    return {"name": value} if isinstance(value, str) else value


def backend_field(stage: str, fallback: str) -> tuple[Any, BackendSettings]:
    """(annotation, default) of a stage config's ``backend`` field, from the stage's registered backends.

    The default is ``auto``: its ``model`` is the first registered model backend (with its defaults) and its
    ``fallback`` the weight-free backend named ``fallback``. A stage without model backends defaults to
    ``fallback``."""
    backends = list(REGISTRY[stage].values())
    default = get_backend(stage, fallback)
    if not default.weight_free:
        raise ValueError(f"{stage}: the fallback backend {fallback!r} needs model weights")
    with_models = [b for b in backends if not b.weight_free]
    members = [b.settings for b in backends]
    if not with_models:
        return Annotated[_union(members), BeforeValidator(_by_name)], default.settings()
    auto = create_model(
        f"{stage.capitalize()}Auto", __base__=BackendSettings,
        __doc__=f"'auto' for {stage}: ``model`` when its weights are present, else ``fallback`` (weight-free).",
        name=(Literal["auto"], AUTO),
        model=(_union([b.settings for b in with_models]), with_models[0].settings()),
        fallback=(_union([b.settings for b in backends if b.weight_free]), default.settings()),
    )
    return Annotated[_union([auto, *members]), BeforeValidator(_by_name)], auto()


@dataclass(frozen=True)
class Selection:
    """The backend a stage runs, with the settings it runs with, and why it was chosen."""

    stage: str
    settings: BackendSettings
    reason: str

    @property
    def backend(self) -> Backend:
        return get_backend(self.stage, self.settings.name)

    @property
    def models(self) -> tuple[str, ...]:
        return self.backend.models(self.settings)

    def build(self, context: RunContext) -> Callable[..., Any]:
        return self.backend.build(self.settings, context)


def select(stage: str, settings: BackendSettings, store: ModelStore) -> Selection:
    """Resolve ``settings`` (a stage config's ``backend``): ``auto`` takes its ``model`` when all its weights are
    present, else its ``fallback`` (a partly downloaded model counts as absent; a file of the wrong size is an
    error); a named model backend without weights raises MissingWeightsError."""
    if settings.name != AUTO:
        backend = get_backend(stage, settings.name)
        store.require(*backend.models(settings))
        return Selection(stage, settings, "requested")
    model_settings = settings.model
    ids = get_backend(stage, model_settings.name).models(model_settings)
    statuses = [store.status(i) for i in ids]
    if any(s.status is Status.WRONG_SIZE for s in statuses):
        store.require(*ids)  # a broken download is an error, not an absent model
    missing = [s.spec.id for s in statuses if not s.present]
    if not missing:
        return Selection(stage, model_settings, "auto: weights present")
    return Selection(stage, settings.fallback, f"auto: weights absent ({', '.join(missing)})")


def select_all(stage_configs: dict[str, Any], store: ModelStore) -> dict[str, Selection]:
    """:func:`select` for every ``{stage: stage config}`` whose config has a ``backend``, before any work; one
    MissingWeightsError names every missing model of every stage that asked for a model backend."""
    selections: dict[str, Selection] = {}
    missing: list[str] = []
    details: list[str] = []
    for stage, config in stage_configs.items():
        try:
            selections[stage] = choice = select(stage, config.backend, store)
            log.info("%s: backend %s (%s)", stage, choice.settings.name, choice.reason)
        except MissingWeightsError as exc:
            missing += [i for i in exc.model_ids if i not in missing]
            details.append(f"  stage {stage} asks for backend {config.backend.name!r}")
    if missing:
        raise MissingWeightsError(missing, details)
    return selections


def build_stage_backend(stage: str, config: Any, context: RunContext | None = None) -> Callable[..., Any]:
    """Select and build ``config.backend`` for a stage called on its own (library use, tests), on ``context``
    (default: CPU). A run selects once for all stages instead (:mod:`glimpse3d_core.chain`)."""
    context = context or RunContext.resolve("cpu")
    return select(stage, config.backend, context.store).build(context)
