"""One definition, two executions: arch.py's BERT / GPT-2 / LLaMA on the torch and the secure backends.

Drift checks on random small configurations (layers, heads, grouped KV heads, head_dim, activation, tied head,
biases, token types, classifier drawn from a seeded generator):
  torch backend (float64, views: plaintext.PlainModel; packed: the fast decoder's weights) vs Hugging Face
      transformers' own modeling in float64: max |diff| < 1e-9 (BERT, GPT-2; seen ~1e-14) and < 1e-4 for LLaMA
      (transformers computes LLaMA's RMSNorm and RoPE angles in float32 even in a float64 model; seen ~1e-6);
  secure backend (three simulated parties, f = 18, accurate profile, KV cache) vs the torch backend within the
      fixed-point tolerances of test_secure_models.py (BERT 5e-4, GPT-2 3e-3, LLaMA 2e-2 absolute), and the
      definition is what both executions ran (the forward functions are wrapped to record their backend).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest
import torch

from secureinfer.models import arch
from secureinfer.models.checkpoint import load_checkpoint
from secureinfer.models.config import ModelConfig
from secureinfer.models.ops import ModelOps, WeightBuilder
from secureinfer.mpc.models import session
from secureinfer.mpc.models.secure_ops import SecureBuilder, SecureOps
from secureinfer.plaintext import reference as plaintext
from secureinfer.plaintext.fast import FastDecoder
from secureinfer.plaintext.torch_ops import TorchBuilder, TorchOps
from secureinfer.strategy import PlaintextStrategy

from tests.tinymodels import VOCAB, randomize, save

SEEDS = (0, 1, 2)
HF_TOL = {"bert": 1e-9, "gpt2": 1e-9, "llama": 1e-4}
SECURE_TOL = {"bert": 5e-4, "gpt2": 3e-3, "llama": 2e-2}


@dataclass(frozen=True)
class Drawn:
    """A random small configuration and the Hugging Face model built from it."""

    model: torch.nn.Module
    describe: str


def _pick(gen: torch.Generator, options: tuple) -> object:
    return options[int(torch.randint(len(options), (1,), generator=gen))]


def _draw(arch_name: str, seed: int) -> Drawn:
    """A random transformers model of `arch_name` (test data, not secret randomness)."""
    from transformers import (BertConfig, BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel,
                              LlamaConfig, LlamaForCausalLM)

    gen = torch.Generator().manual_seed(1000 + seed)
    layers, heads, head_dim = _pick(gen, (1, 2, 3)), _pick(gen, (1, 2, 4)), _pick(gen, (4, 6, 8))
    if arch_name == "gpt2":
        act, tie = _pick(gen, ("gelu_new", "gelu", "relu")), _pick(gen, (True, False))
        cfg = GPT2Config(n_embd=heads * head_dim, n_layer=layers, n_head=heads, vocab_size=VOCAB, n_positions=32,
                         activation_function=act, tie_word_embeddings=tie, bos_token_id=0, eos_token_id=1)
        return Drawn(randomize(GPT2LMHeadModel(cfg), seed), f"gpt2 L{layers} H{heads} d{head_dim} {act} tie={tie}")
    if arch_name == "llama":
        heads = max(heads, 2)
        kv = heads // 2 if seed % 2 == 0 else _pick(gen, tuple(k for k in (1, 2, 4) if heads % k == 0))  # GQA
        hidden = _pick(gen, (heads * head_dim, 24))
        tie, bias, act = _pick(gen, (True, False)), _pick(gen, (True, False)), _pick(gen, ("silu", "gelu"))
        cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv, head_dim=head_dim, intermediate_size=_pick(gen, (20, 36)),
                          vocab_size=VOCAB, max_position_embeddings=64, rms_norm_eps=1e-5,
                          rope_theta=float(_pick(gen, (100.0, 500.0, 10000.0))), tie_word_embeddings=tie,
                          attention_bias=bias, mlp_bias=bias, hidden_act=act, bos_token_id=0, eos_token_id=1)
        return Drawn(randomize(LlamaForCausalLM(cfg), seed),
                     f"llama L{layers} H{heads}/KV{kv} d{head_dim} C{hidden} {act} tie={tie} bias={bias}")
    labels, act = 3 if seed % 2 == 0 else 0, _pick(gen, ("gelu", "gelu_new", "relu"))
    cfg = BertConfig(hidden_size=heads * head_dim, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=_pick(gen, (20, 36)), vocab_size=VOCAB, max_position_embeddings=24,
                     hidden_act=act, num_labels=max(labels, 2))
    model = BertForSequenceClassification(cfg) if labels else BertModel(cfg)
    return Drawn(randomize(model, seed), f"bert L{layers} H{heads} d{head_dim} {act} labels={labels}")


def _ids(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _bert_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids (3, 8), a padding mask with two padded rows, token types with a second segment."""
    ids = _ids(3, 8, seed)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    return ids, mask, types


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got.double() - want.double()).abs().max().item()


# ---------------------------------------------------------------------------------------------- torch vs HF


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("arch_name", ["gpt2", "llama"])
def test_torch_backend_decoders_match_transformers(tmp_path, arch_name, seed):
    drawn = _draw(arch_name, seed)
    cfg, params = load_checkpoint(save(drawn.model, tmp_path / arch_name), torch.float64)
    ids = _ids(2, 9, seed)
    with torch.no_grad():
        ref = drawn.model.double()(ids).logits
    model = plaintext.PlainModel(cfg, params)
    cache = plaintext.KVCache.empty(cfg.n_layers)
    chunks = torch.cat([model.logits(ids[:, :6], cache), model.logits(ids[:, 6:8], cache),
                        model.logits(ids[:, 8:], cache, last_only=True)], dim=1)
    packed = FastDecoder(cfg, params, PlaintextStrategy(precision="fp64")).logits(ids)
    errs = {"views": _err(model.logits(ids), ref), "views+cache": _err(chunks, ref), "packed": _err(packed, ref)}
    print(f"{drawn.describe}: max |logit diff| vs transformers {errs} (scale {ref.abs().max():.2f})")
    assert all(e < HF_TOL[arch_name] for e in errs.values())


@pytest.mark.parametrize("seed", SEEDS)
def test_torch_backend_bert_matches_transformers(tmp_path, seed):
    drawn = _draw("bert", seed)
    cfg, params = load_checkpoint(save(drawn.model, tmp_path / "bert"), torch.float64)
    ids, mask, types = _bert_inputs(seed)
    model = plaintext.PlainModel(cfg, params)
    hf = drawn.model.double()
    with torch.no_grad():
        if cfg.num_labels:
            out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
            want_hidden, want_logits = out.hidden_states[-1], out.logits
        else:
            want_hidden, want_logits = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)[0], None
    real = mask.bool()
    err = _err(model.hidden(ids, mask, types)[real], want_hidden[real])
    print(f"{drawn.describe}: max |hidden diff| vs transformers {err:.2e}")
    assert err < HF_TOL["bert"]
    if want_logits is not None:
        err = _err(model.classify(ids, mask, types), want_logits)
        print(f"{drawn.describe}: max |classifier logit diff| {err:.2e}")
        assert err < HF_TOL["bert"]


# ---------------------------------------------------------------------------------------------- secure vs torch


@pytest.fixture
def recorded(monkeypatch) -> dict[str, set[str]]:
    """Wrap arch.py's forwards to record which backends ran them: forward name -> backend class names."""
    seen: dict[str, set[str]] = {}
    for name in ("gpt2_logits", "llama_logits", "bert_hidden"):
        original = getattr(arch, name)

        def wrapper(ops, *args, _original=original, _name=name, **kwargs):
            seen.setdefault(_name, set()).add(type(ops).__name__)
            return _original(ops, *args, **kwargs)

        monkeypatch.setattr(arch, name, wrapper)
    return seen


@pytest.mark.parametrize("seed", [4, 7])  # 4: one layer (GQA for LLaMA), 7: three layers
@pytest.mark.parametrize("arch_name", ["gpt2", "llama", "bert"])
def test_secure_backend_matches_torch_backend(tmp_path, recorded, arch_name, seed):
    drawn = _draw(arch_name, seed)
    cfg, params = load_checkpoint(save(drawn.model, tmp_path / arch_name), torch.float64)
    if arch_name == "bert":
        ids, mask, types = _bert_inputs(seed)
        output = "logits" if cfg.num_labels else "hidden"
        got, _ = session.secure_encode(cfg, params, ids, mask, types, output=output)
        plain = plaintext.PlainModel(cfg, params)
        want = plain.classify(ids, mask, types) if cfg.num_labels else plain.hidden(ids, mask, types)[mask.bool()]
        got = got if cfg.num_labels else got[mask.bool()]
        forward = "bert_hidden"
    else:
        ids = _ids(2, 7, seed)
        got, _ = session.secure_logits(cfg, params, ids, chunks=(5, 1, 1))  # prefill, then two cached steps
        want = plaintext.PlainModel(cfg, params).logits(ids)
        forward = f"{arch_name}_logits"
    err = _err(got, want)
    top1 = (got.argmax(-1) == want.argmax(-1)).double().mean().item()
    print(f"{drawn.describe}: secure vs torch backend max |diff| {err:.2e} (tol {SECURE_TOL[arch_name]:.0e}), "
          f"top-1 agreement {top1:.3f}")
    assert err < SECURE_TOL[arch_name]
    assert recorded[forward] == {"SecureOps", "TorchOps"}


# ---------------------------------------------------------------------------------------------- interface


def _methods(protocol: type) -> set[str]:
    return {n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")}


@pytest.mark.parametrize("cls,protocol", [(SecureOps, ModelOps), (TorchOps, ModelOps),
                                          (SecureBuilder, WeightBuilder), (TorchBuilder, WeightBuilder)])
def test_backends_implement_the_whole_interface(cls, protocol):
    missing = {n for n in _methods(protocol) if not callable(getattr(cls, n, None))}
    assert _methods(protocol) and not missing, f"{cls.__name__} lacks {sorted(missing)}"


def test_loaders_refuse_bad_inputs():
    cfg = ModelConfig(arch="bert", vocab_size=8, hidden=8, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=4,
                      intermediate=8, max_positions=8, norm_eps=1e-5, act="gelu")
    with pytest.raises(ValueError, match="needs a gpt2 config"):
        arch.load_gpt2(cfg, {}, TorchBuilder(torch.float64))
    with pytest.raises(KeyError, match="embeddings.word_embeddings.weight is missing"):
        arch.load_bert(cfg, {}, TorchBuilder(torch.float64))
    with pytest.raises(ValueError, match="pack=True"):
        TorchBuilder(torch.float32, int8=True)
