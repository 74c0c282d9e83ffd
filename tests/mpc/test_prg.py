"""The AES-CTR PRG (host and device keystreams, `mpc/aes.py` against published vectors and `cryptography`), X25519
seed agreement, and the pairwise PRGs the parties set up in `Party.connect`."""

from __future__ import annotations

import os
import random

import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secureinfer.mpc import runtime
from secureinfer.mpc.aes import AesCtr, expand_key, sbox
from secureinfer.mpc.prg import DEVICE_DRAW_MIN, PRG, SEED_BYTES, KeyAgreement

ON_DEVICE = pytest.mark.parametrize("on_device", [False, True], ids=["host-aes", "torch-aes"])


def test_same_seed_same_stream(device):
    seed = os.urandom(SEED_BYTES)
    a, b = PRG(seed, device), PRG(seed, device)
    for shape in [(3,), (2, 5), (), (0,), (4, 1, 3)]:
        x, y = a.ring(shape), b.ring(shape)
        assert x.dtype == torch.int64 and tuple(x.shape) == shape and x.device.type == torch.device(device).type
        assert torch.equal(x, y)
    assert a.drawn_bytes == b.drawn_bytes == 8 * (3 + 10 + 1 + 0 + 12)


@ON_DEVICE
def test_stream_is_position_based(on_device):
    # The PRG is a byte stream: draws of 3 then 5 elements equal one draw of 8 (the SPMD discipline relies on order).
    seed = os.urandom(SEED_BYTES)
    a, b = PRG(seed, on_device=on_device), PRG(seed, on_device=on_device)
    assert torch.equal(torch.cat([a.ring((3,)), a.ring((5,))]), b.ring((8,)))
    # Drawing in a different order desynchronises: the next draws no longer agree.
    a.ring((2,))
    assert not torch.equal(a.ring((4,)), b.ring((4,)))


@ON_DEVICE
def test_draws_are_the_raw_keystream_in_order(device, on_device):
    """ring and uint8 draws, interleaved, are consecutive slices of the AES-CTR keystream (made on the host or on the
    device), and the tensors they return are writable and independent of later draws."""
    seed = os.urandom(SEED_BYTES)
    prg, raw = PRG(seed, device, on_device=on_device), PRG(seed)
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


@ON_DEVICE
def test_known_answer_aes_ctr(on_device):
    # AES-128-CTR, all-zero key and counter block: the first block is AES_0(0) = 66e94bd4ef8a2c3b884cfa59ca342b2e.
    assert PRG(b"\x00" * 16, on_device=on_device).bytes(16).hex() == "66e94bd4ef8a2c3b884cfa59ca342b2e"


def test_bits_and_below_ranges():
    prg = PRG.fresh()
    bits = prg.bits((4096,))
    assert set(bits.unique().tolist()) == {0, 1}
    below = prg.below((4096,), 10)
    assert below.min().item() >= 0 and below.max().item() < 1 << 10
    assert below.max().item() >= 1 << 9  # 4096 draws reach the upper half (fails with prob 2^-4096)
    full = prg.ring((4096,))
    assert (full < 0).any() and (full > 0).any()


@ON_DEVICE
@pytest.mark.parametrize("length", [0, 8, 15, 17, 32])
def test_bad_seed_length_raises(length, on_device):
    with pytest.raises(ValueError):
        PRG(b"\x01" * length, on_device=on_device)


# --- the keystream made with torch integer ops (mpc/aes.py) -----------------------------------------------------------

# FIPS-197 (AES, 2001; updated 2023), Appendix A.1: the expansion of this cipher key; Appendix B: the cipher example
# with the same key; Appendix C.1: the AES-128 example vector.
FIPS197_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
FIPS197_BLOCKS = [
    (FIPS197_KEY, "3243f6a8885a308d313198a2e0370734", "3925841d02dc09fbdc118597196a0b32"),
    ("000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff", "69c4e0d86a7b0430d8cdb78070b4c55a"),
]

# NIST SP 800-38A (2001), Appendix F.5.1, CTR-AES128.Encrypt: initial counter block, then per block the output block
# (the keystream), the plaintext and the ciphertext.
SP800_38A_KEY = FIPS197_KEY
SP800_38A_COUNTER = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
SP800_38A_BLOCKS = [
    ("ec8cdf7398607cb0f2d21675ea9ea1e4", "6bc1bee22e409f96e93d7e117393172a", "874d6191b620e3261bef6864990db6ce"),
    ("362b7c3c6773516318a077d7fc5073ae", "ae2d8a571e03ac9c9eb76fac45af8e51", "9806f66b7970fdff8617187bb9fffdff"),
    ("6a2cc3787889374fbeb4c81b17ba6c44", "30c81c46a35ce411e5fbc1191a0a52ef", "5ae4df3edbd5d35e5b4f09020db03eab"),
    ("e89c399ff0f198c6d40a31db156cabfe", "f69f2445df4f9b17ad2b417be66c3710", "1e031dda2fbe03d1792170a0f3009cee"),
]


def _as_blocks(hex_blocks: list[str], device) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex("".join(hex_blocks))), dtype=torch.uint8, device=device).view(-1, 16)


def _reference_keystream(key: bytes, initial_counter: int, offset: int, nbytes: int) -> bytes:
    """`cryptography`'s AES-128-CTR keystream, bytes [offset, offset + nbytes)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(initial_counter.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(offset + nbytes))[offset:]


def test_fips197_sbox_and_key_expansion():
    box = sbox()
    assert (box[0x00], box[0x53], box[0xFF]) == (0x63, 0xED, 0x16)  # FIPS-197 section 5.1.1's example is S(53) = ed
    assert sorted(box) == list(range(256))
    expanded = expand_key(bytes.fromhex(FIPS197_KEY))
    assert len(expanded) == 176 and expanded[:16].hex() == FIPS197_KEY
    # Appendix A.1: w[4] = a0fafe17, w[5] = 88542cb1, w[23] = 11f915bc, w[43] = b6630ca6.
    words = [expanded[i : i + 4].hex() for i in range(0, 176, 4)]
    assert (words[4], words[5], words[23], words[43]) == ("a0fafe17", "88542cb1", "11f915bc", "b6630ca6")


def test_fips197_cipher_examples(device):
    for key, plaintext, ciphertext in FIPS197_BLOCKS:
        got = AesCtr(bytes.fromhex(key), device).encrypt_blocks(_as_blocks([plaintext], device))
        assert bytes(got.cpu().flatten().tolist()).hex() == ciphertext
    # Many blocks at once: each row is encrypted on its own; blocks not aligned to 4 bytes in memory are read too.
    key, plaintext, ciphertext = FIPS197_BLOCKS[1]
    aes, want = AesCtr(bytes.fromhex(key), device), _as_blocks([ciphertext] * 5, "cpu")
    assert torch.equal(aes.encrypt_blocks(_as_blocks([plaintext] * 5, device)).cpu(), want)
    padded = torch.cat((torch.zeros(1, dtype=torch.uint8, device=device), _as_blocks([plaintext] * 5, device).view(-1)))
    unaligned = padded[1:].view(5, 16)
    assert unaligned.storage_offset() == 1
    assert torch.equal(aes.encrypt_blocks(unaligned).cpu(), want)


def test_sp800_38a_ctr_aes128_encrypt(device):
    aes = AesCtr(bytes.fromhex(SP800_38A_KEY), device, initial_counter=int(SP800_38A_COUNTER, 16))
    keystream = aes.keystream(0, 64)
    assert torch.equal(keystream.cpu().view(-1, 16), _as_blocks([output for output, _, _ in SP800_38A_BLOCKS], "cpu"))
    plaintext = _as_blocks([plain for _, plain, _ in SP800_38A_BLOCKS], device).view(-1)
    ciphertext = _as_blocks([cipher for _, _, cipher in SP800_38A_BLOCKS], device).view(-1)
    assert torch.equal(plaintext ^ keystream, ciphertext)
    # Any slice of the stream, from any position, is the same bytes.
    assert torch.equal(aes.keystream(21, 30), keystream[21:51])


@pytest.mark.parametrize(
    "initial_counter",
    [0, 1 << 127, (1 << 64) - 3, (1 << 128) - 2],
    ids=["zero", "high-bit", "low-half-carries", "whole-block-wraps"],
)
def test_torch_keystream_equals_cryptography(initial_counter):
    rng = random.Random(16)
    for _ in range(6):
        key = os.urandom(16)
        for offset, nbytes in [(0, 0), (0, 1), (0, 15), (0, 16), (0, 17), (3, 13), (15, 2), (16, 64), (7, 1000)]:
            got = AesCtr(key, initial_counter=initial_counter).keystream(offset, nbytes)
            want = _reference_keystream(key, initial_counter, offset, nbytes)
            assert bytes(got.tolist()) == want, (key.hex(), initial_counter, offset, nbytes)
        offset, nbytes = rng.randrange(4096), rng.randrange(1, 4096)
        got = AesCtr(key, initial_counter=initial_counter).keystream(offset, nbytes)
        assert bytes(got.tolist()) == _reference_keystream(key, initial_counter, offset, nbytes)


@pytest.mark.parametrize("chunk_blocks", [1, 2, 3, 7])
def test_chunked_keystream_equals_one_batch(chunk_blocks):
    key = os.urandom(16)
    whole = AesCtr(key).keystream(0, 300)
    chunked = AesCtr(key, chunk_blocks=chunk_blocks)
    for offset, nbytes in [(0, 300), (5, 200), (16, 33), (31, 1), (0, 16 * chunk_blocks), (9, 16 * chunk_blocks)]:
        got = chunked.keystream(offset, nbytes)
        assert got.is_contiguous() and got.storage_offset() == 0
        assert torch.equal(got, whole[offset : offset + nbytes])


# Draw sizes in bytes; a multiple of 8 is drawn as ring elements, any other size as bytes.
DRAW_PATTERNS = {
    "empty": [0, 0, 8],
    "one": [1],
    "block-less-one": [15],
    "block": [16],
    "block-plus-one": [17],
    "straddling": [1, 15, 16, 17, 0, 3, 8, 5, 24, 13, 32],
    "large": [(1 << 20) + 3, 5, 1 << 16],
    "many": [random.Random(7).choice([0, 1, 2, 7, 8, 15, 16, 17, 31, 40, 64, 100, 129]) for _ in range(300)],
}


@pytest.mark.parametrize("sizes", list(DRAW_PATTERNS.values()), ids=list(DRAW_PATTERNS))
def test_torch_prg_equals_cryptography_prg(sizes):
    """The PRG's torch keystream (here on the CPU) gives the host path's bytes for any sequence of draw sizes: the
    stream position carries over between draws that are not multiples of 16 bytes."""
    seed = os.urandom(SEED_BYTES)
    torch_prg, host_prg = PRG(seed, on_device=True), PRG(seed)
    assert torch_prg.on_device and not host_prg.on_device
    for nbytes in sizes:
        if nbytes % 8 == 0:
            got, want = torch_prg.ring((nbytes // 8,)), host_prg.ring((nbytes // 8,))
        else:
            got, want = torch_prg.uint8((nbytes,)), host_prg.uint8((nbytes,))
        assert got.dtype == want.dtype and torch.equal(got, want), (seed.hex(), nbytes)
    assert torch_prg.bytes(19) == host_prg.bytes(19)
    assert torch_prg.drawn_bytes == host_prg.drawn_bytes == sum(sizes) + 19


def test_torch_prg_shapes_and_derived_draws():
    seed = os.urandom(SEED_BYTES)
    torch_prg, host_prg = PRG(seed, on_device=True), PRG(seed)
    for shape in [(), (0,), (3, 4), (2, 1, 5)]:
        got, want = torch_prg.ring(shape), host_prg.ring(shape)
        assert tuple(got.shape) == shape and torch.equal(got, want)
        assert torch.equal(torch_prg.uint8(shape), host_prg.uint8(shape))
    assert torch.equal(torch_prg.bits((33,)), host_prg.bits((33,)))
    assert torch.equal(torch_prg.below((2, 9), 13), host_prg.below((2, 9), 13))


def test_torch_prg_uses_no_torch_randomness():
    seed = os.urandom(SEED_BYTES)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = PRG(seed, on_device=True).ring((100,))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    assert torch.equal(PRG(seed, on_device=True).ring((100,)), first)


def test_prg_keystream_path_by_default():
    assert PRG(os.urandom(SEED_BYTES)).device_draw_min is None  # the CPU keeps the `cryptography` path
    assert PRG(os.urandom(SEED_BYTES), "cpu").device_draw_min is None
    gpu_like = PRG(os.urandom(SEED_BYTES), "meta")  # any other device: large draws there, small ones on the host
    assert gpu_like.device_draw_min == DEVICE_DRAW_MIN and not gpu_like.on_device
    assert PRG(os.urandom(SEED_BYTES), "meta", on_device=True).on_device
    assert PRG(os.urandom(SEED_BYTES), "meta", on_device=False).device_draw_min is None


@pytest.mark.parametrize("sizes", list(DRAW_PATTERNS.values()), ids=list(DRAW_PATTERNS))
def test_mixed_paths_keep_one_stream(sizes):
    """A PRG that makes its large draws with torch AES and its small ones with `cryptography` (the default on a GPU,
    here with the threshold lowered on the CPU) gives the host path's bytes: the host counter restarts where the
    device draws left the stream, mid-block included."""
    seed = os.urandom(SEED_BYTES)
    mixed, host_prg = PRG(seed), PRG(seed)
    mixed.device_draw_min = 16
    for nbytes in sizes:
        assert torch.equal(mixed.uint8((nbytes,)), host_prg.uint8((nbytes,))), (seed.hex(), nbytes)
    assert mixed.bytes(19) == host_prg.bytes(19) and mixed.drawn_bytes == host_prg.drawn_bytes


@pytest.mark.cuda
@pytest.mark.parametrize("on_device", [True, None], ids=["every-draw-on-device", "default-mixed"])
def test_cuda_and_cpu_prgs_draw_identical_ring_tensors(on_device):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; the CUDA PRG's equality with the CPU PRG is checked on the GPU machine")
    seed = os.urandom(SEED_BYTES)
    gpu, cpu = PRG(seed, "cuda", on_device=on_device), PRG(seed, "cpu")
    assert gpu.device_draw_min == (0 if on_device else DEVICE_DRAW_MIN) and cpu.device_draw_min is None
    for shape in [(), (1,), (3,), (2, 7), (0,), (1 << 18,), (5, 1 << 16), (1 << 21,)]:
        got = gpu.ring(shape)
        assert got.device.type == "cuda" and torch.equal(got.cpu(), cpu.ring(shape)), shape
        assert torch.equal(gpu.uint8((13,)).cpu(), cpu.uint8((13,)))  # unaligned positions in between
    assert torch.equal(gpu.bits((77,)).cpu(), cpu.bits((77,)))
    assert torch.equal(gpu.below((9, 9), 20).cpu(), cpu.below((9, 9), 20))
    assert gpu.bytes(40) == cpu.bytes(40) and gpu.drawn_bytes == cpu.drawn_bytes


@pytest.mark.cuda
def test_cuda_graph_captures_a_keystream_draw():
    """The device keystream has no host work inside a draw, so a CUDA graph can capture one and replay it."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; CUDA graph capture is checked on the GPU machine")
    key = os.urandom(16)
    aes = AesCtr(key, "cuda", chunk_blocks=64)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        aes.keystream(5, 3000)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = aes.keystream(5, 3000)
    graph.replay()
    torch.cuda.synchronize()
    assert bytes(out.cpu().tolist()) == _reference_keystream(key, 0, 5, 3000)


def test_aes_rejects_bad_arguments():
    for key in [b"", b"\x01" * 15, b"\x01" * 24]:
        with pytest.raises(ValueError):
            AesCtr(key)
    with pytest.raises(ValueError):
        AesCtr(b"\x01" * 16, initial_counter=1 << 128)
    with pytest.raises(ValueError):
        AesCtr(b"\x01" * 16, initial_counter=-1)
    with pytest.raises(ValueError):
        AesCtr(b"\x01" * 16, chunk_blocks=0)
    aes = AesCtr(b"\x01" * 16)
    for offset, nbytes in [(-1, 4), (0, -1)]:
        with pytest.raises(ValueError):
            aes.keystream(offset, nbytes)
    for blocks in [torch.zeros(2, 15, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8), torch.zeros(1, 16)]:
        with pytest.raises(ValueError):
            aes.encrypt_blocks(blocks)


# --- seed agreement and the parties' PRGs -----------------------------------------------------------------------------


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
