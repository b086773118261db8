"""On a CUDA host, ``--device`` decides where every model goes: the run context is the only way the device
travels (tiny models of every model backend, saved where the real weights go and selected by ``auto``)."""

from __future__ import annotations

import pytest

from glimpse3d_core.chain import Chain
from glimpse3d_core.config import PipelineConfig
from glimpse3d_core.models.registry import MODELS, get_spec
from tests.markers import CUDA_ONLY
from tests.test_backends import hf_snapshot, save_tiny_dpt, save_tiny_sdxl, tiny_spec
from tests.tiny_models import TINY_SYNCDREAMER, save_tiny_syncdreamer, save_tiny_triposr, store

__all__ = ["store"]  # the model-store fixture

pytestmark = CUDA_ONLY


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_model_goes_to_the_run_device(store, monkeypatch, device):
    real = get_spec("dpt-hybrid-midas")
    snap = hf_snapshot(store, real.repo)
    save_tiny_dpt(snap)
    monkeypatch.setitem(MODELS, real.id, tiny_spec(real, snap))
    save_tiny_triposr(store, monkeypatch)
    save_tiny_syncdreamer(store, monkeypatch)
    for model_id, spec in save_tiny_sdxl(store).items():
        monkeypatch.setitem(MODELS, model_id, spec)
    config = PipelineConfig(device=device).with_overrides(
        {"multiview": {"backend": {"name": "auto", "model": TINY_SYNCDREAMER.model_dump()}}})
    chain = Chain.prepare(config)
    assert chain.backend_names == {"segment": "matting", "depth": "dpt", "reconstruct": "triposr",
                                   "multiview": "syncdreamer", "enhance": "sdxl-lightning"}
    modules = {
        "depth": chain.backend("depth").model,
        "reconstruct": chain.backend("reconstruct").__self__.model,
        "multiview": chain.backend("multiview").model.model,
        "enhance": chain.backend("enhance").__self__.pipe.unet,
    }
    for stage, module in modules.items():
        assert {p.device.type for p in module.parameters()} == {device}, stage
    assert chain.context.device.type == device
