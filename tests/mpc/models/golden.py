"""Golden secure forwards: rounds, bytes and bit-exact outputs of fixed MiniLM and GPT-2 sessions.

Secret randomness is made reproducible for these runs only: every `os.urandom` call and every X25519 key is drawn
from SHA-256 of (thread name, per-thread counter), so each party thread sees the same stream on every run while the
engine's code paths stay exactly those of production. With the randomness fixed, the reconstructed outputs are a
deterministic function of the engine's arithmetic: any change in a protocol, its order of PRG draws or its message
pattern changes the hash. `python -m tests.mpc.models.golden` rewrites `golden_forwards.json` (only after a change that
is meant to alter the engine's arithmetic).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import torch

GOLDEN_PATH = Path(__file__).with_name("golden_forwards.json")


@contextlib.contextmanager
def reproducible_randomness() -> Iterator[None]:
    """Replace the OS randomness and X25519 key generation by per-thread deterministic streams (tests only)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    counters: dict[str, int] = {}
    lock = threading.Lock()

    def draw(n: int) -> bytes:
        name = threading.current_thread().name
        with lock:
            counter = counters.get(name, 0)
            counters[name] = counter + 1
        out, block = b"", 0
        while len(out) < n:
            out += hashlib.sha256(f"{name}|{counter}|{block}".encode()).digest()
            block += 1
        return out[:n]

    class _Keys:
        @staticmethod
        def generate() -> X25519PrivateKey:
            return X25519PrivateKey.from_private_bytes(draw(32))

    from secureinfer.mpc import prg

    with mock.patch("os.urandom", draw), mock.patch.object(prg, "X25519PrivateKey", _Keys):
        yield


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


def _steps(report: Any) -> list[dict[str, Any]]:
    return [{"rounds": s.rounds, "bytes_per_party": list(s.bytes_per_party), "tokens": s.tokens} for s in report.steps]


def minilm_forward() -> dict[str, Any]:
    """all-MiniLM-L6-v2 (real weights), one 128-token sentence embedding, default profile."""
    from secureinfer.mpc.models import session
    from secureinfer.models.checkpoint import load_checkpoint, packaged_checkpoint
    from secureinfer.lab.bench.model import minilm_tokens

    cfg, params = load_checkpoint(packaged_checkpoint("all-MiniLM-L6-v2"), torch.float64)
    ids, mask = minilm_tokens()
    with reproducible_randomness():
        emb, report = session.secure_encode(cfg, params, ids, mask)
    return {"steps": _steps(report), "output_sha256": _digest(emb), "output_head": emb[0, :4].tolist()}


def gpt2_forward() -> dict[str, Any]:
    """GPT-2-base shape (seeded random weights): a 32-token prefill and one decoded token, default profile."""
    from secureinfer.mpc.models import session
    from secureinfer.lab.bench.model import gpt2_base_params

    cfg, params = gpt2_base_params()
    prompt = torch.randint(0, cfg.vocab_size, (1, 32), generator=torch.Generator().manual_seed(1))
    with reproducible_randomness():
        gen, report = session.secure_generate(cfg, params, prompt, 2, eos_token_ids=())
    return {"steps": _steps(report), "output_sha256": _digest(gen.logits), "tokens": gen.tokens[0].tolist(),
            "output_head": gen.logits.flatten()[:4].tolist()}


def profiles() -> dict[str, Any]:
    """Every built-in approximation profile, field by field (the knobs the secure forwards above depend on)."""
    import dataclasses

    from secureinfer.mpc.approx.profile import PROFILES

    return {name: json.loads(json.dumps(dataclasses.asdict(p))) for name, p in sorted(PROFILES.items())}


FORWARDS = {"minilm": minilm_forward, "gpt2": gpt2_forward}


def record() -> dict[str, Any]:
    return {"profiles": profiles(), **{name: run() for name, run in FORWARDS.items()}}


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    figures = record()
    GOLDEN_PATH.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
