"""`ModelOwner`: publishes a model, as secret shares to committees of three secure nodes, as open weights to every
party of such committees, or as open weights to plaintext workers.

    with ModelOwner.from_dir("certs", "olivia", seeds=["127.0.0.1:7001"]) as owner:
        owner.publish("minilm", cfg, params, tokenizer="all-MiniLM-L6-v2")  # "olivia/minilm", shares to three nodes

Models live in their owner's namespace: `publish("minilm", ...)` by the owner certificate "olivia" publishes
"olivia/minilm", and nodes refuse an owner publishing under another's name. Each committee's nodes receive, and
carry in their records, olivia's signature over what they host (the id, committee, config digest, tokenizer,
precision and privacy mode), which clients verify before they send anything there.

Too few live, usable nodes for what is asked is NotEnoughNodes, saying how many are needed and how many there are;
options that do not fit (public_weights or frac_bits on a worker, a tokenizer that is not packaged) are
InvalidRequest, before anything is sent.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import PUBLIC_WORKER
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.party import PARTY_NAMES
from secureinfer.mpc.ring import DEFAULT_FRAC_BITS, FixedPoint
from secureinfer.net import owners
from secureinfer.net.membership import CommitteeView, RecordError, check_operators, pick_secure_nodes
from secureinfer.net.wire import config_to_json
from secureinfer.strategy import StrategyError, check_frac_bits
from secureinfer.v1 import node_pb2

from .connection import SessionSpec
from .errors import InvalidRequest, NetworkError, NotEnoughNodes
from .member import Member, privacy_code
from .text import check_packaged


class ModelOwner(Member):
    """Publishes models: secret shares to committees of three secure nodes, or open weights to plaintext workers."""

    def publish(self, model_id: str, cfg: ModelConfig, params: dict[str, torch.Tensor], *, privacy: str = "secret",
                committees: int = 1, nodes: Sequence[str] = (), wait_s: float = 30.0, public_weights: bool = False,
                frac_bits: int | None = None, tokenizer: str | None = None) -> list[CommitteeView]:
        """Publish to `committees` disjoint committees (or the given node ids) and wait up to `wait_s` until the
        membership view shows them all (so clients find the model right away); returns them.

        `model_id`: NAME, published as OWNER/NAME with OWNER this certificate's name (`model_id()`), or that full
        id; another owner's OWNER/NAME is InvalidRequest. Each committee's nodes get this owner's signature over
        the record they will keep of the model, which clients verify before using them.

        `public_weights` (an open model, privacy "secret"): send the weights in the clear to every party of each
        committee instead of sharing them; requests with SecureStrategy(public_weights=True) run there, with the
        prompt and every activation still secret shares.

        `frac_bits` (privacy "secret", in [12, 24]; None: 18): the fixed point the weights are encoded at and every
        session of the model runs with; requests then need SecureStrategy(frac_bits=...) equal to it, or none.

        `tokenizer`: the packaged model (secureinfer.models.checkpoint.PACKAGED_MODELS) whose tokenizer encodes
        this model's text; it travels in the public config, so clients can send text (client.generate(model, "Hi"))."""
        _check_publish_options(privacy, public_weights, frac_bits)
        model_id = self.model_id(model_id)
        if tokenizer is not None:
            check_packaged(tokenizer)
            cfg = dataclasses.replace(cfg, tokenizer=tokenizer)
        chosen = self._choose(self.nodes(), privacy, committees, nodes)
        spec = SessionSpec(task=node_pb2.TASK_PUBLISH, privacy=privacy_code(privacy), model_id=model_id,
                           model_config_json=config_to_json(cfg), public_weights=public_weights,
                           fractional_bits=frac_bits or 0)
        published = serving.owner_params(cfg, params) if privacy == "secret" else params
        fxp = FixedPoint(frac_bits or DEFAULT_FRAC_BITS)
        for view in chosen:
            self.connector.run_session(view, self._sealed(spec, view),
                                       lambda channel: _send(channel, published, privacy, public_weights, fxp))
        self._wait_until_listed(model_id, privacy, chosen, wait_s)
        return chosen

    def model_id(self, model: str) -> str:
        """The id `model` is published as: NAME in this owner's namespace (OWNER/NAME, OWNER being this
        certificate's name); InvalidRequest for another owner's OWNER/NAME."""
        try:
            return owners.qualify(self.identity.name, model)
        except owners.OwnerError as exc:
            raise InvalidRequest(str(exc)) from None

    def _sealed(self, spec: SessionSpec, view: CommitteeView) -> SessionSpec:
        """`spec` for one committee, carrying this owner's signature over the record its nodes will make of the
        model (secureinfer/net/owners.py); a certificate that is not an owner's signs nothing (nodes refuse it)."""
        if self.identity.role != "owner":
            return spec
        record = owners.hosted_record(spec.model_id, view.committee_id, view.node_ids, spec.privacy,
                                      spec.model_config_json, public_weights=spec.public_weights,
                                      fractional_bits=spec.fractional_bits)
        return dataclasses.replace(spec, owner_seal=owners.seal(self.identity, record))

    def _wait_until_listed(self, model_id: str, privacy: str, chosen: list[CommitteeView], wait_s: float) -> None:
        """Wait until the membership view lists every committee of `chosen` as hosting the model."""
        deadline = time.monotonic() + wait_s
        wanted = {view.committee_id for view in chosen}
        while wanted - {view.committee_id for view in self.committees(model_id, privacy)}:
            if time.monotonic() > deadline:
                raise NetworkError(f"published {model_id!r}, but the nodes' records do not show it after {wait_s} s")
            time.sleep(0.2)

    def _choose(self, records: list[node_pb2.NodeRecord], privacy: str, committees: int, nodes: Sequence[str]
                ) -> list[CommitteeView]:
        """The committees (or workers) to publish to: `nodes` in groups, else `committees` disjoint ones of the
        fastest usable nodes."""
        by_id = {r.node_id: r for r in records}
        size = 3 if privacy == "secret" else 1
        if nodes:
            if len(nodes) % size:
                raise InvalidRequest(f"nodes must come in groups of {size} for privacy={privacy!r}; got {len(nodes)}")
            missing = [n for n in nodes if n not in by_id]
            if missing:
                raise NetworkError(f"nodes must be live; not in the membership view: {missing}")
            groups = [list(nodes[i:i + size]) for i in range(0, len(nodes), size)]
            if privacy == "secret":  # the nodes refuse such a committee too: say so before sending any weight
                for group in groups:
                    try:
                        check_operators(by_id[n] for n in group)
                    except RecordError as exc:
                        raise InvalidRequest(str(exc)) from None
        elif committees < 1:
            raise InvalidRequest(f"committees must be >= 1, got {committees}")
        else:
            picked = _pick(records, privacy, size * committees, committees, self.revoked)
            groups = [[r.node_id for r in picked[i:i + size]] for i in range(0, len(picked), size)]
        return [CommitteeView(committee_id=secrets.token_hex(6), node_ids=tuple(g),
                              addresses=tuple(by_id[n].address for n in g), privacy=privacy_code(privacy))
                for g in groups]


def _pick(records: list[node_pb2.NodeRecord], privacy: str, needed: int, committees: int,
          revoked: Callable[[bytes], bool] | None = None) -> list[node_pb2.NodeRecord]:
    """The `needed` fastest live, usable nodes for `committees` disjoint committees (secure nodes) or workers;
    NotEnoughNodes saying how many are needed and how many the membership view has."""
    if privacy == "secret":
        try:
            return pick_secure_nodes(records, needed, revoked=revoked)
        except RecordError as exc:
            shortage = str(exc)
    else:
        workers = [r for r in records if "plaintext" in r.roles]
        if len(workers) >= needed:
            return workers[:needed]
        shortage = f"need {needed} live plaintext workers but only {len(workers)} are usable"
    what = "committee(s) of three secure nodes" if privacy == "secret" else "plaintext worker(s)"
    raise NotEnoughNodes(f"publishing to {committees} {what}: {shortage} ({len(records)} live node(s) known); start "
                         f"more nodes or publish to fewer (committees=...)")


def _check_publish_options(privacy: str, public_weights: bool, frac_bits: int | None) -> None:
    """InvalidRequest (a ValueError) for publishing options that do not fit the privacy, or a fixed point sessions
    may not use."""
    privacy_code(privacy)
    if public_weights and privacy != "secret":
        raise InvalidRequest("public_weights is for secure committees (privacy='secret'); a plaintext worker holds "
                             "the weights in the clear anyway")
    if frac_bits is not None and privacy != "secret":
        raise InvalidRequest("frac_bits is for secure committees (privacy='secret'); a plaintext worker computes in "
                             "floating point")
    try:
        check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    except StrategyError as exc:
        raise InvalidRequest(str(exc)) from exc


def _send(channel: Channel, published: dict[str, torch.Tensor], privacy: str, public_weights: bool,
          fxp: FixedPoint) -> None:
    """Send the weights to every party of the session (shares, or the open weights to each) and wait until each
    confirms it stored them."""
    if privacy == "secret" and public_weights:
        for party in PARTY_NAMES:
            weights.publish_public(channel, published, party)
        parties = PARTY_NAMES
    elif privacy == "secret":
        weights.publish(channel, published, fxp)
        parties = PARTY_NAMES
    else:
        weights.publish_public(channel, published, PUBLIC_WORKER)
        parties = (PUBLIC_WORKER,)
    for party in parties:
        if channel.recv(party, "stored") != b"stored":
            raise NetworkError(f"{party} did not confirm the model was stored")
