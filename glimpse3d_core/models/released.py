"""Keys the released checkpoints are known to leave out, per model, each with its reason.

A library model loads through the library's own ``from_pretrained``; any missing, unexpected or mis-shaped key
is an error (:func:`glimpse3d_core.models.loading.raise_on_loading_info`) except the missing keys listed here.
Every entry is a weight the architecture defines but never uses in its forward pass, so its random
initialisation cannot change a result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_DPT_FIRST_FUSION_RESIDUAL = (
    r"neck\.fusion_stage\.layers\.0\.residual_layer1\..+",
    "unused: transformers' DPT defines residual_layer1 in every fusion layer, but the first one is called without "
    "a residual; the released Intel DPT checkpoints omit it (huggingface/transformers issue #28292)",
)

ALLOWED_MISSING: dict[str, tuple[tuple[str, str], ...]] = {
    "dpt-large": (_DPT_FIRST_FUSION_RESIDUAL,),
    "dpt-hybrid-midas": (_DPT_FIRST_FUSION_RESIDUAL,),
}
"""model id -> ((full-match regular expression of a key, reason), ...)."""


def split_missing(model_id: str, missing: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """(missing keys not allowed for ``model_id``, {allowed missing key: its reason}), both sorted."""
    rules = [(re.compile(pattern), reason) for pattern, reason in ALLOWED_MISSING.get(model_id, ())]
    unexplained, allowed = [], {}
    for key in sorted(missing):
        reason = next((r for pattern, r in rules if pattern.fullmatch(key)), None)
        if reason is None:
            unexplained.append(key)
        else:
            allowed[key] = reason
    return unexplained, allowed
