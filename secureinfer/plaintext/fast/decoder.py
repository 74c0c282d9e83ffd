"""FastDecoder: the plaintext GPT-2 / LLaMA decoder run the way torch runs fast, configured by a PlaintextStrategy.

The model is the shared definition (secureinfer.models.arch: the one the secure models and the float64 references
run) on the torch backend (torch_ops); what changes is how it executes:
  precision   weights converted once to fp64 / fp32 / bf16 / fp16 (RMSNorm statistics in fp32 for half types);
  int8        weight-only, per-output-channel scales, dequantized inside each block matmul (weights.py);
  fused       q|k|v and gate|up are single matmuls; attention is torch's scaled_dot_product_attention;
  GQA         queries regrouped to (B, KV, T*g, d) so each KV head is read once (no repeat of keys and values);
  last rows   a prefill runs the last block's queries, MLP, final norm and head on each row's last real position;
  KV cache    slots (cache.py): static (preallocated max_len) or dynamic (torch.cat growth), per-row positions;
  graphs      with cuda_graphs, one decode step per batch bucket is captured at construction (graphs.py);
  compile     torch.compile of the decode step (mode "reduce-overhead" on CUDA without our own graphs, default
              mode otherwise; with cuda_graphs the compiled step is what gets captured);
  speculation early_exit (the first draft_layers layers draft) or draft (a separate model) propose tokens, the full
              model verifies them in one forward; greedy output unchanged (the last section of this file; runs without graphs).
Rows of different prompt lengths are right-padded and prefilled in one forward with per-row positions: a row's
padding lands past its length, where it is never attended (cache.py), and its first token comes from its own last
real position. Decoding then keeps one position per row, so ragged rows decode together exactly.
The decode step keeps its inputs in device buffers (token ids, positions) and updates them itself (next token,
position + 1), so a generation loop is "replay, read the token" with no host work between steps.
Not thread-safe: one caller at a time (BatchingWorker serializes concurrent requests onto one thread).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from secureinfer.models.arch import decoder_logits
from secureinfer.models.config import ModelConfig
from secureinfer.strategy import PlaintextStrategy, StrategyError

from ..torch_ops import TorchOps
from .cache import KVSlots
from .graphs import StepGraphs, default_buckets
from .weights import DTYPES, pack, rope_tables

Prompts = torch.Tensor | Sequence[Sequence[int] | torch.Tensor]


def finish_eos(tokens: torch.Tensor, eos: Sequence[int]) -> torch.Tensor:
    """greedy_generate's EOS semantics on (B, n) tokens: finished rows repeat their EOS; stop once all finished."""
    if not eos or tokens.shape[1] == 0:
        return tokens
    is_eos = torch.isin(tokens, torch.tensor(list(eos), dtype=tokens.dtype, device=tokens.device))  # (B, n)
    has = is_eos.any(1)  # (B,)
    first = is_eos.int().argmax(1)  # (B,) first EOS (0 where none)
    after = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] > first[:, None]) & has[:, None]
    tokens = torch.where(after, tokens.gather(1, first[:, None]), tokens)
    n = int(first.max()) + 1 if bool(has.all()) else tokens.shape[1]
    return tokens[:, :n]


class FastDecoder:
    """A GPT-2 or LLaMA decoder for fast plaintext generation; see the module docstring for what each knob does."""

    def __init__(self, cfg: ModelConfig, params: dict[str, torch.Tensor],
                 strategy: PlaintextStrategy | None = None, *, max_batch: int = 32, max_len: int | None = None,
                 graph_batch_sizes: Sequence[int] | None = None, draft_layers: int | None = None,
                 draft: "FastDecoder | None" = None, check_every: int | None = None) -> None:
        strategy = PlaintextStrategy() if strategy is None else strategy
        if not isinstance(strategy, PlaintextStrategy):
            raise StrategyError(f"FastDecoder runs plaintext strategies, got {type(strategy).__name__}")
        if cfg.arch not in ("gpt2", "llama"):
            raise ValueError(f"the fast decoder runs GPT-2 and LLaMA decoders, not {cfg.arch}")
        self.cfg, self.strategy = cfg, strategy
        self.device = torch.device(strategy.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise StrategyError(f"strategy {strategy.name} needs CUDA, which this machine does not have")
        if strategy.compile and not strategy.static_cache:
            raise StrategyError("compile needs static_cache here (a growing cache recompiles every step)")
        self.dtype = DTYPES[strategy.precision]
        self.max_len = min(cfg.max_positions, 1024) if max_len is None else int(max_len)
        if not 1 <= self.max_len <= cfg.max_positions:
            raise ValueError(f"max_len must be in [1, {cfg.max_positions}] (the model's max_positions)")
        if strategy.speculation == "draft":
            if draft is None:
                raise StrategyError("speculation='draft' needs the draft model: FastDecoder(..., draft=FastDecoder("
                                    "small_cfg, small_params, strategy_without_speculation))")
            if draft.cfg.vocab_size != cfg.vocab_size or draft.strategy.speculation != "none":
                raise StrategyError("the draft model must share the vocabulary and must not speculate itself")
            if draft.max_len < self.max_len or draft.device != self.device:
                raise StrategyError("the draft model must be on the same device, with max_len at least this one's")
        self.draft = draft if strategy.speculation == "draft" else None
        self.max_batch = int(max_batch)
        self.draft_layers = max(1, cfg.n_layers // 2) if draft_layers is None else int(draft_layers)
        if not 1 <= self.draft_layers <= cfg.n_layers:
            raise ValueError(f"draft_layers must be in [1, {cfg.n_layers}]")
        self.check_every = (8 if self.device.type == "cuda" else 1) if check_every is None else int(check_every)
        self.weights = pack(cfg, params, self.dtype, self.device, int8=strategy.quantization == "int8")
        self._model = decoder_logits(cfg)
        self._rope = rope_tables(cfg, self.max_len, self.dtype, self.device) if cfg.arch == "llama" else None
        self._arange = torch.arange(self.max_len, device=self.device)
        self.cache: KVSlots | None = None
        self._ids = self._pos = None  # step inputs (slots, 1) int64, updated by the step itself
        self._decode = self._decode_impl
        if strategy.compile:
            mode = "reduce-overhead" if self.device.type == "cuda" and not strategy.cuda_graphs else None
            self._decode = torch.compile(self._decode_impl, mode=mode, dynamic=False)
        self.last_speculation: dict[str, int] | None = None  # rounds / drafted / accepted of the last generate
        self.graphs: StepGraphs | None = None
        if strategy.cuda_graphs:
            self.reset(self.max_batch)
            sizes = list(graph_batch_sizes) if graph_batch_sizes else default_buckets(self.max_batch)
            if max(sizes) > self.max_batch:
                raise ValueError(f"graph batch sizes {sizes} exceed max_batch={self.max_batch}")
            with torch.no_grad():
                self.graphs = StepGraphs(self._decode, sizes, self.max_len, self.device)
            self.reset(self.max_batch)

    # ------------------------------------------------------------------------------------------------ forward

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, cache: KVSlots, rows: slice | torch.Tensor,
                 key_len: int, n_layers: int, out_index: torch.Tensor | None) -> torch.Tensor:
        """Logits for tokens ids (B, T) at positions pos (B, T) of cache `rows`: (B, T, V), or (B, 1, V) at
        out_index (B,). The model is the shared definition on the torch backend."""

        def kv(layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return cache.write_read(layer, rows, pos, k, v, key_len)  # (B, KV, key_len, d)

        ops = TorchOps(pos, key_len, kv, out_index, self._rope)
        return self._model(ops, self.cfg, self.weights, ids, last_only=out_index is not None, n_layers=n_layers)

    def _decode_impl(self, g: int, key_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step of slots 0..g-1 from the step buffers; returns (logits (g, V), next tokens (g,))."""
        ids = self._ids[:g]  # (g, 1)
        pos = self._pos[:g].clamp(max=key_len - 1)  # (g, 1): parked rows write inside their own free slot
        logits = self._forward(ids, pos, self.cache, slice(0, g), key_len, self.cfg.n_layers, None)[:, 0]  # (g, V)
        nxt = logits.argmax(-1)  # (g,)
        self._ids[:g, 0].copy_(nxt)
        self._pos[:g].add_(1)
        return logits, nxt

    # ------------------------------------------------------------------------------------------------ state

    def reset(self, batch: int) -> None:
        """Start `batch` fresh sequences (slots 0..batch-1): static caches are reused, dynamic ones made anew."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if self.graphs is not None and batch > self.max_batch:
            raise ValueError(f"batch {batch} exceeds max_batch={self.max_batch} (the captured graphs' slots)")
        c = self.cfg
        if self.strategy.static_cache and self.cache is not None and self.cache.slots >= batch:
            self.cache.reset()
        else:
            slots = max(batch, self.max_batch) if self.strategy.cuda_graphs else batch
            self.cache = KVSlots(c.n_layers, slots, c.n_kv_heads, c.head_dim, self.max_len, self.dtype,
                                 self.device, static=self.strategy.static_cache)
        if self._ids is None or self._ids.shape[0] < self.cache.slots:
            self._ids = torch.zeros(self.cache.slots, 1, dtype=torch.int64, device=self.device)
            self._pos = torch.zeros_like(self._ids)

    def _check_ids(self, ids: torch.Tensor) -> None:
        """Token ids must be inside the vocabulary."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {self.cfg.vocab_size})")

    def pad(self, prompts: Prompts) -> tuple[torch.Tensor, list[int]]:
        """Right-pad prompts into ids (B, T) on the device; returns them with each row's real length."""
        if isinstance(prompts, torch.Tensor):
            if prompts.dim() != 2 or prompts.shape[1] == 0 or prompts.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"prompt_ids must be a non-empty (B, T) integer tensor, got "
                                 f"{tuple(prompts.shape)} {prompts.dtype}")
            ids = prompts.to(self.device, torch.int64)
            lengths = [ids.shape[1]] * ids.shape[0]
        else:
            rows = [torch.as_tensor(p, dtype=torch.int64).reshape(-1) for p in prompts]
            if not rows or min(r.numel() for r in rows) == 0:
                raise ValueError("prompts must be a non-empty list of non-empty token sequences")
            lengths = [r.numel() for r in rows]
            ids = torch.zeros(len(rows), max(lengths), dtype=torch.int64)
            for i, r in enumerate(rows):
                ids[i, :r.numel()] = r
            ids = ids.to(self.device)
        self._check_ids(ids)
        return ids, lengths

    # ------------------------------------------------------------------------------------------------ entry points

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of a whole sequence in the compute dtype, on a scratch cache (no decoder state)."""
        ids, _ = self.pad(ids)
        b, t = ids.shape
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_len={self.max_len}")
        c = self.cfg
        scratch = KVSlots(c.n_layers, b, c.n_kv_heads, c.head_dim, t, self.dtype, self.device, static=True)
        pos = self._arange[:t].expand(b, t)
        return self._forward(ids, pos, scratch, slice(0, b), t, c.n_layers, None)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, rows: slice | torch.Tensor | Sequence[int] | None = None,
                lengths: Sequence[int] | None = None) -> torch.Tensor:
        """Start sequences ids (B, T) (right-padded to `lengths`) in cache `rows`; logits (B, V) at each last token."""
        b, t = ids.shape
        self._check_ids(ids)
        lengths = [t] * b if lengths is None else list(lengths)
        if len(lengths) != b or min(lengths) < 1 or max(lengths) > t:
            raise ValueError("lengths must give each row's real length in [1, T]")
        if self.cache is None:
            self.reset(b)
        rows, slots = self._rows(rows, b)
        self.cache.ensure(t)
        pos = self._arange[:t].expand(b, t)  # (B, T)
        last = torch.tensor(lengths, device=self.device) - 1  # (B,)
        logits = self._forward(ids, pos, self.cache, rows, t, self.cfg.n_layers, last)[:, 0]  # (B, V)
        for s, n in zip(slots, lengths):
            self.cache.lengths[s] = n
        return logits

    @torch.no_grad()
    def extend(self, ids: torch.Tensor, rows: slice | None = None, n_layers: int | None = None) -> torch.Tensor:
        """Append ids (B, T) after each row's cached positions; logits (B, T, V) of the first n_layers (early exit)."""
        b, t = ids.shape
        rows, slots = self._rows(rows, b)
        base = [self.cache.lengths[s] for s in slots]
        need = max(base) + t
        self.cache.ensure(need)
        pos = torch.tensor(base, device=self.device)[:, None] + self._arange[:t]  # (B, T)
        logits = self._forward(ids, pos, self.cache, rows, need, n_layers or self.cfg.n_layers, None)
        for s in slots:
            self.cache.lengths[s] += t
        return logits

    @torch.no_grad()
    def decode_step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,) to slots 0..B-1 at their next positions; logits (B, V) (a copy)."""
        b = tokens.shape[0]
        self.load_rows(list(range(b)), tokens)
        logits, _ = self.step_rows(list(range(b)))
        return logits[:b].clone()

    def load_rows(self, slots: Sequence[int], tokens: torch.Tensor) -> None:
        """Set the next step's input token (n,) of each slot, at the slot's next position."""
        idx = torch.tensor(list(slots), device=self.device)
        self._ids[idx, 0] = tokens.to(self.device, torch.int64).reshape(-1)
        self._pos[idx, 0] = torch.tensor([self.cache.lengths[s] for s in slots], device=self.device)

    @torch.no_grad()
    def step_rows(self, active: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step of the active slots (graph replay or eager); (logits (G, V), next (G,)) over slots
        0..G-1, G >= max(active)+1; rows not active are padding. The step buffers advance themselves."""
        need_rows = max(active) + 1
        if self.graphs is not None:
            out = self.graphs.run(self.graphs.bucket(need_rows))
        else:
            if self.strategy.static_cache and (self.strategy.compile or self.device.type == "cuda"):
                key_len = self.max_len  # fixed shapes: one compilation, and on CUDA the graphs' very kernels
            else:
                key_len = max(self.cache.lengths[a] for a in active) + 1
                self.cache.ensure(key_len)
            out = self._decode(need_rows, key_len)
        for a in active:
            self.cache.lengths[a] += 1
            if self.cache.lengths[a] > self.max_len:
                raise ValueError(f"slot {a} ran past max_len={self.max_len}")
        return out

    def _rows(self, rows: slice | torch.Tensor | Sequence[int] | None, b: int) -> tuple[slice | torch.Tensor,
                                                                                        list[int]]:
        """Normalize a rows argument to a slice or a device index tensor, plus the slot numbers."""
        if rows is None:
            rows = slice(0, b)
        if isinstance(rows, slice):
            slots = list(range(*rows.indices(self.cache.slots)))
        else:
            slots = [int(s) for s in (rows.tolist() if isinstance(rows, torch.Tensor) else rows)]
            if len(set(slots)) != len(slots):
                raise ValueError("rows must name distinct slots")
            contiguous = slots == list(range(slots[0], slots[0] + len(slots))) if slots else False
            rows = slice(slots[0], slots[0] + len(slots)) if contiguous else torch.tensor(slots, device=self.device)
        if len(slots) != b or max(slots) >= self.cache.slots:
            raise ValueError(f"rows name {len(slots)} slots of {self.cache.slots} for a batch of {b}")
        return rows, slots

    # ------------------------------------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, prompt_ids: Prompts, max_new_tokens: int,
                 eos_token_ids: Sequence[int] | None = None) -> torch.Tensor:
        """Greedy decoding: new token ids (B, <= max_new_tokens) on the CPU, with greedy_generate's EOS semantics.

        prompt_ids is a (B, T) tensor or a list of rows of different lengths (right-padded, see the module
        docstring); with speculation the output is the same, drafted by the first draft_layers layers
        ("early_exit") or by the draft model ("draft").
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        eos = tuple(self.cfg.eos_token_ids if eos_token_ids is None else eos_token_ids)
        ids, lengths = self.pad(prompt_ids)
        if max(lengths) + max_new_tokens - 1 > self.max_len:
            raise ValueError(f"prompt of {max(lengths)} + {max_new_tokens} new tokens exceeds max_len={self.max_len}")
        b = ids.shape[0]
        self.reset(b)
        if self.strategy.speculation != "none":
            return speculative_generate(self, ids, lengths, max_new_tokens, eos)
        first = self.prefill(ids, slice(0, b), lengths).argmax(-1)  # (B,)
        out = [first]
        rows = list(range(b))
        self.load_rows(rows, first)
        eos_t = torch.tensor(list(eos), dtype=torch.int64, device=self.device)
        done = torch.isin(first, eos_t)  # (B,)
        for i in range(1, max_new_tokens):
            if i % self.check_every == 0 and bool(done.all()):
                break
            _, nxt = self.step_rows(rows)
            tok = nxt[:b].clone()  # the graph's output buffer is overwritten by the next replay
            out.append(tok)
            done |= torch.isin(tok, eos_t)
        return finish_eos(torch.stack(out, dim=1).cpu(), eos)


# ---------------------------------------------------------------------------------------------------- speculative decoding
# Speculative greedy decoding: a cheap drafter proposes tokens, the full model verifies them, output unchanged.
#
# One round, for every row at once (rows keep their own positions): the row's pending token x sits at position p.
#   draft    n greedy steps of the drafter from x: d_1..d_n.
#              early_exit  the model's first k layers + final norm + head; its layers are the model's own, so it reads
#                          and writes the model's KV cache for layers < k.
#              draft       a separate smaller model with its own cache. Its cache is valid through p-2 at the start of a
#                          round (shown below), so it first takes [token at p-1, x] at positions p-1, p (rewriting p-1
#                          with the value it already held), then steps on its own drafts.
#   verify   one forward of the full model over [x, d_1..d_n] at positions p..p+n: its greedy choices t_1..t_{n+1}
#            (t_i follows d_{i-1}), written to every layer of the cache (overwriting any draft entries).
#   accept   m = the longest prefix with d_i == t_i; emit d_1..d_m, t_{m+1}; the row now holds positions 0..p+m and
#            its pending token is t_{m+1} at p' = p+m+1. Positions past p+m hold rejected entries, never attended.
#            The draft model wrote x, d_1..d_{n-1} at p..p+n-1, of which those through p+min(m, n-1) >= p'-2 are right.
# Every emitted token is the full model's greedy choice given the tokens before it (t_i is computed from the accepted
# prefix), so the output equals plain greedy decoding; only the number of full-model forwards changes.
# Finished rows stay in the batch but are frozen (their length is not advanced), so positions stay in range.


def _drafter(dec: FastDecoder, rows: slice, base: list[int], prev: torch.Tensor,
             cur: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The first draft token (B,) from the pending tokens, and the function that drafts one more."""
    if dec.draft is None:
        def step(t: torch.Tensor) -> torch.Tensor:
            return dec.extend(t[:, None], rows, n_layers=dec.draft_layers)[:, -1].argmax(-1)

        return step(cur), step
    draft = dec.draft
    draft.cache.lengths[:len(base)] = [p - 1 for p in base]
    first = draft.extend(torch.stack([prev, cur], dim=1), rows)[:, -1].argmax(-1)  # (B,)
    return first, lambda t: draft.extend(t[:, None], rows)[:, -1].argmax(-1)


def speculative_generate(dec: FastDecoder, ids: torch.Tensor, lengths: list[int], max_new_tokens: int,
                         eos: Sequence[int]) -> torch.Tensor:
    """Greedy tokens (B, <= max_new_tokens) on the CPU via speculation (the same tokens as plain greedy)."""
    b = ids.shape[0]
    rows = slice(0, b)
    eos_set = set(eos)
    cur = dec.prefill(ids, rows, lengths).argmax(-1)  # (B,) pending tokens
    prev = ids[torch.arange(b, device=ids.device), torch.tensor(lengths, device=ids.device) - 1]  # (B,) at p-1
    if dec.draft is not None:
        dec.draft.reset(b)
        dec.draft.prefill(ids, rows, lengths)
    outs = [[t] for t in cur.tolist()]
    done = [t in eos_set or max_new_tokens == 1 for t in cur.tolist()]
    stats = {"rounds": 0, "drafted": 0, "accepted": 0}
    while not all(done):
        base = dec.cache.lengths[:b]
        left = max(max_new_tokens - len(o) for o, d in zip(outs, done) if not d)
        n = max(0, min(dec.strategy.speculation_tokens, left - 1, dec.max_len - 1 - max(base)))
        drafts: list[torch.Tensor] = []
        if n:
            x, step = _drafter(dec, rows, base, prev, cur)
            drafts.append(x)
            for _ in range(n - 1):
                drafts.append(step(drafts[-1]))
        dec.cache.lengths[:b] = base
        verify = dec.extend(torch.stack([cur, *drafts], dim=1), rows).argmax(-1)  # (B, n+1)
        d = torch.stack(drafts, dim=1) if n else verify[:, :0]  # (B, n)
        agree = (d == verify[:, :n]).int().cumprod(dim=1).sum(dim=1) if n else torch.zeros_like(cur)  # (B,) m
        accepted, vhost, dhost = agree.tolist(), verify.tolist(), d.tolist()
        stats["rounds"] += 1
        for r in range(b):
            if done[r]:
                dec.cache.lengths[r] = base[r]
                continue
            m = accepted[r]
            stats["drafted"] += n
            stats["accepted"] += m
            for tok in dhost[r][:m] + [vhost[r][m]]:
                outs[r].append(tok)
                if tok in eos_set or len(outs[r]) == max_new_tokens:
                    done[r] = True
                    break
            dec.cache.lengths[r] = base[r] + m + 1 if not done[r] else base[r]
        last_draft = d.gather(1, (agree - 1).clamp(min=0)[:, None])[:, 0] if n else cur  # (B,) d_m
        prev = torch.where(agree > 0, last_draft, cur)  # the token now at p'-1
        cur = verify.gather(1, agree[:, None])[:, 0]  # (B,) t_{m+1}
    dec.last_speculation = stats
    width = max(len(o) for o in outs)
    padded = torch.tensor([o + [o[-1]] * (width - len(o)) for o in outs], dtype=torch.int64)  # (B, n)
    return finish_eos(padded, eos)
