"""Accuracy of an opened output against the float64 plaintext reference, the same figures for every system."""

from __future__ import annotations

from typing import Any

import numpy as np


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-300)


def compare(output: np.ndarray, reference: np.ndarray, kind: str) -> dict[str, Any]:
    """max/mean |diff|, the worst row's cosine and, per kind, the sentence-embedding cosine (BERT: mean pooling over
    the tokens, every token being real) or top-1 agreement (GPT-2 logits)."""
    out, ref = np.asarray(output, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    if not np.isfinite(out).all():
        return {"finite": False}
    rows_o, rows_r = out.reshape(-1, out.shape[-1]), ref.reshape(-1, ref.shape[-1])
    figures: dict[str, Any] = {"finite": True, "max_abs_diff": float(np.abs(out - ref).max()),
                               "mean_abs_diff": float(np.abs(out - ref).mean()),
                               "min_row_cosine": float(_cosine_rows(rows_o, rows_r).min()),
                               "reference_scale": float(np.abs(ref).max())}
    if kind == "last_hidden_state":
        figures["embedding_cosine"] = float(_cosine_rows(out.mean(axis=-2), ref.mean(axis=-2)).min())
    elif kind == "last_logits":
        figures["top1_agreement"] = float((rows_o.argmax(-1) == rows_r.argmax(-1)).mean())
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
