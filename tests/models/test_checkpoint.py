"""Checkpoint loading: packaged real models, tiny HF directories, tiny hand-written GGUF files, and domain errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from secureinfer.models.checkpoint import load_checkpoint, load_tokenizer, packaged_checkpoint
from secureinfer.models.config import CheckpointError, ModelConfig, parameter_shapes
from secureinfer.models.gguf_import import hf_name, unpermute_rotary

from tests.tinymodels import save, tiny_bert, tiny_gpt2, tiny_llama


def _hf_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The HF state dict without the tied lm_head copy."""
    sd = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    return sd


def _assert_same_params(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], strip: str = "") -> None:
    ref = {k[len(strip):] if strip and k.startswith(strip) else k: v for k, v in ref.items()}
    assert set(ours) == set(ref)
    for name, value in ours.items():
        assert value.dtype == torch.float32
        assert torch.equal(value, ref[name].to(torch.float32)), name


# ---------------------------------------------------------------------------------------------- tiny HF dirs


def test_tiny_gpt2_dir_loads(gpt2_dir):
    path, model = gpt2_dir
    cfg, params = load_checkpoint(path)
    assert (cfg.arch, cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.head_dim) == ("gpt2", 32, 2, 4, 8)
    assert (cfg.intermediate, cfg.max_positions, cfg.act, cfg.tie_word_embeddings) == (128, 24, "gelu_tanh", True)
    assert cfg.eos_token_ids == (1,)
    _assert_same_params(params, _hf_params(model))
    assert set(params) == set(parameter_shapes(cfg))


def test_bare_gpt2_model_gets_transformer_prefix(tmp_path):
    model = tiny_gpt2(seed=4, bare=True)
    _, params = load_checkpoint(save(model, tmp_path / "bare"))
    assert "transformer.wte.weight" in params and "transformer.h.1.mlp.c_proj.weight" in params
    assert torch.equal(params["transformer.wte.weight"], model.state_dict()["wte.weight"])


def test_tiny_bert_dir_loads(bert_dir):
    path, model = bert_dir
    cfg, params = load_checkpoint(path, dtype=torch.float64)
    assert (cfg.arch, cfg.hidden, cfg.n_heads, cfg.intermediate, cfg.type_vocab_size) == ("bert", 32, 4, 48, 2)
    assert cfg.num_labels == 0 and cfg.act == "gelu" and not cfg.causal
    assert all(v.dtype == torch.float64 for v in params.values())
    assert set(params) == set(model.state_dict()) - {"embeddings.position_ids", "embeddings.token_type_ids"}


def test_bert_classifier_strips_prefix(tmp_path):
    model = tiny_bert(seed=5, num_labels=3)
    cfg, params = load_checkpoint(save(model, tmp_path / "cls"))
    assert cfg.num_labels == 3
    _assert_same_params(params, model.state_dict(), strip="bert.")
    assert params["classifier.weight"].shape == (3, 32)


@pytest.mark.parametrize("tie,bias", [(False, False), (True, True)])
def test_tiny_llama_dir_loads(tmp_path, tie, bias):
    model = tiny_llama(seed=6, tie=tie, bias=bias)
    cfg, params = load_checkpoint(save(model, tmp_path / "llama"))
    assert (cfg.arch, cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == ("llama", 48, 8, 2, 6)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.act, cfg.tie_word_embeddings) == (500.0, 1e-5, "silu", tie)
    assert cfg.attention_bias == bias and cfg.mlp_bias == bias
    _assert_same_params(params, _hf_params(model))
    assert ("lm_head.weight" in params) == (not tie)


def test_sharded_safetensors_dir(llama_dir, tmp_path):
    path, model = llama_dir
    tensors = load_file(str(path / "model.safetensors"))
    names = sorted(tensors)
    out = tmp_path / "sharded"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    save_file({k: tensors[k] for k in names[::2]}, str(out / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in names[1::2]}, str(out / "model-00002-of-00002.safetensors"))
    _, params = load_checkpoint(out)
    _assert_same_params(params, _hf_params(model))


# ---------------------------------------------------------------------------------------------- GGUF


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (the transform the loader must undo)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    for rows, heads in [(48, 8), (12, 2), (576, 9), (192, 3)]:
        w = rng.standard_normal((rows, 5)).astype(np.float32)
        assert np.array_equal(unpermute_rotary(_llama_cpp_permute(w, heads), heads), w)
        b = rng.standard_normal(rows).astype(np.float32)
        assert np.array_equal(unpermute_rotary(_llama_cpp_permute(b, heads), heads), b)
    with pytest.raises(CheckpointError):
        unpermute_rotary(np.zeros((10, 3)), 3)


def test_gguf_names():
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    assert hf_name("output_norm.weight") == "model.norm.weight"
    assert hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert hf_name("blk.0.attn_output.weight") == "model.layers.0.self_attn.o_proj.weight"
    assert hf_name("blk.12.ffn_norm.weight") == "model.layers.12.post_attention_layernorm.weight"
    assert hf_name("blk.1.ffn_down.weight") == "model.layers.1.mlp.down_proj.weight"
    with pytest.raises(CheckpointError, match="unsupported GGUF tensor"):
        hf_name("blk.0.attn_qkv.weight")


_GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def _write_tiny_gguf(path: Path, model: torch.nn.Module, arch: str = "llama") -> Path:
    """Write an HF LLaMA as llama.cpp would (names, Q/K permutation, metadata), all tensors F32."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(500.0)
    w.add_rope_dimension_count(c.head_dim)
    w.add_vocab_size(c.vocab_size)
    w.add_eos_token_id(1)
    for name, t in _hf_params(model).items():
        a = t.detach().numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            _, _, layer, *rest = name.split(".")
            module, kind = ".".join(rest[:-1]), rest[-1]
            gname = f"blk.{layer}.{_GGUF_NAMES[module]}.{kind}"
            if module == "self_attn.q_proj":
                a = _llama_cpp_permute(a, c.num_attention_heads)
            elif module == "self_attn.k_proj":
                a = _llama_cpp_permute(a, c.num_key_value_heads)
        w.add_tensor(gname, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tie", [False, True])
def test_tiny_gguf_round_trip(tmp_path, tie):
    model = tiny_llama(seed=7, tie=tie)
    cfg, params = load_checkpoint(_write_tiny_gguf(tmp_path / "tiny.gguf", model))
    assert (cfg.arch, cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == ("llama", 48, 2, 8, 2, 6)
    assert (cfg.intermediate, cfg.vocab_size, cfg.rope_theta, cfg.tie_word_embeddings) == (40, 61, 500.0, tie)
    assert cfg.eos_token_ids == (1,) and abs(cfg.norm_eps - 1e-5) < 1e-12
    _assert_same_params(params, _hf_params(model))


def test_gguf_unknown_architecture(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "g.gguf"), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="unknown GGUF architecture 'gpt2'"):
        load_checkpoint(tmp_path / "g.gguf")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(CheckpointError, match="corrupt GGUF"):
        load_checkpoint(bad)
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="corrupt GGUF"):
        load_checkpoint(bad)


# ---------------------------------------------------------------------------------------------- errors


def test_layer_imports_no_grpc_selector_or_cli():
    code = ("import sys; import secureinfer.models.checkpoint, secureinfer.plaintext.reference, "
            "secureinfer.models.gguf_import; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'grpc' or m.startswith(('secureinfer.selector', "
            "'secureinfer.nodes', 'secureinfer.cli'))]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(CheckpointError, match="Hugging Face directory or a .gguf"):
        load_checkpoint(tmp_path / "weights.txt")
    with pytest.raises(CheckpointError, match="unknown packaged model"):
        packaged_checkpoint("gpt-5")


def _rewrite_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_corrupt_and_unknown_configs(gpt2_dir):
    path, _ = gpt2_dir
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="corrupt config.json"):
        load_checkpoint(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load_checkpoint(path)
    (path / "config.json").write_text(text)
    _rewrite_config(path, model_type="t5")
    with pytest.raises(CheckpointError, match="unknown architecture.*'t5'"):
        load_checkpoint(path)
    (path / "config.json").write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "n_embd"}))
    with pytest.raises(CheckpointError, match="n_embd"):
        load_checkpoint(path)
    (path / "config.json").write_text(text)
    _rewrite_config(path, activation_function="mish")
    with pytest.raises(CheckpointError, match="unsupported activation 'mish'"):
        load_checkpoint(path)


def test_bad_shapes_and_missing_tensors(llama_dir):
    path, _ = llama_dir
    _rewrite_config(path, intermediate_size=41)
    with pytest.raises(CheckpointError, match=r"shape \(40, 48\), expected \(41, 48\)"):
        load_checkpoint(path)
    _rewrite_config(path, intermediate_size=40, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match="missing parameters: model.layers.2"):
        load_checkpoint(path)
    _rewrite_config(path, num_hidden_layers=2)
    tensors = load_file(str(path / "model.safetensors"))
    tensors["model.norm.weight"][3] = float("nan")
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(path)
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        load_checkpoint(path)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickled weights are refused"):
        load_checkpoint(path)


def test_config_validation():
    base = dict(model_type="llama", vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                intermediate_size=8)
    cfg = ModelConfig.from_hf_config(base)
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta, cfg.tie_word_embeddings) == (4, 4, 10000.0, False)
    assert ModelConfig.from_hf_config({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 7.0}}
                                      ).rope_theta == 7.0
    with pytest.raises(CheckpointError, match="not a multiple"):
        ModelConfig.from_hf_config({**base, "num_key_value_heads": 3})
    with pytest.raises(CheckpointError, match="rope_type 'llama3' unsupported"):
        ModelConfig.from_hf_config({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(CheckpointError, match="positive integer"):
        ModelConfig.from_hf_config({**base, "vocab_size": 0})
    with pytest.raises(CheckpointError, match="unknown architecture"):
        ModelConfig(arch="t5", vocab_size=1, hidden=4, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=4,
                    intermediate=4, max_positions=4, norm_eps=1e-5, act="gelu")
    with pytest.raises(CheckpointError, match="relative_key"):
        ModelConfig.from_hf_config({"model_type": "bert", "position_embedding_type": "relative_key"})


# ---------------------------------------------------------------------------------------------- real weights


@pytest.mark.slow
def test_minilm_package_loads():
    path = packaged_checkpoint("all-MiniLM-L6-v2")
    assert path.name == "model" and (path / "model.safetensors").is_file()
    cfg, params = load_checkpoint(path)
    assert (cfg.arch, cfg.vocab_size, cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.intermediate) == \
        ("bert", 30522, 384, 6, 12, 1536)
    assert (cfg.max_positions, cfg.norm_eps, cfg.act) == (512, 1e-12, "gelu")
    assert len(params) == 103 and "pooler.dense.weight" in params and "embeddings.position_ids" not in params
    assert sum(v.numel() for v in params.values()) == 22_713_216
    tok = load_tokenizer(path)
    assert tok("hello world").input_ids == [101, 7592, 2088, 102]


@pytest.mark.slow
def test_smollm2_gguf_loads():
    path = packaged_checkpoint("SmolLM2-135M-Instruct")
    assert path.suffix == ".gguf"
    cfg, params = load_checkpoint(path)
    assert (cfg.arch, cfg.vocab_size, cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == \
        ("llama", 49152, 576, 30, 9, 3, 64)
    assert (cfg.intermediate, cfg.rope_theta, cfg.tie_word_embeddings, cfg.eos_token_ids) == \
        (1536, 100000.0, True, (2,))
    assert len(params) == 272 and "lm_head.weight" not in params
    assert sum(v.numel() for v in params.values()) == 134_515_008
