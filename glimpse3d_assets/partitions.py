"""Partitions: a dynamic set of images, times the named variants of ``glimpse3d_assets/ablations.yaml``.

Stages before ``multiview`` do not depend on the variant (variants may only change later stages; see
:mod:`glimpse3d_assets.variants`), so they are partitioned by image alone and materialised once per image; the
later ones by (image, variant), so ablations never overwrite each other. Dagster maps a (image, variant) asset
to its image-only upstream by the shared ``image`` dimension. Image keys come from
:func:`glimpse3d_core.naming.assign_keys`.
"""

from __future__ import annotations

from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from glimpse3d_assets.variants import load_variants

IMAGE_DIM = "image"
VARIANT_DIM = "variant"

images_partitions = DynamicPartitionsDefinition(name="images")
variant_partitions = StaticPartitionsDefinition(list(load_variants()))
image_variant_partitions = MultiPartitionsDefinition({IMAGE_DIM: images_partitions, VARIANT_DIM: variant_partitions})


def image_variant_key(image: str, variant: str) -> MultiPartitionKey:
    """The partition key of one (image, variant) pair."""
    return MultiPartitionKey({IMAGE_DIM: image, VARIANT_DIM: variant})
