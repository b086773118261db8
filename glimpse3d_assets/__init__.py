"""Dagster definitions for Glimpse3D: thin wrappers over :mod:`glimpse3d_core.stages`."""
