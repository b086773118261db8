"""Shared test fixtures: the real data in ../shared/data and loopback services."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from glimpse3d_core.models.store import ModelStore

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GLIMPSE3D_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data (../shared/data beside the checkout); skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set GLIMPSE3D_SHARED_DATA)")
    return SHARED_DATA


def require_service(env_var: str, default_url: str) -> str:
    """URL of a loopback service read from ``env_var``; skips with a visible reason where nothing listens,
    unless GLIMPSE3D_REQUIRE_SERVICES=1 (as in CI), where an absent service fails the test."""
    url = os.environ.get(env_var, default_url)
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=2):
            return url
    except OSError as exc:
        message = f"service {env_var}={url} is not reachable: {exc}"
        if os.environ.get("GLIMPSE3D_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def empty_env(tmp_path, monkeypatch) -> ModelStore:
    """Model folder, HF cache and rembg home all empty, through the environment variables users set."""
    monkeypatch.setenv("GLIMPSE3D_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    monkeypatch.delenv("U2NET_HOME", raising=False)
    return ModelStore()
