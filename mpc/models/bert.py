"""Secure BERT-family encoder (BertModel names): embeddings, post-LN layers, mean pooling, classification head.

Forward on secret one-hot token rows (B, T, V), public padding mask and token types (see plaintext.bert_forward
for the float64 reference this follows op for op):
  x = LayerNorm(one-hot @ word + position[0..T) + token_type[types])   (1 round for the one-hot product; the
      position and type rows are public-index lookups, local)
  per layer: x = LayerNorm(x + attention(x)); x = LayerNorm(x + W_out gelu(W_i x + b_i) + b_out)
  mean pooling over real tokens: sum_t mask_t x_t (local) times 1/n per row (one truncation); the client
  L2-normalises the opened vector itself (sentence-transformers' embedding)
  classification: classifier(tanh(pooler(x[:, 0]))), tanh(x) = sign(x) (2 / (1 + e^(-2|x|)) - 1).
Owner-side preparation (`owner_params`): the query weights and biases are multiplied by 1/sqrt(D) (the owner knows
the plaintext, so the scale costs nothing at run time); everything else travels under its own name and layout.
Cost per layer (T tokens, C hidden, I intermediate, H heads): 6 dense truncation layers' worth of matmuls
(QKV, out, fc1, fc2), attention (scores, exact max, exp, reciprocal per row), two LayerNorms, one GeLU on T x I.
Error: the ops' errors (nn/, approx/) propagated through the layers; measured in tests/models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..approx import exp as approx_exp
from ..approx import poly
from ..approx.profile import ApproxProfile
from ..approx.reciprocal import reciprocal
from ..nn import activations
from ..party import Party
from ..protocols import b2a, compare
from ..shares import AShare, add
from .blocks import AttentionBlock, Dense, Table, Weight, attention, dense, embed, normalize, query_scale
from .checkpoint import ModelConfig
from .trace import op

MEAN_BOUND_BITS = 12  # |pooled mean| < 2^12


def owner_params(cfg: ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Owner side: the checkpoint's parameters with 1/sqrt(D) folded into every query weight and bias."""
    out = dict(params)
    s = query_scale(cfg.head_dim)
    for n in range(cfg.n_layers):
        for kind in ("weight", "bias"):
            name = f"encoder.layer.{n}.attention.self.query.{kind}"
            out[name] = params[name].to(torch.float64) * s
    return out


@dataclass(frozen=True)
class _Layer:
    attn: AttentionBlock
    ln1: tuple[Weight, Weight]
    fc1: Dense
    fc2: Dense
    ln2: tuple[Weight, Weight]


class SecureBert:
    """A BERT encoder on one party's weight shares (keyed by the checkpoint's names, as `weights.receive` gives),
    or on public ring weights (open models: `weights.encode_public`)."""

    def __init__(self, cfg: ModelConfig, shares: dict[str, Weight], profile: ApproxProfile, *,
                 norm_shift_bits: int = 0) -> None:
        """Consumes `shares` (entries are popped as they are prepared, so peak memory stays ~ one copy);
        `norm_shift_bits` > 0 widens the LayerNorms' domain (blocks.normalize)."""
        if cfg.arch != "bert":
            raise ValueError(f"SecureBert needs a bert config, got {cfg.arch}")
        self.cfg, self.profile, self.norm_shift_bits = cfg, profile, norm_shift_bits
        w = shares
        self.word = Table.from_share(w.pop("embeddings.word_embeddings.weight"))
        self.position = w.pop("embeddings.position_embeddings.weight")
        self.token_type = w.pop("embeddings.token_type_embeddings.weight")
        self.emb_ln = (w.pop("embeddings.LayerNorm.weight"), w.pop("embeddings.LayerNorm.bias"))
        self.layers = [self._layer(w, f"encoder.layer.{n}") for n in range(cfg.n_layers)]
        self.pooler = self._dense(w, "pooler.dense") if "pooler.dense.weight" in w else None
        self.classifier = self._dense(w, "classifier") if "classifier.weight" in w else None

    @staticmethod
    def _dense(w: dict[str, Weight], prefix: str) -> Dense:
        return Dense.from_share(w.pop(f"{prefix}.weight"), w.pop(f"{prefix}.bias"), out_in=True)

    def _layer(self, w: dict[str, Weight], p: str) -> _Layer:
        c = self.cfg
        qkv = Dense.fuse([self._dense(w, f"{p}.attention.self.{s}") for s in ("query", "key", "value")])
        attn = AttentionBlock(qkv, self._dense(w, f"{p}.attention.output.dense"), c.n_heads, c.n_heads, c.head_dim)
        ln1 = (w.pop(f"{p}.attention.output.LayerNorm.weight"), w.pop(f"{p}.attention.output.LayerNorm.bias"))
        ln2 = (w.pop(f"{p}.output.LayerNorm.weight"), w.pop(f"{p}.output.LayerNorm.bias"))
        return _Layer(attn, ln1, self._dense(w, f"{p}.intermediate.dense"), self._dense(w, f"{p}.output.dense"), ln2)

    def _ln(self, party: Party, x: AShare, gb: tuple[Weight, Weight]) -> AShare:
        with op(party, "layernorm"):
            return normalize(party, x, gb[0], gb[1], self.profile, eps=self.cfg.norm_eps, center=True,
                             shift_bits=self.norm_shift_bits)

    def embeddings(self, party: Party, onehot: AShare, token_type_ids: torch.Tensor | None = None) -> AShare:
        """LayerNorm(one-hot @ word + position + token type) -> (B, T, C)."""
        b, t = onehot.shape[0], onehot.shape[1]
        if t > self.cfg.max_positions:
            raise ValueError(f"sequence length {t} exceeds max_positions {self.cfg.max_positions}")
        types = torch.zeros(b, t, dtype=torch.int64) if token_type_ids is None else token_type_ids.long()
        with op(party, "embed"):
            x = embed(party, onehot, self.word)  # (B, T, C)
            x = add(add(x, self.position[: t]), self.token_type[types.to(x.device)])
        return self._ln(party, x, self.emb_ln)

    def hidden(self, party: Party, onehot: AShare, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> AShare:
        """Last hidden states (B, T, C); attention_mask (B, T) public, 1 for real tokens."""
        x = self.embeddings(party, onehot, token_type_ids)
        for layer in self.layers:
            a = attention(party, x, layer.attn, self.profile, causal=False, key_mask=attention_mask)
            x = self._ln(party, x + a, layer.ln1)
            with op(party, "mlp.fc1"):
                hmid = dense(party, x, layer.fc1)  # (B, T, I)
            with op(party, "mlp.gelu"):
                hmid = activations.gelu(party, hmid, self.profile)
            with op(party, "mlp.fc2"):
                out = dense(party, hmid, layer.fc2)
            x = self._ln(party, x + out, layer.ln2)
        return x

    def mean_pool(self, party: Party, hidden: AShare, attention_mask: torch.Tensor | None = None) -> AShare:
        """Mean of the hidden states over real tokens (B, T, C) -> (B, C): one truncation."""
        b, t = hidden.shape[0], hidden.shape[1]
        with op(party, "pool"):
            m = torch.ones(b, t, dtype=torch.int64) if attention_mask is None else attention_mask.long()
            m = m.to(hidden.device)
            total = hidden.mul_public(m[..., None]).sum(1)  # (B, C)
            g = 61 - party.fxp.frac_bits - MEAN_BOUND_BITS
            inv = torch.round(2.0 ** g / m.sum(1).clamp(min=1).to(torch.float64)).to(torch.int64)[:, None]  # (B, 1)
            return poly.truncate_terms(party, [poly.lifted(total) * inv], g)[0]

    def sentence_embedding(self, party: Party, onehot: AShare, attention_mask: torch.Tensor | None = None
                           ) -> AShare:
        """Mean-pooled hidden states (B, C) (the client L2-normalises after opening)."""
        return self.mean_pool(party, self.hidden(party, onehot, attention_mask), attention_mask)

    def classify(self, party: Party, onehot: AShare, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> AShare:
        """Sequence-classification logits (B, num_labels): classifier(tanh(pooler(h[:, 0])))."""
        if self.pooler is None or self.classifier is None:
            raise ValueError("this BERT has no pooler/classifier weights")
        h = self.hidden(party, onehot, attention_mask, token_type_ids)[:, 0]  # (B, C)
        with op(party, "head"):
            pooled = tanh(party, dense(party, h, self.pooler), self.profile)
            return dense(party, pooled, self.classifier)


def tanh(party: Party, x: AShare, profile: ApproxProfile) -> AShare:
    """tanh(x) = sign(x) (2 / (1 + e^(-2|x|)) - 1): msb, two bit products, exp and a reciprocal on [1, 2].

    Error: about 2x the reciprocal's relative error plus 2 e^(-2|x|) times exp's absolute error (accurate: ~1e-5).
    """
    neg = compare.msb(party, x)  # [x < 0]
    absx = x - b2a.mul_bit(party, neg, x).lshift(1)
    e = approx_exp.exp_neg(party, -absx.lshift(1), profile)  # e^(-2|x|) in (0, 1]
    r = reciprocal(party, e.add_public(party.fxp.encode(1.0).item()), profile, lo=0, hi=2)  # 1 / (1 + e)
    t = r.lshift(1).add_public(-party.fxp.encode(1.0).item())  # tanh(|x|)
    return t - b2a.mul_bit(party, neg, t).lshift(1)
