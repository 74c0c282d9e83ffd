"""The AES-CTR PRG, X25519 seed agreement, and the pairwise PRGs the parties set up in `Party.connect`."""

from __future__ import annotations

import os

import pytest
import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.prg import PRG, SEED_BYTES, KeyAgreement


def test_same_seed_same_stream(device):
    seed = os.urandom(SEED_BYTES)
    a, b = PRG(seed, device), PRG(seed, device)
    for shape in [(3,), (2, 5), (), (0,), (4, 1, 3)]:
        x, y = a.ring(shape), b.ring(shape)
        assert x.dtype == torch.int64 and tuple(x.shape) == shape and x.device.type == torch.device(device).type
        assert torch.equal(x, y)
    assert a.drawn_bytes == b.drawn_bytes == 8 * (3 + 10 + 1 + 0 + 12)


def test_stream_is_position_based():
    # The PRG is a byte stream: draws of 3 then 5 elements equal one draw of 8 (the SPMD discipline relies on order).
    seed = os.urandom(SEED_BYTES)
    a, b = PRG(seed), PRG(seed)
    assert torch.equal(torch.cat([a.ring((3,)), a.ring((5,))]), b.ring((8,)))
    # Drawing in a different order desynchronises: the next draws no longer agree.
    a.ring((2,))
    assert not torch.equal(a.ring((4,)), b.ring((4,)))


def test_draws_are_the_raw_keystream_in_order(device):
    """ring and uint8 draws, interleaved, are consecutive slices of the AES-CTR keystream (written in place, no
    copy), and the tensors they return are writable and independent of later draws."""
    seed = os.urandom(SEED_BYTES)
    prg, raw = PRG(seed, device), PRG(seed)
    a, b, c, d = prg.ring((3, 2)), prg.uint8((5,)), prg.ring(()), prg.uint8((0,))
    want = raw.bytes(48 + 5 + 8)
    got = (a.cpu().contiguous().view(torch.uint8).flatten().tolist() + b.cpu().tolist()
           + c.reshape(1).cpu().view(torch.uint8).tolist() + d.cpu().tolist())
    assert bytes(got) == want and prg.drawn_bytes == raw.drawn_bytes == 61
    assert b.dtype == torch.uint8 and tuple(b.shape) == (5,) and tuple(c.shape) == () and d.numel() == 0
    before = a.clone()
    a += 1  # writable, and no later draw writes into it
    prg.ring((64,))
    assert torch.equal(a, before + 1)


def test_different_seeds_differ():
    x = PRG(b"\x00" * 16).ring((64,))
    y = PRG(b"\x00" * 15 + b"\x01").ring((64,))
    assert not torch.equal(x, y)
    assert (x != y).float().mean().item() > 0.9
    # Two fresh PRGs (OS randomness) differ too.
    assert not torch.equal(PRG.fresh().ring((8,)), PRG.fresh().ring((8,)))


def test_known_answer_aes_ctr():
    # AES-128-CTR, all-zero key and counter block: the first block is AES_0(0) = 66e94bd4ef8a2c3b884cfa59ca342b2e.
    assert PRG(b"\x00" * 16).bytes(16).hex() == "66e94bd4ef8a2c3b884cfa59ca342b2e"


def test_bits_and_below_ranges():
    prg = PRG.fresh()
    bits = prg.bits((4096,))
    assert set(bits.unique().tolist()) == {0, 1}
    below = prg.below((4096,), 10)
    assert below.min().item() >= 0 and below.max().item() < 1 << 10
    assert below.max().item() >= 1 << 9  # 4096 draws reach the upper half (fails with prob 2^-4096)
    full = prg.ring((4096,))
    assert (full < 0).any() and (full > 0).any()


@pytest.mark.parametrize("length", [0, 8, 15, 17, 32])
def test_bad_seed_length_raises(length):
    with pytest.raises(ValueError):
        PRG(b"\x01" * length)


def test_key_agreement_both_ends_derive_same_seed():
    alice, bob, carol = KeyAgreement(), KeyAgreement(), KeyAgreement()
    ctx = b"session-1|P0>P1"
    s_ab = alice.seed_with(bob.public_bytes, ctx)
    s_ba = bob.seed_with(alice.public_bytes, ctx)
    assert len(s_ab) == SEED_BYTES and s_ab == s_ba
    # A third party's seed with either differs; so does a seed derived under another context.
    assert carol.seed_with(alice.public_bytes, ctx) != s_ab
    assert alice.seed_with(bob.public_bytes, b"session-2|P0>P1") != s_ab
    assert alice.seed_with(bob.public_bytes, b"session-1|P1>P2") != s_ab
    # Fresh key pairs give fresh seeds for the same context.
    assert KeyAgreement().seed_with(bob.public_bytes, ctx) != s_ab
    assert torch.equal(PRG(s_ab).ring((16,)), PRG(s_ba).ring((16,)))


def test_party_connect_pairwise_prgs_agree(config):
    """Party i's next-PRG is party i+1's prev-PRG; zero-sharings sum to zero; random pairs are replicated."""

    def program(p):
        pair_streams = (p.prg_prev.ring((8,)), p.prg_next.ring((8,)))
        zero = p.zero_share((5, 3))
        zero_x = p.zero_xor_share((7,))
        r_lo, r_hi = p.random_pair((6,))
        private = p.prg_private.ring((4,))
        return pair_streams, zero, zero_x, (r_lo, r_hi), private

    sim = runtime.simulate(program, config=config)
    outs = sim.outputs
    for i in range(3):
        nxt = (i + 1) % 3
        assert torch.equal(outs[i][0][1], outs[nxt][0][0]), f"P{i} next-PRG != P{nxt} prev-PRG"
        assert not torch.equal(outs[i][0][0], outs[i][0][1]), "a party's two PRGs must differ"
        assert torch.equal(outs[i][3][1], outs[nxt][3][0]), "random_pair is not replicated"
    zero_sum = sum(o[1] for o in outs)
    assert torch.equal(zero_sum, torch.zeros_like(zero_sum))
    assert not torch.equal(outs[0][1], torch.zeros_like(outs[0][1]))
    assert torch.equal(outs[0][2] ^ outs[1][2] ^ outs[2][2], torch.zeros(7, dtype=torch.int64, device=config.device))
    # Private PRGs are independent across parties.
    assert not torch.equal(outs[0][4], outs[1][4])
    assert sim.max_rounds == 0 and sim.max_bytes_sent == 0


def test_sessions_get_fresh_seeds(config):
    a = runtime.simulate(lambda p: p.prg_next.ring((4,)), config=config).outputs[0]
    b = runtime.simulate(lambda p: p.prg_next.ring((4,)), config=config).outputs[0]
    assert not torch.equal(a, b)
