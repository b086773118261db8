"""Keys the released checkpoints are known to leave out, or to hold beyond the architecture, per model, each
with its reason.

A library model loads through the library's own ``from_pretrained``; any missing, unexpected or mis-shaped key
is an error (:func:`glimpse3d_core.models.loading.raise_on_loading_info`) except the missing keys listed in
:data:`ALLOWED_MISSING`. Every entry there is a weight the architecture defines but never uses in its forward
pass, so its random initialisation cannot change a result. :data:`ALLOWED_EXTRA` lists keys a released file may
hold that are no weights of today's architecture (the library itself skips them when loading). Layout comparisons
(:mod:`glimpse3d_core.models.layout`) take a key matching either list as optional on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_DPT_FIRST_FUSION_RESIDUAL = (
    r"neck\.fusion_stage\.layers\.0\.residual_layer1\..+",
    "unused: transformers' DPT defines residual_layer1 in every fusion layer, but the first one is called without "
    "a residual; the released Intel/dpt-large checkpoint omits it (huggingface/transformers issue #28292). "
    "Intel/dpt-hybrid-midas, converted after transformers' DPT-hybrid support, appears to hold it (its listed "
    "size fits only with these weights); a copy without it loads too",
)

ALLOWED_MISSING: dict[str, tuple[tuple[str, str], ...]] = {
    "dpt-large": (_DPT_FIRST_FUSION_RESIDUAL,),
    "dpt-hybrid-midas": (_DPT_FIRST_FUSION_RESIDUAL,),
}
"""model id -> ((full-match regular expression of a key, reason), ...)."""

_CLIP_POSITION_IDS = (
    r"(text_model|vision_model)\.embeddings\.position_ids",
    "not a weight: a buffer of position indices that older transformers versions saved with the weights; "
    "checkpoints converted then still hold it (openai/clip-vit-base-patch32 does: huggingface/transformers pull "
    "request #45385), and transformers skips it when loading",
)

ALLOWED_EXTRA: dict[str, tuple[tuple[str, str], ...]] = {
    "clip-vit-base-patch32": (_CLIP_POSITION_IDS,),
    "clip-vit-large-patch14": (_CLIP_POSITION_IDS,),
    "sdxl-base": (_CLIP_POSITION_IDS,),  # both text encoders
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


def optional_key(model_id: str) -> Callable[[str], bool]:
    """Whether a key may be absent from, or present in, a released file of ``model_id`` without being an error
    (:data:`ALLOWED_MISSING` and :data:`ALLOWED_EXTRA`)."""
    rules = [re.compile(p) for p, _ in (*ALLOWED_MISSING.get(model_id, ()), *ALLOWED_EXTRA.get(model_id, ()))]
    return lambda key: any(rule.fullmatch(key) for rule in rules)
