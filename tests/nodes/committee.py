"""A running committee for node tests: three daemons hosting a tiny GPT-2 as secret shares (n0, n1, n2) and in the
clear (n0), with SDK connectors for a client (alice) and the model owner (olivia)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from secureinfer.client.connection import Connector, SessionSpec
from secureinfer.models.config import ModelConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.party import PARTY_NAMES, EngineConfig
from secureinfer.net import owners
from secureinfer.net.certs import Identity
from secureinfer.net.membership import CommitteeView
from secureinfer.net.wire import config_to_json
from secureinfer.v1 import node_pb2

from .netutil import Cluster, LoopThread, Pki, tiny_config, tiny_params

SECRET = ("n0", "n1", "n2")
PUBLIC = ("n0",)


@dataclasses.dataclass
class Net:
    """The running committee, its tiny model, and SDK connectors for a client (alice) and the owner (olivia)."""

    cluster: Cluster
    cfg: ModelConfig
    params: dict[str, torch.Tensor]
    alice: Connector
    olivia: Connector

    def view(self, nodes: tuple[str, ...] = SECRET, committee_id: str | None = None) -> CommitteeView:
        secret = len(nodes) == 3
        return CommitteeView(committee_id or ("c-secret" if secret else "c-public"), nodes,
                             tuple(self.cluster.address(n) for n in nodes),
                             node_pb2.PRIVACY_SECRET if secret else node_pb2.PRIVACY_PUBLIC)

    def run(self, coro: Any, timeout: float = 20.0) -> Any:
        return self.cluster.run(coro, timeout)


def sealed(message: node_pb2.ClientMessage, owner: Identity) -> node_pb2.ClientMessage:
    """A publish `open` message carrying `owner`'s signature over the record its node will make of it."""
    request = message.open
    record = owners.hosted_record(request.model_id, request.committee.committee_id, request.committee.node_ids,
                                  request.privacy, request.model_config_json, public_weights=request.public_weights,
                                  fractional_bits=request.fractional_bits)
    request.owner_seal.CopyFrom(owners.seal(owner, record))
    return message


def publish(owner: Connector, view: CommitteeView, cfg: ModelConfig, params: dict[str, torch.Tensor],
            timeout_s: float = 30.0, *, model_id: str = "olivia/tiny", public_weights: bool = False) -> None:
    """Publish `params` as `model_id` (in `owner`'s namespace) to `view` (secret shares, open weights to a worker,
    or with `public_weights` open weights to every party of a secure committee), signed by `owner`, and wait for
    every party's confirmation."""
    secret = view.privacy == node_pb2.PRIVACY_SECRET
    model_id = owners.qualify(owner.identity.name, model_id)
    record = owners.hosted_record(model_id, view.committee_id, view.node_ids, view.privacy, config_to_json(cfg),
                                  public_weights=public_weights)
    spec = SessionSpec(task=node_pb2.TASK_PUBLISH, privacy=view.privacy, model_id=model_id,
                       model_config_json=config_to_json(cfg), public_weights=public_weights,
                       owner_seal=owners.seal(owner.identity, record))

    def program(channel: Channel) -> None:
        if secret and public_weights:
            for p in PARTY_NAMES:
                weights.publish_public(channel, serving.owner_params(cfg, params), p)
        elif secret:
            weights.publish(channel, serving.owner_params(cfg, params), EngineConfig().fxp)
        else:
            weights.publish_public(channel, params, serving.PUBLIC_WORKER)
        for p in PARTY_NAMES if secret else (serving.PUBLIC_WORKER,):
            if channel.recv(p, "stored") != b"stored":
                raise AssertionError(f"{p} did not store the model")

    owner.run_session(view, spec, program, timeout_s=timeout_s)


@contextlib.contextmanager
def running_committee(pki: Pki, loop: LoopThread, peer_wait_s: float, gossip: bool = False,
                      **node_settings: Any) -> Iterator[Net]:
    """Start n0-n2, publish the tiny model to them (secret) and to n0 (public); stop everything afterwards.
    `gossip`: n1 and n2 take n0 as their seed and gossip every 0.25 s, so n0's view (the SDK's) shows the committees;
    `node_settings`: NodeConfig overrides for every node."""
    cluster = Cluster(pki, loop)
    alice = olivia = None
    try:
        for name in SECRET:
            settings = {"seeds": (cluster.address("n0"),), "gossip_interval_s": 0.25} if gossip and name != "n0" else {}
            cluster.start(name, peer_wait_s=peer_wait_s, **settings, **node_settings)
        seeds = [cluster.address("n0")]
        alice = Connector(pki.identity("alice"), seeds, timeout_s=60)
        olivia = Connector(pki.identity("olivia"), seeds, timeout_s=60)
        cfg = tiny_config()
        params = tiny_params(cfg)
        net = Net(cluster, cfg, params, alice, olivia)
        publish(olivia, net.view(SECRET), cfg, params)
        publish(olivia, net.view(PUBLIC), cfg, params)
        yield net
    finally:
        for connector in (alice, olivia):
            if connector is not None:
                connector.close()
        cluster.close()
