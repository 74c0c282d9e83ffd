"""Accuracy of an opened output against the float64 plaintext reference, the same figures for every system.

The figures are secureinfer.lab.bench.metrics' (the ones `secureinfer bench model` and the sweep report); this
module picks them per output kind and names them for the anchors' JSON. It runs in the harness's interpreter only:
the anchors' own environments write their output and never import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from secureinfer.lab.bench import metrics


def _float64(x: np.ndarray) -> torch.Tensor:
    """A float64 tensor of `x` (any strides)."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def compare(output: np.ndarray, reference: np.ndarray, kind: str) -> dict[str, Any]:
    """max/mean |diff|, the worst row's cosine and, per kind, the sentence-embedding cosine (BERT: mean pooling over
    the tokens, every token being real) or top-1 agreement (GPT-2 logits)."""
    out, ref = _float64(output), _float64(reference)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    if not bool(torch.isfinite(out).all()):
        return {"finite": False}
    figures: dict[str, Any] = {"finite": True, "max_abs_diff": metrics.max_abs_diff(out, ref),
                               "mean_abs_diff": metrics.mean_abs_diff(out, ref),
                               "min_row_cosine": metrics.min_row_cosine(out, ref),
                               "reference_scale": metrics.max_abs(ref)}
    if kind == "last_hidden_state":
        figures["embedding_cosine"] = metrics.min_row_cosine(out.mean(dim=-2), ref.mean(dim=-2))
    elif kind == "last_logits":
        figures["top1_agreement"] = metrics.top1_agreement(out, ref)
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    return figures


def at_least_as_accurate(ours: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether `ours` is as accurate as `other` or better: a max |diff| no larger and a worst-row cosine no lower."""
    if not ours.get("finite"):
        return False
    if not other.get("finite"):
        return True
    return ours["max_abs_diff"] <= other["max_abs_diff"] and ours["min_row_cosine"] >= other["min_row_cosine"]
