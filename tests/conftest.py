"""Shared test fixtures: the real data in ../shared/data and loopback services."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

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
