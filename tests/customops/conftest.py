"""Fixtures shared by the op tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded 0, for a test's own random inputs."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def cuda() -> torch.device:
    """The CUDA device; the test is skipped without one (mark it `cuda` too)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")
