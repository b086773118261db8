"""Marks shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

CUDA_ONLY = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
"""A test that needs a CUDA GPU: ``pytest -m cuda`` selects it, a machine without CUDA skips it. As a module's
``pytestmark`` or a parameter's ``marks``; :func:`cuda_only` for one test."""

DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_ONLY)]
"""``@pytest.mark.parametrize("device", DEVICES)``: a test on the CPU, and on CUDA where there is a GPU."""


def cuda_only(test: Callable) -> Callable:
    """Decorator: :data:`CUDA_ONLY`'s marks on one test."""
    for mark in CUDA_ONLY:
        test = mark(test)
    return test
