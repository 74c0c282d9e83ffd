"""Hosted models kept across restarts: one file per model under the node's data directory, encrypted at rest with a
key of the node's own.

    data_dir/models.key              32 random bytes (AES-256), made on the first start, readable by the node only
    data_dir/models/<digest>.model   one hosted model (the digest names the model id and committee)

A file is MAGIC, a length-prefixed JSON header in the clear (format version, node id, the digest naming the model id
and committee, a random salt; a model id names its owner, which stays sealed with the rest), then the contents in
chunks sealed with AES-256-GCM under a key derived from the node's key and the salt (HKDF-SHA256): chunk i has nonce
i, and its associated data is the header's SHA-256 and whether it is the last chunk. A file written by another node,
sealed with another key, or with any byte of header or chunk changed, chunks reordered or the end cut off, does not
open. The contents are a JSON manifest (the hosted record with its owner's signature, its owner, each tensor's name,
dtype and shape) and then the tensors' raw bytes in that order; what a manifest declares is bounded before anything
is allocated.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secureinfer.v1 import node_pb2

MAGIC = b"SIMODEL1"
VERSION = 2
KEY_FILE = "models.key"
MODELS_DIR = "models"
KEY_BYTES = 32
CHUNK_BYTES = 4 << 20
_TAG_BYTES = 16
_MAX_HEADER = 64 << 10
_MAX_MANIFEST = 16 << 20
_MAX_DIMS = 8
_SALT = re.compile(r"[0-9a-f]{32}")
DTYPES: dict[str, torch.dtype] = {"int64": torch.int64, "float64": torch.float64, "float32": torch.float32}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class VaultError(Exception):
    """A kept model that cannot be written or read back (corrupt, truncated, another node's or another key's file);
    the message says which and why."""


@dataclass(frozen=True)
class Kept:
    """One hosted model as kept on disk: the record the network sees, its owner, and its tensors by name."""

    record: node_pb2.HostedModel
    owner: str
    tensors: dict[str, torch.Tensor]


class Vault:
    """The hosted-model files of one node (module docstring); thread-safe (every call works on its own file)."""

    def __init__(self, directory: Path, key: bytes, node_id: str, max_bytes: int) -> None:
        if len(key) != KEY_BYTES:
            raise VaultError(f"the model key must be {KEY_BYTES} bytes, got {len(key)}")
        self.directory, self.node_id, self.max_bytes = Path(directory), node_id, max_bytes
        self._key = key

    @classmethod
    def open(cls, data_dir: Path, node_id: str, max_bytes: int) -> "Vault":
        """The vault under `data_dir`, making its folder and key on the first start (OSError if it cannot)."""
        data_dir = Path(data_dir)
        (data_dir / MODELS_DIR).mkdir(parents=True, exist_ok=True)
        return cls(data_dir / MODELS_DIR, _read_or_make_key(data_dir / KEY_FILE), node_id, max_bytes)

    @property
    def key_path(self) -> Path:
        return self.directory.parent / KEY_FILE

    def key_exposed(self) -> bool:
        """Whether anyone but its owner may read the key file (the node still runs; its operator should fix it)."""
        return bool(self.key_path.stat().st_mode & 0o077)

    def path_for(self, model_id: str, committee_id: str) -> Path:
        return self.directory / f"{_digest(model_id, committee_id)}.model"

    def files(self) -> list[Path]:
        """The kept model files, in name order."""
        return sorted(p for p in self.directory.glob("*.model") if p.is_file())

    # --- writing ---------------------------------------------------------------------------------------------------

    def save(self, kept: Kept) -> Path:
        """Write `kept` (atomically: a reader sees the old file or the whole new one); its path."""
        record = kept.record
        path = self.path_for(record.model_id, record.committee_id)
        salt = secrets.token_hex(16)
        header = json.dumps({"version": VERSION, "node_id": self.node_id,
                             "model": _digest(record.model_id, record.committee_id), "salt": salt}).encode()
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(MAGIC + struct.pack("<I", len(header)) + header)
                sealer = _Sealer(out, self._aead(salt), hashlib.sha256(header).digest())
                _write_contents(sealer, kept)
                sealer.close()
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def remove(self, model_id: str, committee_id: str) -> None:
        self.path_for(model_id, committee_id).unlink(missing_ok=True)

    # --- reading ---------------------------------------------------------------------------------------------------

    def load(self, path: Path) -> Kept:
        """The model kept in `path`, or VaultError saying why it is refused."""
        try:
            with open(path, "rb") as f:
                header, fields = self._header(f)
                opener = _Opener(f, self._aead(fields["salt"]), hashlib.sha256(header).digest())
                kept = self._contents(opener, fields)
                opener.finish()
        except OSError as exc:
            raise VaultError(f"cannot read: {exc.strerror or exc}") from None
        return kept

    def _header(self, f: BinaryIO) -> tuple[bytes, dict]:
        """The header bytes and fields of a file, refused unless it is this format and this node's."""
        start = f.read(len(MAGIC) + 4)
        if len(start) < len(MAGIC) + 4 or start[:len(MAGIC)] != MAGIC:
            raise VaultError("not a hosted-model file (bad magic)")
        (size,) = struct.unpack("<I", start[len(MAGIC):])
        header = f.read(size) if size <= _MAX_HEADER else b""
        if len(header) != size or not header:
            raise VaultError("truncated or oversized header")
        try:
            fields = json.loads(header)
            ok = fields["version"] == VERSION and all(isinstance(fields[k], str) for k in
                                                      ("node_id", "model", "salt"))
            ok = ok and _SALT.fullmatch(fields["salt"]) is not None
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise VaultError("malformed header")
        if fields["node_id"] != self.node_id:
            raise VaultError(f"written by node {fields['node_id']!r}, not by this node ({self.node_id!r})")
        return header, fields

    def _contents(self, opener: "_Opener", fields: dict) -> Kept:
        """The manifest and the tensors it lists, each bounded before it is allocated."""
        (size,) = struct.unpack("<I", opener.read(4))
        if size > _MAX_MANIFEST:
            raise VaultError(f"manifest of {size} bytes")
        try:
            manifest = json.loads(opener.read(size))
            record = node_pb2.HostedModel.FromString(base64.b64decode(manifest["record"]))
            owner, entries = manifest["owner"], manifest["tensors"]
            shapes = [(str(n), DTYPES[d], tuple(int(x) for x in shape)) for n, d, shape in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise VaultError(f"malformed manifest: {exc}") from None
        if _digest(record.model_id, record.committee_id) != fields["model"]:
            raise VaultError("the manifest names another model than the header")
        total = sum(_nbytes(dtype, shape) for _, dtype, shape in shapes)
        if total > self.max_bytes:
            raise VaultError(f"holds {total} bytes of weights, over max_model_bytes ({self.max_bytes})")
        tensors = {}
        for name, dtype, shape in shapes:
            tensor = torch.empty(shape, dtype=dtype)
            opener.read_into(memoryview(_bytes_of(tensor)))
            tensors[name] = tensor
        return Kept(record, str(owner), tensors)

    def _aead(self, salt: str) -> AESGCM:
        """The file's cipher: AES-256-GCM under a key derived from the node's key and the file's salt."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes.fromhex(salt), info=b"secureinfer hosted model v1")
        return AESGCM(hkdf.derive(self._key))


def _digest(model_id: str, committee_id: str) -> str:
    """What names a kept model's file and header: a digest of its model id and committee id."""
    return hashlib.sha256(f"{model_id}\0{committee_id}".encode()).hexdigest()[:32]


def _read_or_make_key(path: Path) -> bytes:
    """The node's model key: made with mode 0600 if absent (never overwritten), else read and checked."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise VaultError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key") from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
        out.flush()
        os.fsync(out.fileno())
    return key


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    if len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
        raise VaultError(f"impossible tensor shape {list(shape)}")
    return int(np.prod(shape, dtype=object)) * torch.empty((), dtype=dtype).element_size()


def _bytes_of(tensor: torch.Tensor) -> np.ndarray:
    """A CPU contiguous tensor's memory as a flat uint8 array (no copy)."""
    return tensor.numpy().reshape(-1).view(np.uint8)


def _write_contents(sealer: "_Sealer", kept: Kept) -> None:
    """The manifest, then each tensor's raw bytes in its order."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in kept.tensors.items()}
    for name, tensor in tensors.items():
        if tensor.dtype not in _NAMES:
            raise VaultError(f"tensor {name} of dtype {tensor.dtype} cannot be kept")
    manifest = json.dumps({"record": base64.b64encode(kept.record.SerializeToString()).decode(), "owner": kept.owner,
                           "tensors": [[n, _NAMES[t.dtype], list(t.shape)] for n, t in tensors.items()]}).encode()
    sealer.write(struct.pack("<I", len(manifest)) + manifest)
    for tensor in tensors.values():
        sealer.write(memoryview(_bytes_of(tensor)))


class _Sealer:
    """Writes a plaintext stream as sealed chunks (module docstring)."""

    def __init__(self, out: BinaryIO, aead: AESGCM, digest: bytes) -> None:
        self.out, self.aead, self.digest = out, aead, digest
        self._buffer = bytearray()
        self._index = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            take = min(CHUNK_BYTES - len(self._buffer), len(view))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == CHUNK_BYTES:
                self._emit(last=False)

    def close(self) -> None:
        self._emit(last=True)

    def _emit(self, last: bool) -> None:
        sealed = self.aead.encrypt(_nonce(self._index), bytes(self._buffer), self.digest + bytes([last]))
        self.out.write(struct.pack("<IB", len(sealed), last) + sealed)
        self._buffer.clear()
        self._index += 1


class _Opener:
    """Reads the plaintext stream back from sealed chunks, refusing any that does not open."""

    def __init__(self, f: BinaryIO, aead: AESGCM, digest: bytes) -> None:
        self.f, self.aead, self.digest = f, aead, digest
        self._chunk = memoryview(b"")
        self._index = 0
        self._last = False

    def read(self, n: int) -> bytes:
        out = bytearray(n)
        self.read_into(memoryview(out))
        return bytes(out)

    def read_into(self, target: memoryview) -> None:
        """Fill `target` from the stream (VaultError if it ends first)."""
        filled = 0
        for piece in self._pieces(len(target)):
            target[filled:filled + len(piece)] = piece
            filled += len(piece)

    def finish(self) -> None:
        """VaultError unless the stream ended exactly here, with its last chunk, at the end of the file."""
        if len(self._chunk) or not self._last or self.f.read(1):
            raise VaultError("data after the end of the kept model")

    def _pieces(self, n: int) -> Iterator[memoryview]:
        while n:
            if not len(self._chunk):
                self._next_chunk()
            piece, self._chunk = self._chunk[:n], self._chunk[n:]
            n -= len(piece)
            yield piece

    def _next_chunk(self) -> None:
        if self._last:
            raise VaultError("the contents end before the manifest says")
        head = self.f.read(5)
        if len(head) < 5:
            raise VaultError("truncated (the file ends before its last chunk)")
        size, last = struct.unpack("<IB", head)
        sealed = self.f.read(size) if _TAG_BYTES <= size <= CHUNK_BYTES + _TAG_BYTES and last in (0, 1) else b""
        if len(sealed) != size or not sealed:
            raise VaultError("truncated or corrupt chunk")
        try:
            plain = self.aead.decrypt(_nonce(self._index), sealed, self.digest + bytes([last]))
        except InvalidTag:
            raise VaultError("does not open with this node's key (sealed with another key, or changed)") from None
        self._chunk, self._index, self._last = memoryview(plain), self._index + 1, bool(last)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")
