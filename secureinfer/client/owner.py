"""`ModelOwner`: publishes a model, as secret shares to committees of three secure nodes, as open weights to every
party of such committees, or as open weights to plaintext workers.

    with ModelOwner.from_dir("certs", "owner", seeds=["127.0.0.1:7001"]) as owner:
        owner.publish("minilm", cfg, params)                     # secret shares to a committee of three nodes
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import PUBLIC_WORKER
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.party import PARTY_NAMES
from secureinfer.mpc.ring import DEFAULT_FRAC_BITS, FixedPoint
from secureinfer.net.membership import CommitteeView, pick_secure_nodes
from secureinfer.net.wire import config_to_json
from secureinfer.strategy import StrategyError, check_frac_bits
from secureinfer.v1 import node_pb2

from .connection import NetworkError, SessionSpec
from .member import Member, privacy_code


class ModelOwner(Member):
    """Publishes models: secret shares to committees of three secure nodes, or open weights to plaintext workers."""

    def publish(self, model_id: str, cfg: ModelConfig, params: dict[str, torch.Tensor], *, privacy: str = "secret",
                committees: int = 1, nodes: Sequence[str] = (), wait_s: float = 30.0, public_weights: bool = False,
                frac_bits: int | None = None) -> list[CommitteeView]:
        """Publish to `committees` disjoint committees (or the given node ids) and wait up to `wait_s` until the
        membership view shows them all (so clients find the model right away); returns them.

        `public_weights` (an open model, privacy "secret"): send the weights in the clear to every party of each
        committee instead of sharing them; requests with SecureStrategy(public_weights=True) run there, with the
        prompt and every activation still secret shares.

        `frac_bits` (privacy "secret", in [12, 24]; None: 18): the fixed point the weights are encoded at and every
        session of the model runs with; requests then need SecureStrategy(frac_bits=...) equal to it, or none."""
        _check_publish_options(privacy, public_weights, frac_bits)
        chosen = self._choose(self.nodes(), privacy, committees, nodes)
        spec = SessionSpec(task=node_pb2.TASK_PUBLISH, privacy=privacy_code(privacy), model_id=model_id,
                           model_config_json=config_to_json(cfg), public_weights=public_weights,
                           fractional_bits=frac_bits or 0)
        published = serving.owner_params(cfg, params) if privacy == "secret" else params
        fxp = FixedPoint(frac_bits or DEFAULT_FRAC_BITS)
        for view in chosen:
            self.connector.run_session(view, spec, lambda channel: _send(channel, published, privacy, public_weights,
                                                                         fxp))
        self._wait_until_listed(model_id, privacy, chosen, wait_s)
        return chosen

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
        by_id = {r.node_id: r for r in records}
        size = 3 if privacy == "secret" else 1
        if nodes:
            missing = [n for n in nodes if n not in by_id]
            if missing or len(nodes) % size:
                raise NetworkError(f"nodes must be live and a multiple of {size}; unknown: {missing}")
            groups = [list(nodes[i:i + size]) for i in range(0, len(nodes), size)]
        else:
            groups, used = [], set()
            for _ in range(committees):
                if privacy == "secret":
                    picked = pick_secure_nodes(records, 3, exclude=tuple(used))
                else:
                    picked = [r for r in records if "plaintext" in r.roles and r.node_id not in used][:1]
                    if not picked:
                        raise NetworkError("no live plaintext worker is free for this model")
                groups.append([r.node_id for r in picked])
                used.update(groups[-1])
        return [CommitteeView(committee_id=secrets.token_hex(6), node_ids=tuple(g),
                              addresses=tuple(by_id[n].address for n in g), privacy=privacy_code(privacy))
                for g in groups]


def _check_publish_options(privacy: str, public_weights: bool, frac_bits: int | None) -> None:
    """ValueError for publishing options that do not fit the privacy, or a fixed point sessions may not use."""
    if public_weights and privacy != "secret":
        raise ValueError("public_weights is for secure committees (privacy='secret'); a plaintext worker holds "
                         "the weights in the clear anyway")
    if frac_bits is not None and privacy != "secret":
        raise ValueError("frac_bits is for secure committees (privacy='secret'); a plaintext worker computes in "
                         "floating point")
    try:
        check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    except StrategyError as exc:
        raise ValueError(str(exc)) from exc


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
