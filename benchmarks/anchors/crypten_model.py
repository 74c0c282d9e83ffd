"""The CrypTen anchor's Transformer: BERT and GPT-2 forwards written with CrypTen tensor ops, and the weight layout.

The same code runs on plain torch tensors (tests/benchmarks/test_crypten_anchor.py checks it against secureinfer's
float64 reference); crypten is imported only where a CrypTen tensor needs its own settings. This file is imported
in the CrypTen venv (torch and crypten only), so it imports nothing of secureinfer.
"""

from __future__ import annotations

import math

import numpy as np
import torch

GELU_TANH_C = math.sqrt(2.0 / math.pi)
# CrypTen's tanh is 2 sigmoid(2x) - 1 with exp by (1 + x/512)^512, which blows up past |2x| ~ 1000 (GeLU inputs
# beyond ~24, which MiniLM reaches): the tanh argument is clamped to [-10, 10] first (tanh(10) = 1 - 4e-9).
GELU_TANH_CLAMP = 10.0
# CrypTen's default 3 Newton-Raphson steps of inv_sqrt start from a guess that is far off below variance 0.1
# (MiniLM's embedding LayerNorm has 0.004-0.03: 0.45-0.86 of the true value); 10 steps converge on [0.001, 200].
LN_SQRT_ITERS = 10


# ---------------------------------------------------------------- secure building blocks (CrypTen tensor ops)
def gelu_tanh(x):
    """GeLU by the tanh formula 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), tanh on a clamped argument."""
    inner = (x + x.square().mul(x).mul(0.044715)).mul(GELU_TANH_C)
    if isinstance(inner, torch.Tensor):
        clamped = inner.clamp(-GELU_TANH_CLAMP, GELU_TANH_CLAMP)
    else:
        clamped = inner.hardtanh(-GELU_TANH_CLAMP, GELU_TANH_CLAMP)
    return x.mul(clamped.tanh().add(1.0)).mul(0.5)


def inv_sqrt(x):
    """1/sqrt(x): CrypTen's Newton-Raphson with LN_SQRT_ITERS steps; a plain tensor takes torch's rsqrt."""
    if isinstance(x, torch.Tensor):
        return x.rsqrt()
    import crypten

    with crypten.cfg.temp_override({"functions.sqrt_nr_iters": LN_SQRT_ITERS}):
        return x.inv_sqrt()


def layer_norm(x, gamma, beta, eps: float):
    """LayerNorm over the last dim with CrypTen's inv_sqrt (Newton-Raphson); gamma/beta may be None."""
    centered = x - x.mean(dim=-1, keepdim=True)
    var = centered.square().mean(dim=-1, keepdim=True)
    y = centered * inv_sqrt(var + eps)
    if gamma is not None:
        y = y * gamma + beta
    return y


def causal_softmax(scores, mask: torch.Tensor):
    """Softmax over the last dim with a public 0/1 mask: masked scores are zeroed before the max, exp'd and dropped."""
    masked = scores * mask
    shifted = masked - masked.max(dim=-1, keepdim=True)[0]
    numer = shifted.exp() * mask
    return numer * positive_reciprocal(numer.sum(dim=-1, keepdim=True))


def positive_reciprocal(x):
    """1/x for x known positive: CrypTen skips its sign step (as its softmax does); a plain tensor takes torch's."""
    if isinstance(x, torch.Tensor):
        return x.reciprocal()
    import crypten

    with crypten.cfg.temp_override({"functions.reciprocal_all_pos": True}):
        return x.reciprocal()


def attention(x, p: dict, pre: str, n_heads: int, causal_mask: torch.Tensor | None):
    """Multi-head self-attention on (T, H) with fused or separate q/k/v projections already shared as (in, out)."""
    t, h = x.size()
    d = h // n_heads
    if f"{pre}qkv_w" in p:
        qkv = x.matmul(p[f"{pre}qkv_w"]) + p[f"{pre}qkv_b"]  # (T, 3H)
        q, k, v = qkv[:, :h], qkv[:, h : 2 * h], qkv[:, 2 * h :]
    else:
        q = x.matmul(p[f"{pre}q_w"]) + p[f"{pre}q_b"]
        k = x.matmul(p[f"{pre}k_w"]) + p[f"{pre}k_b"]
        v = x.matmul(p[f"{pre}v_w"]) + p[f"{pre}v_b"]
    q, k, v = (a.reshape(t, n_heads, d).transpose(0, 1) for a in (q, k, v))  # (nh, T, d)
    scores = q.matmul(k.transpose(1, 2)).mul(1.0 / math.sqrt(d))  # (nh, T, T)
    probs = scores.softmax(-1) if causal_mask is None else causal_softmax(scores, causal_mask)
    ctx = probs.matmul(v).transpose(0, 1).reshape(t, h)  # (T, H)
    return ctx.matmul(p[f"{pre}o_w"]) + p[f"{pre}o_b"]


def bert_forward(p: dict, onehot, cfg: dict):
    """BERT encoder on a (T, V) one-hot: embeddings, post-LN layers; returns the (T, H) last hidden state."""
    t = onehot.size(0)
    x = onehot.matmul(p["word"]) + p["pos"][:t] + p["type"][0:1]
    x = layer_norm(x, p["emb_ln_g"], p["emb_ln_b"], cfg["norm_eps"])
    for i in range(cfg["n_layers"]):
        pre = f"l{i}."
        eps = cfg["norm_eps"]
        x = layer_norm(x + attention(x, p, pre, cfg["n_heads"], None), p[pre + "ln1_g"], p[pre + "ln1_b"], eps)
        hidden = gelu_tanh(x.matmul(p[pre + "fc_w"]) + p[pre + "fc_b"])
        x = layer_norm(x + hidden.matmul(p[pre + "out_w"]) + p[pre + "out_b"], p[pre + "ln2_g"], p[pre + "ln2_b"], eps)
    return x


def gpt2_forward(p: dict, onehot, cfg: dict):
    """GPT-2 decoder on a (T, V) one-hot: pre-LN causal layers, final LN; returns the (1, V) last-position logits."""
    t = onehot.size(0)
    mask = torch.tril(torch.ones(t, t, dtype=torch.float64)).float()
    x = onehot.matmul(p["word"]) + p["pos"][:t]
    for i in range(cfg["n_layers"]):
        pre = f"l{i}."
        a = layer_norm(x, p[pre + "ln1_g"], p[pre + "ln1_b"], cfg["norm_eps"])
        x = x + attention(a, p, pre, cfg["n_heads"], mask)
        m = layer_norm(x, p[pre + "ln2_g"], p[pre + "ln2_b"], cfg["norm_eps"])
        x = x + gelu_tanh(m.matmul(p[pre + "fc_w"]) + p[pre + "fc_b"]).matmul(p[pre + "out_w"]) + p[pre + "out_b"]
    last = layer_norm(x[t - 1 : t], p["lnf_g"], p["lnf_b"], cfg["norm_eps"])  # (1, H)
    return last.matmul(p["word"].t())  # (1, V), LM head tied to wte


# ---------------------------------------------------------------- plaintext weight layout (weights party only)
def bert_plain_params(w: dict[str, np.ndarray], n_layers: int) -> dict[str, torch.Tensor]:
    """Map HF BERT names to the runner's names, with Linear weights turned to (in, out)."""
    t = lambda k: torch.from_numpy(np.asarray(w[k], dtype=np.float64))  # noqa: E731
    p = {
        "word": t("embeddings.word_embeddings.weight"),
        "pos": t("embeddings.position_embeddings.weight"),
        "type": t("embeddings.token_type_embeddings.weight"),
        "emb_ln_g": t("embeddings.LayerNorm.weight"),
        "emb_ln_b": t("embeddings.LayerNorm.bias"),
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "o": "attention.output.dense", "fc": "intermediate.dense", "out": "output.dense",
    }
    for i in range(n_layers):
        base = f"encoder.layer.{i}."
        for short, hf in names.items():
            p[f"l{i}.{short}_w"] = t(base + hf + ".weight").T.contiguous()
            p[f"l{i}.{short}_b"] = t(base + hf + ".bias")
        for short, hf in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
            p[f"l{i}.{short}_g"] = t(base + hf + ".weight")
            p[f"l{i}.{short}_b"] = t(base + hf + ".bias")
    return p


def gpt2_plain_params(w: dict[str, np.ndarray], n_layers: int) -> dict[str, torch.Tensor]:
    """Map HF GPT-2 names (Conv1D weights already (in, out)) to the runner's names."""
    t = lambda k: torch.from_numpy(np.asarray(w[k], dtype=np.float64))  # noqa: E731
    p = {"word": t("transformer.wte.weight"), "pos": t("transformer.wpe.weight"),
         "lnf_g": t("transformer.ln_f.weight"), "lnf_b": t("transformer.ln_f.bias")}
    names = {"qkv": "attn.c_attn", "o": "attn.c_proj", "fc": "mlp.c_fc", "out": "mlp.c_proj",
             "ln1": "ln_1", "ln2": "ln_2"}
    for i in range(n_layers):
        for short, hf in names.items():
            suffix = ("_g", "_b") if short.startswith("ln") else ("_w", "_b")
            p[f"l{i}.{short}{suffix[0]}"] = t(f"transformer.h.{i}.{hf}.weight")
            p[f"l{i}.{short}{suffix[1]}"] = t(f"transformer.h.{i}.{hf}.bias")
    return p
