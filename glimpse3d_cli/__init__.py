"""The ``glimpse3d`` command line."""
