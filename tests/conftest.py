"""Shared fixtures: the device each engine test runs on (CPU always; CUDA where a GPU is present), and tiny random
checkpoints written as Hugging Face directories (tinymodels.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from secureinfer.mpc.party import EngineConfig

from .tinymodels import save, tiny_bert, tiny_gpt2, tiny_llama


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


LONG_TESTS_ENV = "SECUREINFER_LONG_TESTS"


def long_tests_enabled() -> bool:
    """True when the long variants (soak, long fuzz, long audit) were asked for with SECUREINFER_LONG_TESTS=1."""
    import os

    return os.environ.get(LONG_TESTS_ENV, "") == "1"


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `long` run only with SECUREINFER_LONG_TESTS=1 (their short variants always run in CI)."""
    if long_tests_enabled():
        return
    skip = pytest.mark.skip(reason=f"long variant: set {LONG_TESTS_ENV}=1 to run it (its short variant runs in CI)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------- tiny checkpoints


@pytest.fixture
def gpt2_dir(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny GPT-2 LM saved as an HF directory, and the HF model itself."""
    model = tiny_gpt2(seed=1)
    return save(model, tmp_path / "gpt2"), model


@pytest.fixture
def bert_dir(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny BertModel saved as an HF directory, and the HF model itself."""
    model = tiny_bert(seed=2)
    return save(model, tmp_path / "bert"), model


@pytest.fixture
def llama_dir(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny untied GQA LLaMA saved as an HF directory, and the HF model itself."""
    model = tiny_llama(seed=3)
    return save(model, tmp_path / "llama"), model
