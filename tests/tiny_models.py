"""Tiny randomly initialised models of the learned backends' real architectures, saved where the model store
looks for the released weights (GLIMPSE3D_MODELS_DIR, the registry's file names), for tests that load them through
the real code path. No Dagster import, so CUDA-only tests can use it on a bare GPU machine."""

from __future__ import annotations

import pytest
import torch
import yaml

from glimpse3d_core.backends.syncdreamer_multiview import SyncDreamerSettings
from glimpse3d_core.models.loading import clear_cache
from glimpse3d_core.models.registry import MODELS, get_spec
from glimpse3d_core.models.store import ModelStore
from glimpse3d_core.models.syncdreamer import SyncDreamer, SyncDreamerConfig
from glimpse3d_core.models.triposr import TripoSR, TripoSRConfig
from tests.test_backends import tiny_spec

TINY_SYNCDREAMER = SyncDreamerSettings(steps=1, batch_view_num=16, crop_size=50, architecture="tiny")


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    """An empty model folder and HF cache; the per-process model cache is emptied before and after."""
    monkeypatch.setenv("GLIMPSE3D_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    clear_cache()
    yield ModelStore()
    clear_cache()


def install(store: ModelStore, monkeypatch, model_id: str) -> None:
    """Register the tiny files just written under ``<models dir>/<id>/`` with their exact sizes (the real
    registry sizes would rightly call them broken downloads)."""
    real = get_spec(model_id)
    monkeypatch.setitem(MODELS, model_id, tiny_spec(real, store.model_dir(real)))


def save_tiny_triposr(store: ModelStore, monkeypatch) -> None:
    torch.manual_seed(0)
    model = TripoSR(TripoSRConfig.tiny())
    folder = store.models_dir / "triposr"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(model.config.to_yaml_dict()))
    torch.save(model.checkpoint_state_dict(), folder / "model.ckpt")
    install(store, monkeypatch, "triposr")


def save_tiny_syncdreamer(store: ModelStore, monkeypatch) -> None:
    torch.manual_seed(0)
    folder = store.models_dir / "syncdreamer"
    folder.mkdir(parents=True)
    torch.save({"state_dict": SyncDreamer(SyncDreamerConfig.tiny()).state_dict()},
               folder / "syncdreamer-pretrain.ckpt")
    install(store, monkeypatch, "syncdreamer")


