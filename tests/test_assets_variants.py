"""Variants (glimpse3d_assets/ablations.yaml) and the run settings that turn them into pipeline configurations."""

from __future__ import annotations

import pytest

from glimpse3d_assets.partitions import image_variant_partitions, variant_partitions
from glimpse3d_assets.resources import PipelineSettings
from glimpse3d_assets.variants import RUN_FIELDS, Variant, load_variants
from glimpse3d_core.chain import IMAGE_STAGES
from glimpse3d_core.config import parse_assignments


def test_ablations_file_defines_the_variant_dimension():
    variants = load_variants()
    assert {"default", "no_refine", "no_densify", "cpu_fast"} <= variants.keys()
    assert variant_partitions.get_partition_keys() == list(variants)
    assert image_variant_partitions.partitions_defs[0].name == "image"  # storage path <image>/<variant>


def test_variants_share_image_level_stages_and_differ_where_they_say():
    settings = PipelineSettings(preset="fast", device="cpu", overrides={"gaussians": {"num_gaussians": 900},
                                                                        "optimize": {"iterations": 7}})
    default, no_refine, fast = (settings.variant_config(v) for v in ("default", "no_refine", "cpu_fast"))
    image = settings.image_config()
    for cfg in (default, no_refine, fast):
        for name in (*IMAGE_STAGES, *RUN_FIELDS):
            assert getattr(cfg, name) == getattr(image, name), name
    assert image.gaussians.num_gaussians == 900 and default.optimize.iterations == 7
    assert default.refine.depth_consistency and not no_refine.refine.depth_consistency
    assert fast.optimize.iterations == 20  # the variant's own override wins over the run-level one
    assert default.flat_params()["refine.color_fusion"] != no_refine.flat_params()["refine.color_fusion"]


def test_bad_variants_and_settings_are_refused():
    with pytest.raises(ValueError, match="may only override"):
        Variant(overrides={"segment": {"canvas_size": 64}})
    with pytest.raises(ValueError, match="unknown variant"):
        PipelineSettings().variant_config("nope")
    with pytest.raises(ValueError, match="optimize"):
        PipelineSettings(overrides={"optimize": {"no_such_field": 1}}).image_config()
    with pytest.raises(ValueError, match="explicit input camera"):
        PipelineSettings(input_camera="explicit").camera_spec()
    assert parse_assignments(["optimize.iterations=50", "export.background=0.5", "depth.backend=dpt",
                              "depth.backend.model=dpt-large"]) == {
        "optimize": {"iterations": 50}, "export": {"background": 0.5},
        "depth": {"backend": {"name": "dpt", "model": "dpt-large"}}}
