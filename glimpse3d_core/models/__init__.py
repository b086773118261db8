"""Model weights: the registry (:mod:`.registry`), local lookup and explicit download (:mod:`.store`), safe and
strict loading (:mod:`.loading`), errors (:mod:`.errors`); our own TripoSR and SyncDreamer in sub-packages.

Nothing is fetched at run time: a backend whose weights are absent raises
:class:`~glimpse3d_core.models.errors.MissingWeightsError` naming ``glimpse3d models download <id>``.
"""

from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError, ModelError, UnknownModelError
from glimpse3d_core.models.registry import MODELS, ModelSpec, get_spec
from glimpse3d_core.models.store import ModelStatus, ModelStore, Status

__all__ = ["MODELS", "CorruptWeightsError", "MissingWeightsError", "ModelError", "ModelSpec", "ModelStatus",
           "ModelStore", "Status", "UnknownModelError", "get_spec"]
