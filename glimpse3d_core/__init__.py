"""Glimpse3D core library: single photo -> 3D Gaussian splat, mesh and turntable.

Pure functions and typed data (see :mod:`glimpse3d_core.types` for every convention). Never imports Dagster.
"""

__version__ = "0.1.0"
