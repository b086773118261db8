"""Jobs: the image-level stages of one image, and the variant-level stages of one (image, variant).

A Dagster run covers one partition key of one partitions definition, so one image goes through two runs:
``image_stages`` (key = image) then ``variant_stages`` (key = image|variant, once per variant). The CLI runs
them in that order; the sensors chain them (``variants_sensor``).
"""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from glimpse3d_assets.assets.image_stages import IMAGE_ASSETS
from glimpse3d_assets.assets.variant_stages import VARIANT_ASSETS

IMAGE_JOB = "image_stages"
VARIANT_JOB = "variant_stages"

image_job = define_asset_job(
    IMAGE_JOB, selection=AssetSelection.assets(*IMAGE_ASSETS),
    description="segment -> depth -> coarse mesh -> initial Gaussians for one image",
)
variant_job = define_asset_job(
    VARIANT_JOB, selection=AssetSelection.assets(*VARIANT_ASSETS),
    description="multiview -> enhance -> optimize -> refine -> exports -> metrics for one (image, variant)",
)
