"""Errors shared across the library."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be loaded (unknown preset, backend or field, wrong type)."""
