"""Batched secure steps (mpc/models/batching.py): several requests' steps stacked into one forward and split back.

Each request's part of a batched forward must be its own result: equal to plaintext within the secret-weights tests'
tolerances (TOL; fixed point with randomized truncations, so never bit-exact), BERT's per-position hidden states
within 2 x TOL (request 2's position 3 is at ~TOL run alone too: 4.4e-4 to 5.0e-4 measured), and equal to the same
step run alone within 2 x TOL. Encoders of different lengths are padded; decoders step together with their caches
concatenated and split. A placeholder (zero shares for a member a party lacks) leaves every other member's rows
correct.
"""

from __future__ import annotations

import pytest
import torch

from secureinfer.models.checkpoint import load_checkpoint
from secureinfer.mpc import runtime
from secureinfer.mpc.approx.profile import ACCURATE
from secureinfer.mpc.models import batching, serving, weights
from secureinfer.mpc.models.batching import BatchItem
from secureinfer.mpc.models.blocks import SecretKVCache
from secureinfer.mpc.nn.embedding import one_hot
from secureinfer.mpc.protocols import reveal
from secureinfer.plaintext import reference as plaintext

from tests.tinymodels import VOCAB
from .test_secure_models import TOL, _ids


def _model(party, cfg, params, secret: bool):
    """The family model at this party: on trivially shared weights (the secret-weights protocol) or public ones."""
    folded = serving.owner_params(cfg, params)
    if secret:
        return serving.build_model(cfg, weights.share_public(folded, party.index, party.config), ACCURATE)
    return serving.build_model(cfg, dict(folded), ACCURATE, config=party.config)


def _open(party, cfg, parts) -> list[torch.Tensor]:
    return [cfg_decode(party, reveal.reveal(party, out)) for out, _ in parts]


def cfg_decode(party, ring: torch.Tensor) -> torch.Tensor:
    return party.config.fxp.decode(ring.cpu())


def _close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.shape == want.shape, (name, got.shape, want.shape)
    diff = (got - want).abs().max().item()
    print(f"{name}: max abs diff {diff:.2e} (tolerance {tol:g})")
    assert diff <= tol, name


@pytest.mark.parametrize("secret", [True, False], ids=["secret weights", "public weights"])
def test_bert_steps_of_different_lengths_batch_into_one_forward(bert_dir, secret):
    cfg, params = load_checkpoint(bert_dir[0], torch.float64)
    requests = [_ids(1, 5, seed=1), _ids(2, 3, seed=2), _ids(1, 7, seed=3)]
    masks = [torch.ones_like(ids) for ids in requests]
    masks[1][1, 2:] = 0
    types = [torch.zeros_like(ids) for ids in requests]
    types[2][:, 4:] = 1
    metas = [torch.stack([m, t]) for m, t in zip(masks, types)]
    onehots = [one_hot(ids, VOCAB) for ids in requests]

    def program(party, *shares):
        model = _model(party, cfg, params, secret)
        items = [BatchItem(s, meta, None) for s, meta in zip(shares, metas)]
        opened = {}
        for output in ("hidden", "embedding"):
            step, _ = serving.step_function(cfg, "pooled" if output == "embedding" else output)
            before = party.channel.stats.snapshot()
            batched = batching.run(party, model, step, cfg, items)
            rounds = party.channel.stats.since(before).rounds
            alone = [batching.run(party, model, step, cfg, [item])[0] for item in items]
            opened[output] = (_open(party, cfg, batched), _open(party, cfg, alone), rounds)
        return opened

    sim = runtime.simulate(program, inputs=onehots)
    opened = sim.outputs[0]
    for i, (ids, mask, typ) in enumerate(zip(requests, masks, types)):
        hidden, alone, _ = opened["hidden"]
        want = plaintext.bert_forward(cfg, params, ids, mask, typ)
        real = mask.bool()
        _close(f"request {i} hidden (batched)", hidden[i][real], want[real], 2 * TOL["bert"])
        _close(f"request {i} hidden (batched vs alone)", hidden[i][real], alone[i][real], 2 * TOL["bert"])
        pooled, alone, rounds = opened["embedding"]
        want = plaintext.mean_pool(plaintext.bert_forward(cfg, params, ids, mask, typ), mask)
        _close(f"request {i} mean-pooled (batched)", pooled[i], want, TOL["bert"])
        _close(f"request {i} mean-pooled (batched vs alone)", pooled[i], alone[i], 2 * TOL["bert"])
    print(f"one batched forward of 3 requests: {rounds} rounds")


def test_decoders_step_together_with_their_caches(gpt2_dir, config):
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    prompts = [_ids(1, 4, seed=4), _ids(2, 4, seed=5)]
    nxt = [_ids(1, 1, seed=6), _ids(2, 1, seed=7)]
    onehots = [one_hot(ids, VOCAB) for ids in prompts + nxt]
    step, _ = serving.step_function(cfg, "all")

    def program(party, p0, p1, n0, n1):
        model = _model(party, cfg, params, secret=True)
        empty = [SecretKVCache.empty(cfg.n_layers) for _ in range(2)]
        prefill = batching.run(party, model, step, cfg, [BatchItem(p0, None, empty[0]), BatchItem(p1, None, empty[1])])
        items = [BatchItem(n, None, cache) for n, (_, cache) in zip((n0, n1), prefill)]
        assert [batching.shape_key(cfg, item) for item in items] == [(1, 4), (1, 4)]
        decode = batching.run(party, model, step, cfg, items)
        assert [c.length for _, c in decode] == [5, 5]
        return _open(party, cfg, prefill), _open(party, cfg, decode)

    prefill, decode = runtime.simulate(program, inputs=onehots, config=config).outputs[0]
    for i in range(2):
        want = plaintext.gpt2_forward(cfg, params, torch.cat([prompts[i], nxt[i]], dim=1))
        _close(f"request {i} prefill", prefill[i], want[:, :4], TOL["gpt2"])
        _close(f"request {i} decode step", decode[i], want[:, 4:], TOL["gpt2"])


def test_a_placeholder_leaves_the_other_rows_correct(gpt2_dir, config):
    """Zero shares in the middle of a batch (a member this party lacks): the other members still get their own
    results, so a missing or misbehaving member cannot corrupt another's answer."""
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    requests = [_ids(1, 3, seed=8), _ids(1, 3, seed=9)]
    step, _ = serving.step_function(cfg, "last")

    def program(party, a, b):
        model = _model(party, cfg, params, secret=False)
        hole = batching.placeholder(cfg, party.index, party.config.device, rows=2, positions=3, cached=0)
        items = [BatchItem(a, None, SecretKVCache.empty(cfg.n_layers)), hole,
                 BatchItem(b, None, SecretKVCache.empty(cfg.n_layers))]
        return _open(party, cfg, batching.run(party, model, step, cfg, items))

    opened = runtime.simulate(program, inputs=[one_hot(ids, VOCAB) for ids in requests], config=config).outputs[0]
    assert opened[1].shape == (2, 1, VOCAB)
    for i, ids in ((0, requests[0]), (2, requests[1])):
        _close(f"member {i} beside a placeholder", opened[i], plaintext.gpt2_forward(cfg, params, ids)[:, -1:],
               TOL["gpt2"])


def test_mismatched_items_and_metadata_are_refused(bert_dir, gpt2_dir):
    cfg, _ = load_checkpoint(gpt2_dir[0], torch.float64)
    a = batching.placeholder(cfg, 0, "cpu", rows=1, positions=3, cached=0)
    b = batching.placeholder(cfg, 0, "cpu", rows=1, positions=2, cached=0)
    with pytest.raises(ValueError, match="shape key"):
        batching.stack(cfg, [a, b])
    bert_cfg, _ = load_checkpoint(bert_dir[0], torch.float64)
    item = batching.placeholder(bert_cfg, 0, "cpu", rows=1, positions=3, cached=0)
    batching.check_meta(bert_cfg, item)  # the placeholder's own metadata is well-formed
    bad_types = item.meta.clone()
    bad_types[1, 0, 0] = bert_cfg.type_vocab_size
    no_tokens = torch.zeros_like(item.meta)
    for meta, match in ((bad_types, "token types"), (no_tokens, "real token"), (item.meta[:, :, :2], "malformed"),
                        (item.meta.float(), "malformed")):
        with pytest.raises(serving.RequestError, match=match):
            batching.check_meta(bert_cfg, BatchItem(item.onehot, meta, None))
