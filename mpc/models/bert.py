"""Secure BERT encoder (BertModel names): secureinfer.models.arch's BERT definition on the secure backend.

Forward on secret one-hot rows (B, T, V) with a public padding mask and token types (arch.bert_hidden;
secureinfer.plaintext.reference.bert_forward runs the same definition in float64):
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
Error: the ops' errors (nn/, approx/) propagated through the layers; measured in tests/mpc/models.
"""

from __future__ import annotations

import torch

from secureinfer.models import arch
from secureinfer.models.config import ModelConfig

from ..approx.profile import ApproxProfile
from ..party import Party
from ..shares import AShare
from .blocks import Dense, Weight, query_scale
from .secure_ops import MEAN_BOUND_BITS, SecureBuilder, SecureOps, tanh

__all__ = ["MEAN_BOUND_BITS", "SecureBert", "owner_params", "tanh"]


def owner_params(cfg: ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Owner side: the checkpoint's parameters with 1/sqrt(D) folded into every query weight and bias."""
    out = dict(params)
    s = query_scale(cfg.head_dim)
    for n in range(cfg.n_layers):
        for kind in ("weight", "bias"):
            name = f"encoder.layer.{n}.attention.self.query.{kind}"
            out[name] = params[name].to(torch.float64) * s
    return out


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
        self.weights = arch.load_bert(cfg, shares, SecureBuilder(), consume=True)

    @property
    def classifier(self) -> Dense | None:
        """The classification head (None for a bare encoder)."""
        return self.weights.classifier

    def _ops(self, party: Party) -> SecureOps:
        return SecureOps(party, self.profile, norm_shift_bits=self.norm_shift_bits)

    def hidden(self, party: Party, onehot: AShare, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> AShare:
        """Last hidden states (B, T, C); attention_mask (B, T) public, 1 for real tokens."""
        return arch.bert_hidden(self._ops(party), self.cfg, self.weights, onehot, attention_mask, token_type_ids)

    def mean_pool(self, party: Party, hidden: AShare, attention_mask: torch.Tensor | None = None) -> AShare:
        """Mean of the hidden states over real tokens (B, T, C) -> (B, C): one truncation."""
        return self._ops(party).mean_pool(hidden, attention_mask)

    def sentence_embedding(self, party: Party, onehot: AShare, attention_mask: torch.Tensor | None = None
                           ) -> AShare:
        """Mean-pooled hidden states (B, C) (the client L2-normalises after opening)."""
        return arch.bert_pooled(self._ops(party), self.cfg, self.weights, onehot, attention_mask)

    def classify(self, party: Party, onehot: AShare, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> AShare:
        """Sequence-classification logits (B, num_labels): classifier(tanh(pooler(h[:, 0])))."""
        return arch.bert_classify(self._ops(party), self.cfg, self.weights, onehot, attention_mask, token_type_ids)
