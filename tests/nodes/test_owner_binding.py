"""Models bound to their owners, over real gRPC daemons: a rogue owner (oscar) publishing "my-model" to its own fast
nodes (g0-g2) never receives a prompt meant for olivia's "my-model" (n0-n2), not even when its nodes claim
olivia's id; nodes refuse to publish outside the caller's namespace, or without the owner's valid signature, and
serve only models whose owner signature verifies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
import torch

from secureinfer.client import Client, ClientError, InvalidRequest, ModelNotFound, ModelOwner
from secureinfer.models.config import ModelConfig
from secureinfer.net import owners
from secureinfer.net.certs import Identity
from secureinfer.net.wire import config_to_json
from secureinfer.nodes.daemon import NodeDaemon
from secureinfer.nodes.store import Hosted
from secureinfer.v1 import node_pb2

from .committee import sealed
from .netutil import Cluster, LoopThread, Pki, finish, open_message, tiny_config, tiny_params

Code = grpc.StatusCode
OLIVIAS = ("n0", "n1", "n2")
ROGUES = ("g0", "g1", "g2")  # oscar runs these: faster than olivia's, as far as their records say
PROMPT = torch.tensor([[2, 3, 4]])


@dataclass
class World:
    cluster: Cluster
    pki: Pki
    cfg: ModelConfig
    params: dict[str, torch.Tensor]

    @property
    def seeds(self) -> list[str]:
        return [self.cluster.address("n0")]

    def client(self) -> Client:
        return Client(self.pki.identity("alice"), self.seeds, timeout_s=60)

    def owner(self, name: str) -> ModelOwner:
        return ModelOwner(self.pki.identity(name), self.seeds, timeout_s=60)

    def daemon(self, name: str) -> NodeDaemon:
        return self.cluster.daemons[name]

    def refresh(self, names: tuple[str, ...]) -> None:
        """Re-sign these nodes' records and hand them to the seed at once (what the next gossip round does)."""
        seed = self.daemon("n0")
        for name in names:
            self.daemon(name)._refresh_record()
            seed.table.merge([self.daemon(name).table.get(name)])


def dialled(client: Client) -> set[str]:
    """The nodes this client opened a channel to (by the name it expected), the seed's generic name aside."""
    return {node for _, node in client.connector._channels} & {*OLIVIAS, *ROGUES}


@pytest.fixture
def world(pki: Pki, loop: LoopThread) -> Iterator[World]:
    """n0-n2 and g0-g2 gossiping through n0; olivia publishes "my-model" to n0-n2 and oscar his own "my-model" (other
    weights) to g0-g2, whose records then claim a speed no honest node has."""
    cluster = Cluster(pki, loop)
    try:
        cluster.start("n0", gossip_interval_s=0.25)
        for name in (*OLIVIAS[1:], *ROGUES):
            cluster.start(name, seeds=(cluster.address("n0"),), gossip_interval_s=0.25)
        cfg = tiny_config()
        out = World(cluster, pki, cfg, tiny_params(cfg))
        with out.owner("olivia") as olivia, out.owner("oscar") as oscar:
            olivia.publish("my-model", cfg, out.params, nodes=OLIVIAS)
            oscar.publish("my-model", cfg, tiny_params(cfg, seed=7), nodes=ROGUES)
        for name in ROGUES:
            out.daemon(name).capability.matmul_gflops = 1e9
        out.refresh(ROGUES)
        yield out
    finally:
        cluster.close()


def forged_seal(signer: Identity, record: node_pb2.HostedModel) -> node_pb2.OwnerSeal:
    """`signer`'s signature over `record`'s statement, made by hand (owners.seal refuses another's namespace)."""
    return node_pb2.OwnerSeal(certificate_pem=signer.cert_pem, signature=signer.sign(owners.statement(record)))


def claim_olivias_id(world: World, model_id: str, *, signed: bool) -> None:
    """What oscar's own (modified) nodes can do: list his model under olivia's id in their records, with his
    signature over it, or with none."""
    for name in ROGUES:
        store = world.daemon(name).store
        [mine] = [r for r in store.records() if r.model_id == "oscar/my-model"]
        hosted = store.get(mine.model_id, mine.committee_id, mine.privacy)
        record = node_pb2.HostedModel()
        record.CopyFrom(mine)
        record.model_id = model_id
        record.ClearField("owner_seal")
        if signed:
            record.owner_seal.CopyFrom(forged_seal(world.pki.identity("oscar"), record))
        store.put(Hosted(record, hosted.cfg, hosted.model, owner="oscar"))
    world.refresh(ROGUES)


def test_a_rogue_owners_model_of_the_same_name_never_receives_a_prompt_meant_for_olivias(world: World) -> None:
    """The attack: the rogue's committee is the fastest hosting "my-model". A bare name two owners publish is
    refused (listing both) before anything is sent; naming or pinning olivia runs on her committee only."""
    with world.client() as client:
        with pytest.raises(InvalidRequest, match=r"several owners \(olivia, oscar\)"):
            client.generate("my-model", PROMPT, 2)
        assert dialled(client) == set(), "a prompt was sent before the owner was known"
        pinned = client.generate("my-model", PROMPT, 2, owner="olivia")
        named = client.generate("olivia/my-model", PROMPT, 2)
        assert pinned.plan.node_ids == named.plan.node_ids == OLIVIAS
        assert torch.equal(pinned.tokens, named.tokens)
        theirs = client.generate("my-model", PROMPT, 2, owner="oscar")  # asked for by name: the rogue's own model
        assert theirs.plan.node_ids == ROGUES
    with world.client() as client:
        client.generate("olivia/my-model", PROMPT, 2)
        assert dialled(client) == set(OLIVIAS)


@pytest.mark.parametrize("signed", [True, False], ids=["signed-by-the-rogue", "unsigned"])
def test_rogue_nodes_claiming_olivias_id_are_refused_by_a_client_pinning_olivia(world: World, signed: bool) -> None:
    """The rogue's nodes list olivia's id themselves (their records are theirs to sign): a client asking for it,
    or pinning olivia, never uses them, and a model only they claim is refused with the reason."""
    claim_olivias_id(world, "olivia/my-model", signed=signed)
    claim_olivias_id(world, "olivia/only-theirs", signed=signed)
    with world.client() as client:
        for ask in (dict(model_id="olivia/my-model"), dict(model_id="my-model", owner="olivia")):
            model_id = ask.pop("model_id")
            assert client.generate(model_id, PROMPT, 2, **ask).plan.node_ids == OLIVIAS
            assert [v.node_ids for v in client.committees(model_id, **ask)] == [OLIVIAS]
        reason = "signed by owner 'oscar'" if signed else "no owner signature"
        for ask in (dict(model_id="olivia/only-theirs"), dict(model_id="only-theirs", owner="olivia")):
            model_id = ask.pop("model_id")
            with pytest.raises(ModelNotFound, match=reason) as info:
                client.generate(model_id, PROMPT, 2, **ask)
            assert isinstance(info.value, ClientError)
        rogue = next(v for v in client.membership().choose_committees("oscar/my-model"))
        with pytest.raises(InvalidRequest, match="without its owner's valid signature"):  # named by hand
            client.generate("olivia/my-model", PROMPT, 2, committee=rogue)
        assert dialled(client) == set(OLIVIAS)


def test_a_node_serves_only_models_whose_owner_signature_verifies(world: World) -> None:
    """Even an honest node that holds a record without its owner's valid signature (restored from an old file, or
    put there by hand) refuses a session for it: PERMISSION_DENIED."""
    claim_olivias_id(world, "olivia/my-model", signed=True)
    out = world.cluster.run(_open(world, "alice", "g0", open_message(
        world.cluster, ROGUES, 0, model_id="olivia/my-model", committee_id=_committee(world, "g0"),
        output="all")))
    assert out.code == Code.PERMISSION_DENIED and "signed by owner 'oscar'" in out.details, out
    good = world.cluster.run(_open(world, "alice", "g0", open_message(
        world.cluster, ROGUES, 0, model_id="oscar/my-model", committee_id=_committee(world, "g0"), output="all")))
    assert good.code != Code.PERMISSION_DENIED, good


def test_owners_publish_only_in_their_own_namespace_with_their_signature(world: World) -> None:
    cfg_json = config_to_json(world.cfg)
    with world.owner("oscar") as oscar:
        with pytest.raises(InvalidRequest, match="namespace of 'olivia'"):
            oscar.publish("olivia/my-model", world.cfg, world.params, nodes=ROGUES)

    def publish_open(model_id: str, seal_by: str | None, **fields) -> node_pb2.ClientMessage:
        message = open_message(world.cluster, ("g3",), 0, task=node_pb2.TASK_PUBLISH, model_id=model_id,
                               committee_id="c-new", model_config_json=cfg_json)
        if seal_by is not None:
            sealed(message, world.pki.identity(seal_by))
        for name, value in fields.items():  # changed after signing
            setattr(message.open, name, value)
        return message

    world.cluster.start("g3", seeds=(world.cluster.address("n0"),))
    refusals = {
        "another owner's namespace": (publish_open("olivia/x", "olivia"), "in 'olivia''s namespace"),
        "a bare name": (publish_open("x", None), "OWNER/NAME"),
        "no signature": (publish_open("oscar/x", None), "no owner signature"),
        "another owner's signature": (publish_open("oscar/x", None), "signed by owner 'olivia'"),
        "changed after signing": (publish_open("oscar/x", "oscar", model_config_json=config_to_json(
            tiny_config(n_layers=2))), "does not match"),
    }
    olivias = refusals["another owner's signature"][0].open
    olivias.owner_seal.CopyFrom(forged_seal(world.pki.identity("olivia"), owners.hosted_record(
        "oscar/x", "c-new", ("g3",), node_pb2.PRIVACY_PUBLIC, cfg_json)))
    for case, (message, reason) in refusals.items():
        out = world.cluster.run(_open(world, "oscar", "g3", message))
        assert out.code == Code.PERMISSION_DENIED and reason in out.details, (case, out)
    accepted = world.cluster.run(_open(world, "oscar", "g3", publish_open("oscar/x", "oscar"), accept_only=True))
    assert accepted.code == Code.OK, accepted


def _committee(world: World, node: str) -> str:
    return next(r.committee_id for r in world.daemon(node).store.records() if r.model_id == "oscar/my-model")


async def _open(world: World, who: str, node: str, message: node_pb2.ClientMessage, accept_only: bool = False):
    """Open a session at `node` as `who` with `message`; its outcome (with `accept_only`: OK once accepted)."""
    call = world.cluster.inference(who, node).Session(timeout=10)
    await call.write(message)
    if accept_only:
        first = await call.read()
        call.cancel()
        return _Accepted(Code.OK if first.HasField("accepted") else Code.UNKNOWN)
    await call.done_writing()
    return await finish(call)


@dataclass
class _Accepted:
    code: grpc.StatusCode
