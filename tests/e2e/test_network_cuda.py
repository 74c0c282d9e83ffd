"""Node processes computing on a CUDA device: secure and public requests through the network match plaintext."""

from __future__ import annotations

import pytest
import torch

from secureinfer.models.config import ModelConfig, parameter_shapes
from secureinfer.plaintext import reference as plaintext

from .conftest import random_ids

pytestmark = pytest.mark.cuda
LOGIT_TOLERANCE = 3e-3  # as the CPU end-to-end tests: fixed point f=18 through two layers


def _tiny_gpt2() -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A 2-layer GPT-2 with random weights made without transformers (the GPU machine may lack it)."""
    cfg = ModelConfig(arch="gpt2", vocab_size=61, hidden=32, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=8,
                      intermediate=128, max_positions=24, norm_eps=1e-5, act="gelu_tanh", tie_word_embeddings=True,
                      eos_token_ids=(1,))
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, shape in parameter_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        params[name] = 0.3 * noise if len(shape) > 1 else (1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
    return cfg, params


@pytest.fixture(scope="module")
def cuda_network():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; CUDA tests run on the GPU machine")
    from secureinfer.lab.simulate import LocalNetwork, SimulationConfig

    with LocalNetwork(SimulationConfig(n_nodes=3, device="cuda")) as net:
        yield net


def test_secure_and_public_requests_on_cuda_nodes(cuda_network):
    cfg, params = _tiny_gpt2()
    ids = random_ids(2, 7, seed=3)
    want = plaintext.gpt2_forward(cfg, params, ids)
    with cuda_network.owner() as owner, cuda_network.client() as client:
        owner.publish("tiny-cuda", cfg, params)
        owner.publish("tiny-cuda", cfg, params, privacy="public")
        assert all("cuda" in r.capability.device for r in client.nodes())
        secure = client.logits("tiny-cuda", ids, chunks=(5, 1, 1))
        public = client.logits("tiny-cuda", ids, privacy="public")
        generated = client.generate("tiny-cuda", ids[:1], 4)
    err = float((secure - want).abs().max())
    print(f"cuda nodes: secure logits max error {err:.2e} (tolerance {LOGIT_TOLERANCE}), "
          f"public {float((public - want).abs().max()):.2e}")
    assert err < LOGIT_TOLERANCE
    assert float((public - want).abs().max()) < 1e-4  # float32 on the GPU worker
    expected = plaintext.greedy_generate(cfg, params, ids[:1], 4, eos_token_ids=cfg.eos_token_ids)
    assert torch.equal(generated.tokens, expected)
