"""Our TripoSR against the upstream code's own outputs (tests/golden/triposr.*, made by research/make_goldens.py
from VAST-AI-Research/TripoSR on seeded weights of a reduced config): pre-processing, image tokens, triplanes,
density and colour at fixed points, the extracted mesh, and where the result lands in our world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.spatial import cKDTree

from glimpse3d_core.models.golden import TOLERANCE, relative_error, seeded_state_dict
from glimpse3d_core.models.triposr import TripoSR, TripoSRConfig
from glimpse3d_core.models.triposr.mesh import extract_mesh
from glimpse3d_core.models.triposr.preprocess import preprocess
from glimpse3d_core.types import ObjectImage

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(str(GOLDEN / "triposr.safetensors")), json.loads((GOLDEN / "triposr.json").read_text())


@pytest.fixture(scope="module")
def model(golden) -> TripoSR:
    _, meta = golden
    config = TripoSRConfig.tiny()  # the golden's config.yaml names the DINO hub config; its ViT is the tiny one
    assert {**config.to_yaml_dict(), "image_tokenizer": meta["config"]["image_tokenizer"]} == meta["config"]
    vit = config.image_tokenizer
    assert {k: meta["vit_config"][k] for k in vit.model_dump()} == vit.model_dump()
    model = TripoSR(config).eval()
    layout = {k: tuple(v.shape) for k, v in model.checkpoint_state_dict().items()}
    assert layout == {k: tuple(v) for k, v in meta["state_dict"].items()}, "key layout differs from upstream's"
    model.load_checkpoint_state_dict(seeded_state_dict(layout, seed=meta["seed"]))
    return model


def _check(name: str, ours: torch.Tensor, reference: torch.Tensor) -> None:
    error = relative_error(ours, reference)
    print(f"triposr {name}: max abs error / reference max = {error:.2e}")
    assert error <= TOLERANCE, f"{name}: {error:.2e} > {TOLERANCE}"


def test_preprocess_equals_upstream(golden) -> None:
    tensors, meta = golden
    rgba = tensors["input_rgba"].numpy() / 255.0
    image = ObjectImage(rgba[..., :3].astype(np.float32), rgba[..., 3].astype(np.float32), "golden")
    _check("conditioning image", preprocess(image, meta["config"]["cond_image_size"]), tensors["cond_image"])


def test_network_outputs_equal_upstream(golden, model) -> None:
    tensors, _ = golden
    cond = tensors["cond_image"][None]
    _check("image tokens", model.image_tokenizer(cond)[0], tensors["image_tokens"])
    planes = model(cond)[0]
    _check("triplanes", planes, tensors["scene_codes"])
    sample = model.field().query(model.decoder, tensors["scene_codes"], tensors["query_points"])
    _check("density", sample.density, tensors["query_density"])
    _check("colour", sample.color, tensors["query_color"])


def test_mesh_equals_upstream(golden, model) -> None:
    """Same vertex count; every vertex within one marching-cubes cell of upstream's (after its own [2,1,0]
    reordering and scaling to ±radius, which is our TripoSR frame)."""
    tensors, meta = golden
    mesh = extract_mesh(model.field(), model.decoder, tensors["scene_codes"], meta["mc_resolution"],
                        meta["mc_threshold"])
    reference = tensors["mesh_vertices"].numpy()
    assert len(mesh.vertices) == len(reference)
    cell = 2 * model.config.renderer.radius / (meta["mc_resolution"] - 1)
    gap = max(cKDTree(reference).query(mesh.vertices)[0].max(), cKDTree(mesh.vertices).query(reference)[0].max())
    print(f"triposr mesh: {len(reference)} vertices, max distance to the nearest upstream vertex {gap / cell:.2e} "
          "cells")
    assert gap <= cell
