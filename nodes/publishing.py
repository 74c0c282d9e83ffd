"""Publishing a model to this node: receive the owner's weights (secret shares, or an open model's weights in the
clear), check their names and shapes as they arrive, keep them (nodes/vault.py, with a data directory), build the
model and store it with the record the network sees; and, at start-up, rebuilding the models kept before a restart.

A secure committee's owner publishes at a precision f (OpenSession.fractional_bits, 0 = 18): the shares arrive
encoded at f, public weights are encoded here at f, and the hosted record advertises it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from secureinfer.models import checkpoint
from secureinfer.models.config import ModelConfig, optional_parameter_shapes, parameter_shapes
from secureinfer.mpc.approx import profile as approx_profile
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.models.session import release_memory
from secureinfer.mpc.party import EngineConfig, Party
from secureinfer.mpc.ring import FixedPoint
from secureinfer.mpc.runtime import OWNER
from secureinfer.mpc.shares import AShare
from secureinfer.net import owners
from secureinfer.net.errors import NodeError
from secureinfer.net.membership import hosted_frac_bits
from secureinfer.net.wire import config_from_json
from secureinfer.v1 import node_pb2

from .logs import log_event
from .opening import check_public, check_shapes
from .sessions import NodeSession
from .store import Hosted, ModelStore, public_model, published_record
from .vault import Kept, Vault, VaultError

_COMPONENTS = ("#lo", "#hi")  # how a party's two components of a share are named in a kept model


def publish(session: NodeSession) -> int:
    """Receive, keep and store the model a publish session carries (its worker thread); returns how many models this
    node hosts now."""
    request, runtime = session.request, session.runtime
    cfg = config_from_json(request.model_config_json)
    record = published_record(request)
    runtime.store.check_room(record.model_id, record.committee_id)
    owner = session.caller.name
    shapes = {**optional_parameter_shapes(cfg), **parameter_shapes(cfg)}
    if session.secret and request.public_weights:  # an open model's (folded) parameters, in the clear
        open_params = check_public(cfg, weights.receive_public(session.channel, OWNER, shapes=shapes))
        _keep(runtime.vault, Kept(record, owner, dict(open_params)))
        hosted = _hosted_open(record, cfg, open_params, owner, session.engine_config())
    elif session.secret:
        party = Party.receiver(session.index, session.channel, session.engine_config())
        shares = weights.receive(party, OWNER, shapes=shapes)
        check_shapes(cfg, {k: tuple(v.shape) for k, v in shares.items()})
        _keep(runtime.vault, Kept(record, owner, _components(shares)))
        hosted = _hosted_shares(record, cfg, shares, owner)
    else:
        received = weights.receive_public(session.channel, OWNER, max_bytes=runtime.max_model_bytes)
        params = checkpoint.check_parameters(cfg, received, torch.float64)
        _keep(runtime.vault, Kept(record, owner, params))
        hosted = Hosted(record, cfg, public_model(cfg, params, runtime.device), owner=owner)
    _store(runtime.store, runtime.vault, hosted)
    session.channel.send(OWNER, b"stored", "stored")
    return len(runtime.store)


def restore_kept(vault: Vault, store: ModelStore, device: str, logger: logging.Logger,
                 ca_pem: bytes | None = None) -> int:
    """Host again every model `vault` kept before a restart; a file that is corrupt, truncated, another node's or
    sealed with another key, or (given the network's `ca_pem`) whose record's owner signature does not verify, is
    refused with a log line and skipped. Returns how many were restored."""
    restored = 0
    for path in vault.files():
        try:
            hosted = restore(vault.load(path), device, ca_pem)
            store.put(hosted)
        except Exception as exc:  # noqa: BLE001 - a bad file is skipped, whatever is wrong with it
            log_event(logger, "WARNING", "kept model refused", file=str(path), reason=str(exc))
            continue
        restored += 1
        log_event(logger, "INFO", "kept model restored", model=hosted.record.model_id,
                  committee=hosted.record.committee_id, party=hosted.record.party_index)
    return restored


def restore(kept: Kept, device: str, ca_pem: bytes | None = None) -> Hosted:
    """A kept model rebuilt on this node's `device` as it was published (VaultError if the file's contents do not
    make the model its record describes, or, given `ca_pem`, if the record's owner signature does not verify)."""
    record = kept.record
    if ca_pem is not None:
        try:
            owners.verify(record, ca_pem)
        except owners.OwnerError as exc:
            raise VaultError(str(exc)) from None
    try:
        cfg = config_from_json(record.config_json)
        if record.privacy == node_pb2.PRIVACY_SECRET and record.public_weights:
            params = {k: v.to(torch.float64) for k, v in kept.tensors.items()}
            config = EngineConfig(fxp=FixedPoint(hosted_frac_bits(record)), device=device)
            return _hosted_open(record, cfg, check_public(cfg, params), kept.owner, config)
        if record.privacy == node_pb2.PRIVACY_SECRET:
            shares = _shares(kept.tensors, record.party_index, device)
            check_shapes(cfg, {k: tuple(v.shape) for k, v in shares.items()})
            return _hosted_shares(record, cfg, shares, kept.owner)
        params = checkpoint.check_parameters(cfg, kept.tensors, torch.float64)
        return Hosted(record, cfg, public_model(cfg, params, device), owner=kept.owner)
    except VaultError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the contents get wrong, the file is refused, never the node
        raise VaultError(f"its contents do not make model {record.model_id!r}: {exc}") from None


def _hosted_open(record: node_pb2.HostedModel, cfg: ModelConfig, open_params: dict[str, torch.Tensor], owner: str,
                 config: EngineConfig) -> Hosted:
    """A public-weights committee's model: built on the parameters in the clear, which it keeps beside it."""
    model: Any = serving.build_model(cfg, dict(open_params), approx_profile.ACCURATE, config=config)
    release_memory()
    return Hosted(record, cfg, model, owner=owner, open_params=open_params)


def _hosted_shares(record: node_pb2.HostedModel, cfg: ModelConfig, shares: dict[str, AShare], owner: str) -> Hosted:
    """A secret-weights committee's model: built on this party's shares (the dict is consumed)."""
    model = serving.build_model(cfg, shares, approx_profile.ACCURATE)
    release_memory()
    return Hosted(record, cfg, model, owner=owner)


def _components(shares: dict[str, AShare]) -> dict[str, torch.Tensor]:
    """A party's shares as named ring tensors, two per parameter (the inverse of `_shares`)."""
    return {name + suffix: part for name, share in shares.items()
            for suffix, part in zip(_COMPONENTS, (share.lo, share.hi))}


def _shares(tensors: dict[str, torch.Tensor], index: int, device: str) -> dict[str, AShare]:
    """Party `index`'s shares from a kept model's named components, on `device`."""
    names = {name[:-len(_COMPONENTS[0])] for name in tensors if name.endswith(_COMPONENTS[0])}
    if {n + s for n in names for s in _COMPONENTS} != set(tensors):
        raise VaultError("the kept shares do not pair up")
    return {n: AShare(tensors[n + _COMPONENTS[0]].to(device), tensors[n + _COMPONENTS[1]].to(device), index)
            for n in sorted(names)}


def _keep(vault: Vault | None, kept: Kept) -> None:
    """Write a published model to the node's vault, if it has one; a failure fails the publish (its owner learns)."""
    if vault is None:
        return
    try:
        vault.save(kept)
    except (OSError, VaultError) as exc:
        raise NodeError(f"this node could not keep model {kept.record.model_id!r} in its data_dir: {exc}") from None


def _store(store: ModelStore, vault: Vault | None, hosted: Hosted) -> None:
    """Host the model; if that fails after it was kept, its file goes too (a restart must not bring it back)."""
    try:
        store.put(hosted)
    except BaseException:
        if vault is not None:
            vault.remove(hosted.record.model_id, hosted.record.committee_id)
        raise
