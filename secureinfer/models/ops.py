"""The backend interface the model definitions (arch.py) are written against: one definition, two executions.

arch.py spells out BERT, GPT-2 and LLaMA once: which parameters form which layer, the layer loop, the order of ops,
the residuals, which norm, which activation, which attention variant. It never touches a tensor's values itself;
every value-level step goes through a backend, which comes in two halves:

WeightBuilder (load time) turns checkpoint tensors into the backend's weight objects:
  linear(weight, bias, out_in)  one linear layer; weight (in, out), or nn.Linear's (out, in) when `out_in`
  fuse(layers)                  several linears of one input side by side (q|k|v, gate|up): one product for all
  table(t)                      a (V, C) table read by one-hot rows or ids (embeddings) and by the LM head
  param(t)                      any other tensor (norm gains and biases, position and token-type tables)
  attention(qkv, out, n_heads, n_kv_heads, head_dim)   one attention block (fused q|k|v, output projection)
ModelOps (run time), bound to one forward (its KV cache, positions and, for the secure backend, its party):
  positions(t)                  the new tokens' public positions, in the backend's own form (only passed back)
  rotary(positions, d, theta)   the rotary tables of those positions
  embed(tokens, table, rows)    token rows of `table`, plus table[index] for each (table, index) of `rows`
  norm(x, norm)                 LayerNorm or RMSNorm as the arch.Norm says
  dense(x, layer, name)         x @ W + b; `name` is the trace section (None: none)
  act(x, kind, name)            the named activation: gelu (erf), gelu_tanh, silu, relu
  mul(a, b, name)               elementwise product of two activations (gated MLPs)
  attention(x, blk, layer, causal=, key_mask=, rope=, last_only=)   self-attention, extending the KV cache
  last(x)                       the rows whose outputs are wanted: (B, T, C) -> (B, 1, C)
  lm_head(x, table)             x @ table^T
  mean_pool(x, mask)            mean over the real tokens (B, T, C) -> (B, C)
  tanh(x)
  section(name)                 a context naming the enclosed steps in a trace
Residual additions and slicing use `+` and indexing, which both value types (AShare, torch.Tensor) support.

Backends:
  secure  (secureinfer.mpc.models.secure_ops) values are replicated shares (AShare) of one party; weights are secret shares or public
          ring tensors; every op is blocks.py's, so rounds, bytes and results are those of the hand-written secure
          forwards. Weights come from `owner_params` (the 1/sqrt(D) query scale folded in by the owner).
  torch   (secureinfer.plaintext.torch_ops) values are float tensors of one dtype (float64 for the references, fp32 / bf16 / fp16 for
          serving); the ops are torch's fused kernels (F.linear, F.layer_norm, F.scaled_dot_product_attention,
          F.gelu / F.silu). Weights are the checkpoint's own (the attention applies 1/sqrt(D) itself).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, Sequence

import torch


class WeightBuilder(Protocol):
    """Load-time half of a backend: checkpoint tensors into the backend's weight objects."""

    def linear(self, weight: Any, bias: Any | None, *, out_in: bool) -> Any:
        """One linear layer from a weight (in, out), or (out, in) when `out_in`, and an optional bias."""

    def fuse(self, layers: list[Any]) -> Any:
        """Linears of one input side by side: their outputs concatenated on the last axis."""

    def table(self, t: Any) -> Any:
        """A (V, C) table for embedding lookups and the LM head."""

    def param(self, t: Any) -> Any:
        """Any other parameter (norm gains and biases, position tables)."""

    def attention(self, qkv: Any, out: Any, n_heads: int, n_kv_heads: int, head_dim: int) -> Any:
        """One attention block: fused q|k|v projection, output projection and head counts."""


class ModelOps(Protocol):
    """Run-time half of a backend, bound to one forward; see the module docstring for each op."""

    def positions(self, t: int) -> Any: ...

    def rotary(self, positions: Any, head_dim: int, theta: float) -> Any: ...

    def embed(self, tokens: Any, table: Any, rows: Sequence[tuple[Any, torch.Tensor | Any]] = ()) -> Any: ...

    def norm(self, x: Any, norm: Any) -> Any: ...

    def dense(self, x: Any, layer: Any, name: str | None = None) -> Any: ...

    def act(self, x: Any, kind: str, name: str) -> Any: ...

    def mul(self, a: Any, b: Any, name: str) -> Any: ...

    def attention(self, x: Any, blk: Any, layer: int, *, causal: bool, key_mask: torch.Tensor | None = None,
                  rope: Any = None, last_only: bool = False) -> Any: ...

    def last(self, x: Any) -> Any: ...

    def lm_head(self, x: Any, table: Any) -> Any: ...

    def mean_pool(self, x: Any, mask: torch.Tensor | None) -> Any: ...

    def tanh(self, x: Any) -> Any: ...

    def section(self, name: str) -> AbstractContextManager: ...
