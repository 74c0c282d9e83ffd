"""Publishing a model's weights as secret shares: the model owner's side and the parties' side.

The owner encodes every parameter in the session's fixed point and shares it with `sharing.send_input` (two of the
six components travel as seeds). Names travel first so parties key the shares by the checkpoint's own parameter
names. Parameters arrive in sorted name order; the parties learn names and shapes (the architecture), never values.
Open models may instead travel in the clear (`publish_public` / `receive_public`): to one plaintext worker, or to
each of the three parties of a secure session with public weights (`encode_public` turns them into the ring
tensors the secure models take; activations stay secret). A party holding an open model's weights can also run the
secret-weights protocol on them (`share_public`: the trivial replicated sharing w = w + 0 + 0, no messages).

A receiving party given the architecture's parameter `shapes` accepts only those names, each once, each at its own
shape, checked from what the owner's messages declare before a seed is expanded or a value kept; a worker taking a
checkpoint as it is (extra tensors and all) may bound the bytes it keeps instead.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import torch

from ..comm import Channel, CommError
from ..party import PARTY_NAMES, EngineConfig, Party
from ..protocols import sharing
from ..ring import FixedPoint
from ..shares import AShare, public_component

_MAX_NAME = 512
_MAX_PARAMS = 100_000


Shapes = Mapping[str, tuple[int, ...]]  # parameter name -> its shape


class WeightsError(ValueError):
    """Weights that cannot be published (bad names, non-finite values, too many, not the expected ones)."""


def _expect(name: str, shape: tuple[int, ...], shapes: Shapes | None) -> None:
    """WeightsError unless `shapes` (when given) lists parameter `name` at `shape`."""
    if shapes is None:
        return
    if name not in shapes:
        raise WeightsError(f"published parameter {name!r} is not one of the architecture's")
    if tuple(shape) != tuple(shapes[name]):
        raise WeightsError(f"parameter {name} has shape {tuple(shape)}, expected {tuple(shapes[name])}")


def _count(header: object, owner: str, shapes: Shapes | None) -> int:
    """The parameter count a weights header announces, within _MAX_PARAMS and the expected names."""
    if not isinstance(header, bytes) or len(header) != 4:
        raise CommError(f"malformed weights header from {owner}")
    (count,) = struct.unpack("<I", header)
    if count > _MAX_PARAMS:
        raise CommError(f"{owner} announced {count} parameters, more than {_MAX_PARAMS}")
    if shapes is not None and count > len(shapes):
        raise WeightsError(f"{owner} announced {count} parameters; the architecture has {len(shapes)}")
    return count


def _name(message: object, owner: str, seen: Mapping[str, object]) -> str:
    """A parameter name message, decoded; each name once."""
    if not isinstance(message, bytes) or not 0 < len(message) <= _MAX_NAME:
        raise CommError(f"malformed parameter name from {owner}")
    try:
        name = message.decode()
    except UnicodeDecodeError:
        raise WeightsError(f"a parameter name from {owner} is not UTF-8") from None
    if name in seen:
        raise WeightsError(f"{owner} published parameter {name!r} twice")
    return name


def _names(channel: Channel, params: dict[str, torch.Tensor], parties: tuple[str, ...], tag: str
           ) -> list[tuple[str, bytes]]:
    """Send the parameter count to every party; returns the (name, encoded name) pairs in publishing order."""
    if len(params) > _MAX_PARAMS:
        raise WeightsError(f"too many parameters: {len(params)} > {_MAX_PARAMS}")
    names = [(name, name.encode()) for name in sorted(params)]
    for name, encoded in names:
        if not 0 < len(encoded) <= _MAX_NAME:
            raise WeightsError(f"parameter name must be 1..{_MAX_NAME} bytes: {name!r}")
    for p in parties:
        channel.send(p, struct.pack("<I", len(params)), tag)
    return names


def publish(channel: Channel, params: dict[str, torch.Tensor], fxp: FixedPoint, tag: str = "weights",
            parties: tuple[str, ...] = PARTY_NAMES) -> int:
    """Owner side: share every parameter with the three parties; returns the number of ring elements shared."""
    elements = 0
    for name, encoded_name in _names(channel, params, parties, tag):
        for p in parties:
            channel.send(p, encoded_name, tag)
        ring_value = fxp.encode(params[name].detach().to(torch.float64))
        sharing.send_input(channel, ring_value, tag, parties)
        elements += ring_value.numel()
    return elements


def receive(party: Party, owner: str, tag: str = "weights", *, shapes: Shapes | None = None) -> dict[str, AShare]:
    """Party side of `publish`: this party's shares of every parameter, keyed by name; with `shapes`, only those
    parameters at those shapes (refused before a seed is expanded)."""
    out: dict[str, AShare] = {}
    for _ in range(_count(party.channel.recv(owner, tag), owner, shapes)):
        name = _name(party.channel.recv(owner, tag), owner, out)
        out[name] = sharing.receive_input(party, owner, tag, check=lambda shape: _expect(name, shape, shapes))
    return out


def publish_public(channel: Channel, params: dict[str, torch.Tensor], worker: str, tag: str = "weights") -> int:
    """Owner side of an open model: send every parameter in the clear to one plaintext worker; returns elements."""
    elements = 0
    for name, encoded_name in _names(channel, params, (worker,), tag):
        value = params[name].detach()
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise WeightsError(f"parameter {name!r} must be finite floating point")
        channel.send(worker, encoded_name, tag)
        channel.send(worker, value.contiguous(), tag)
        elements += value.numel()
    return elements


def receive_public(channel: Channel, owner: str, tag: str = "weights", *, shapes: Shapes | None = None,
                   max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Worker side of `publish_public`: the parameters, keyed by name; with `shapes`, only those parameters at
    those shapes; with `max_bytes`, no more than that in all."""
    out: dict[str, torch.Tensor] = {}
    held = 0
    for _ in range(_count(channel.recv(owner, tag), owner, shapes)):
        name = _name(channel.recv(owner, tag), owner, out)
        value = channel.recv(owner, tag)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise CommError(f"parameter {name!r} from {owner} is not a floating-point tensor")
        _expect(name, tuple(value.shape), shapes)
        held += value.numel() * value.element_size()
        if max_bytes is not None and held > max_bytes:
            raise WeightsError(f"the published parameters exceed this node's limit of {max_bytes} bytes")
        out[name] = value
    return out


def encode_public(params: dict[str, torch.Tensor], config: EngineConfig) -> dict[str, torch.Tensor]:
    """Party side of a public-weights secure session: every floating-point parameter as a public ring tensor in
    the session's fixed point on its device. Consumes `params` (entries are popped as they are encoded)."""
    out: dict[str, torch.Tensor] = {}
    for name in sorted(params):
        value = params.pop(name)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise WeightsError(f"public parameter {name!r} must be a floating-point tensor")
        out[name] = config.fxp.encode(value.detach().to(torch.float64), config.torch_device)
    return out


def share_public(params: dict[str, torch.Tensor], index: int, config: EngineConfig) -> dict[str, AShare]:
    """Party `index`'s shares of public parameters under the trivial sharing (x_0 = w, x_1 = x_2 = 0), in the
    session's fixed point on its device: the secret-weights protocol on open weights, with no messages. `params` is
    left as it is."""
    out: dict[str, AShare] = {}
    for name in sorted(params):
        value = params[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise WeightsError(f"public parameter {name!r} must be a floating-point tensor")
        ring_value = config.fxp.encode(value.detach().to(torch.float64), config.torch_device)
        out[name] = public_component(index, ring_value)  # type: ignore[assignment]
    return out
