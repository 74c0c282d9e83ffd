"""The plaintext anchor: Hugging Face `transformers` running the workload in the clear (what users would run if
privacy did not matter), fp32 on the CPU here, or on a CUDA GPU with --device cuda.

Same command line and output as the other runners (see benchmarks/anchors/__init__.py); bytes are 0 (one process,
nothing leaves it) and rounds are null. Timed: one forward under torch.inference_mode after one warm-up forward.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.anchors import runner_cli


def build_model(spec: dict[str, Any], arrays: dict[str, np.ndarray], dtype: torch.dtype) -> torch.nn.Module:
    """A transformers BertModel / GPT2LMHeadModel of the workload's shape with its weights loaded (strictly)."""
    import transformers

    if spec["arch"] == "bert":
        config = transformers.BertConfig(
            vocab_size=spec["vocab_size"], hidden_size=spec["hidden"], num_hidden_layers=spec["n_layers"],
            num_attention_heads=spec["n_heads"], intermediate_size=spec["intermediate"],
            max_position_embeddings=spec["max_positions"], type_vocab_size=spec["type_vocab_size"],
            layer_norm_eps=spec["norm_eps"], hidden_act="gelu", attn_implementation="sdpa")
        model = transformers.BertModel(config, add_pooling_layer=False)
    elif spec["arch"] == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=spec["vocab_size"], n_embd=spec["hidden"], n_layer=spec["n_layers"], n_head=spec["n_heads"],
            n_inner=spec["intermediate"], n_positions=spec["max_positions"], layer_norm_epsilon=spec["norm_eps"],
            activation_function="gelu_new", attn_implementation="sdpa")
        model = transformers.GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown architecture {spec['arch']!r}")
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    if spec["arch"] == "gpt2":
        state["lm_head.weight"] = state["transformer.wte.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(("position_ids", "attn.bias", "attn.masked_bias"))]
    if missing or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(dtype).eval()


def run(workload: Path, repeats: int, device: str) -> tuple[dict[str, Any], np.ndarray]:
    """One warm-up forward, then `repeats` timed forwards; the output of the last."""
    import transformers

    spec = json.loads(workload.read_text())
    with np.load(workload.parent / spec["npz"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    ids = torch.from_numpy(arrays.pop("input_ids")).to(device)
    mask = torch.from_numpy(arrays.pop("attention_mask")).to(device)
    model = build_model(spec, arrays, torch.float32).to(device)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            if spec["arch"] == "bert":
                return model(input_ids=ids, attention_mask=mask).last_hidden_state
            return model(input_ids=ids).logits[:, -1]

    forward()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = forward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(f"transformers {spec['name']}: median {statistics.median(times) * 1e3:.1f} ms", file=sys.stderr)
    return ({"anchor": "transformers", "anchor_version": transformers.__version__, "workload": spec["name"],
             "seconds": statistics.median(times), "seconds_all": times, "compile_seconds": None,
             "timed": "one plaintext forward (after one warm-up)", "bytes_per_party": None, "rounds": None,
             "rounds_what": "no communication", "config": {"dtype": "float32", "device": device,
                                                           "threads": torch.get_num_threads(), "attention": "sdpa"},
             "notes": "plaintext: no privacy", "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
            out.double().cpu().numpy())


def main(argv: list[str] | None = None) -> int:
    """Run the workload in plaintext and write the result JSON and the output."""
    parser = runner_cli.parser("python -m benchmarks.anchors.transformers_runner",
                               "Hugging Face transformers (plaintext) on an anchor-benchmark workload.", 5)
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = runner_cli.parse(parser, argv)
    runner_cli.write(args, *run(args.workload, args.repeats, args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
