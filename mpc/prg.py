"""Cryptographic randomness: an AES-128-CTR PRG producing ring tensors, and X25519 seed agreement.

Secret randomness in the engine comes only from here (never from `torch.randint` or `random`).
Two parties holding the same seed draw identical streams, provided they draw the same sizes in the same order;
this is what makes zero-sharings and common masks free of communication.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .aes import AesCtr

SEED_BYTES = 16
_AES_SLACK = 15  # update_into may ask for one block minus a byte beyond the data
DEVICE_DRAW_MIN = 8 << 20  # bytes: below this a GPU's draw is cheaper on the host (AES + one copy); see PRG


class PRG:
    """AES-128 in counter mode keyed by a 16-byte seed (counter blocks 0, 1, ...); a deterministic stream of uniform
    ring elements, the same bytes on every device.

    `on_device` picks where the keystream is made. On the host, the `cryptography` package writes each draw straight
    into a CPU tensor's memory, and on another device that tensor is copied there once, synchronously (an asynchronous
    copy from pinned memory would need the host buffer kept alive until the copy ran: not worth a race on secret
    randomness). On the device, `mpc/aes.py` computes the same keystream with torch integer ops from the stream
    position: no host copy or synchronization, and capturable in a CUDA graph, but some forty kernel launches a draw.
    Measured on an H100 (benchmarks/gpu/prg.py), a draw costs ~600 us on the device against ~20 us on the host up to
    1 MiB, and the device wins from ~8 MiB; so by default (None) a GPU's PRG makes draws of DEVICE_DRAW_MIN bytes or
    more on the device and smaller ones on the host. True makes every draw on the device, False every draw on the
    host. The paths share one stream position, so the bytes never depend on the choice.
    """

    def __init__(self, seed: bytes, device: torch.device | str = "cpu", *, on_device: bool | None = None) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self.device = torch.device(device)
        self.device_draw_min = _device_draw_min(self.device, on_device)
        self.drawn_bytes = 0
        self._seed = seed
        self._device_aes: AesCtr | None = None
        self._encryptor = Cipher(algorithms.AES(seed), modes.CTR(b"\x00" * 16)).encryptor()
        self._encryptor_at = 0  # the stream position the host encryptor stands at
        self._zeros = bytearray()  # the plaintext of the keystream, grown to the largest draw

    @property
    def on_device(self) -> bool:
        """Whether every draw is made on the device."""
        return self.device_draw_min == 0

    @classmethod
    def fresh(cls, device: torch.device | str = "cpu") -> "PRG":
        """A PRG seeded from the operating system's CSPRNG (private randomness)."""
        return cls(os.urandom(SEED_BYTES), device)

    def bytes(self, n: int) -> bytes:
        """The next n pseudorandom bytes of the stream."""
        return self._draw(n).cpu().numpy().tobytes()

    def _draw(self, nbytes: int) -> torch.Tensor:
        """The next `nbytes` bytes of the stream as a fresh writable uint8 tensor on this PRG's device."""
        if self.device_draw_min is not None and nbytes >= self.device_draw_min:
            if self._device_aes is None:
                self._device_aes = AesCtr(self._seed, self.device)
            out = self._device_aes.keystream(self.drawn_bytes, nbytes)
        else:
            out = torch.from_numpy(self._host_keystream(nbytes))
            out = out if self.device.type == "cpu" else out.to(self.device)
        self.drawn_bytes += nbytes
        return out

    def _host_keystream(self, nbytes: int) -> np.ndarray:
        """The next `nbytes` bytes of the stream, written by AES straight into a fresh writable uint8 array."""
        if self._encryptor_at != self.drawn_bytes:  # device draws moved the stream on: restart the counter there
            block, skip = divmod(self.drawn_bytes, 16)
            counter = (block % (1 << 128)).to_bytes(16, "big")
            self._encryptor = Cipher(algorithms.AES(self._seed), modes.CTR(counter)).encryptor()
            self._encryptor.update(bytes(skip))
        host = np.empty(nbytes + _AES_SLACK, dtype=np.uint8)
        if nbytes:
            if len(self._zeros) < nbytes:
                self._zeros = bytearray(nbytes)
            self._encryptor.update_into(memoryview(self._zeros)[:nbytes], host)
        self._encryptor_at = self.drawn_bytes + nbytes
        return host[:nbytes]

    def ring(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform elements of Z_2^64 (int64) of the given shape, on this PRG's device."""
        return self._draw(8 * _count(shape)).view(torch.int64).reshape(tuple(shape))

    def uint8(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform bytes (uint8) of the given shape, on this PRG's device."""
        return self._draw(_count(shape)).reshape(tuple(shape))

    def bits(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform 0/1 int64 values of the given shape."""
        return self.ring(shape) & 1

    def below(self, shape: tuple[int, ...] | torch.Size, bits: int) -> torch.Tensor:
        """Uniform integers in [0, 2^bits) as int64, for 0 < bits < 64."""
        return self.ring(shape) & ((1 << bits) - 1)


def _device_draw_min(device: torch.device, on_device: bool | None) -> int | None:
    """The smallest draw made on the device (None: none are): see PRG."""
    if on_device is None:
        return None if device.type == "cpu" else DEVICE_DRAW_MIN
    return 0 if on_device else None


def _count(shape: tuple[int, ...] | torch.Size) -> int:
    """Elements of a tensor of `shape` (math.prod: numpy's prod costs several microseconds on every draw)."""
    return math.prod(int(s) for s in shape)


class KeyAgreement:
    """One party's X25519 key pair, used to derive a PRG seed shared with each peer."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes_raw()

    def seed_with(self, peer_public: bytes, context: bytes) -> bytes:
        """A 16-byte seed both ends derive: HKDF-SHA256 over the X25519 secret, bound to a session context."""
        secret = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=b"secureinfer-prg|" + context).derive(
            secret
        )
