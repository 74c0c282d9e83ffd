"""Shared fixtures: the device each engine test runs on (CPU always; CUDA where a GPU is present)."""

from __future__ import annotations

import pytest
import torch

from secureinfer.mpc.party import EngineConfig


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request) -> str:
    """Run the test once per device; the CUDA run skips (honestly, with the reason) where no GPU is present."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here; CUDA protocol tests run on the GPU machine")
    return request.param


@pytest.fixture
def config(device: str) -> EngineConfig:
    """The default engine configuration on the test's device."""
    return EngineConfig(device=device)
