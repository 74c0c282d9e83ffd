"""A fixed decode budget over real node processes: `Client.generate(..., fixed_steps=True)` makes the nodes run every
step of the budget although the generation ended at its first token, and hands out the same result."""

from __future__ import annotations

import dataclasses
import json

import torch

from secureinfer.plaintext import reference as plaintext

from .conftest import random_ids


def _steps_served(network, node_id: str) -> list[int]:
    """The rounds of each inference session a node reported done, in order (from its JSON log)."""
    rounds = []
    for line in network.log_path(node_id).read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("msg") == "session done" and entry.get("task") != "publish":
            rounds.append(int(entry["rounds"]))
    return rounds


def test_fixed_steps_run_the_whole_budget_and_return_the_same_tokens(network_factory, tiny_models):
    cfg, params = tiny_models["gpt2"]
    prompt = random_ids(1, 4, seed=11)
    first = int(plaintext.greedy_generate(cfg, params, prompt, 1, eos_token_ids=())[0, 0])
    cfg = dataclasses.replace(cfg, eos_token_ids=(first,))  # the generation ends at its first token
    network = network_factory(3)
    network.owner().publish("tiny-gpt2", cfg, params)
    client = network.client(timeout_s=300.0)
    try:
        early = client.generate("tiny-gpt2", prompt, 4)
        fixed = client.generate("tiny-gpt2", prompt, 4, fixed_steps=True)
        streamed = list(client.stream("tiny-gpt2", prompt, 4, fixed_steps=True))
    finally:
        client.close()
    assert early.tokens.tolist() == fixed.tokens.tolist() == [[first]]
    assert fixed.logits.shape == early.logits.shape == (1, 1, cfg.vocab_size)
    assert torch.allclose(fixed.logits, early.logits, atol=3e-3)
    assert [t.tolist() for t in streamed] == [[first]]
    early_rounds, fixed_rounds, streamed_rounds = _steps_served(network, "node-0")[-3:]
    print(f"rounds served: ended early {early_rounds}, fixed budget {fixed_rounds}, streamed {streamed_rounds}")
    assert fixed_rounds == streamed_rounds > early_rounds  # three more decode steps at the nodes
