"""Speculative greedy decoding: a cheap drafter proposes tokens, the full model verifies them, output unchanged.

One round, for every row at once (rows keep their own positions): the row's pending token x sits at position p.
  draft    n greedy steps of the drafter from x: d_1..d_n.
             early_exit  the model's first k layers + final norm + head; its layers are the model's own, so it reads
                         and writes the model's KV cache for layers < k.
             draft       a separate smaller model with its own cache. Its cache is valid through p-2 at the start of a
                         round (shown below), so it first takes [token at p-1, x] at positions p-1, p (rewriting p-1
                         with the value it already held), then steps on its own drafts.
  verify   one forward of the full model over [x, d_1..d_n] at positions p..p+n: its greedy choices t_1..t_{n+1}
           (t_i follows d_{i-1}), written to every layer of the cache (overwriting any draft entries).
  accept   m = the longest prefix with d_i == t_i; emit d_1..d_m, t_{m+1}; the row now holds positions 0..p+m and
           its pending token is t_{m+1} at p' = p+m+1. Positions past p+m hold rejected entries, never attended.
           The draft model wrote x, d_1..d_{n-1} at p..p+n-1, of which those through p+min(m, n-1) >= p'-2 are right.
Every emitted token is the full model's greedy choice given the tokens before it (t_i is computed from the accepted
prefix), so the output equals plain greedy decoding; only the number of full-model forwards changes.
Finished rows stay in the batch but are frozen (their length is not advanced), so positions stay in range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

if TYPE_CHECKING:
    from .decoder import FastDecoder


def _drafter(dec: "FastDecoder", rows: slice, base: list[int], prev: torch.Tensor,
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


def speculative_generate(dec: "FastDecoder", ids: torch.Tensor, lengths: list[int], max_new_tokens: int,
                         eos: Sequence[int]) -> torch.Tensor:
    """Greedy tokens (B, <= max_new_tokens) on the CPU via speculation (the same tokens as plain greedy)."""
    from .decoder import finish_eos

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
