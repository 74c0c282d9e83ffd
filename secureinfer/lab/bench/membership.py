"""`secureinfer bench membership`: many nodes' signed records spread by the nodes' own gossip code, in one process.

Every simulated node has a real certificate from one CA, signs its own record (secureinfer.net.membership), and holds
a MembershipTable; each round every node, in random order, does what the daemon's gossip round does: it picks its
targets with `gossip_targets` (the daemon's fanout and seed rules), sends its live records as a serialized
GossipRequest, and the target does what the Membership servicer does (merge, answer with its own live records as a
GossipReply) before the caller merges the reply. Only gRPC is left out: messages travel as their wire bytes. Some
members also push forged records (unsigned, tampered, speaking for another node, from another CA) every round; none
may enter any table. Reported: rounds (and seconds at the daemon's default interval) until every table holds every
record, CPU seconds, bytes per node per round, and the time to choose committees from a full table.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from secureinfer.net.certs import NODE_SAN, Identity, create_ca, issue
from secureinfer.net.membership import MembershipTable, gossip_targets, pick_secure_nodes, sign_record
from secureinfer.nodes.config import NodeConfig
from secureinfer.nodes.daemon import ABSENT_SEED_EVERY, GOSSIP_FANOUT
from secureinfer.v1 import node_pb2

from . import command_line, write_json

MODEL = "bench-model"
FORGED_ADDRESS = "forged.invalid:1"
FORGED_NODE = "forged-node"
TTL_S = 3600.0  # records outlive the run: the run measures spreading, not expiry


@dataclass(frozen=True)
class SimSpec:
    """One simulation: `nodes` members (party triples host MODEL), the first `seeds` of them the seeds every node is
    configured with, `forgers` members that push forged records, at most `max_rounds` rounds."""

    nodes: int = 1000
    seeds: int = 3
    forgers: int = 2
    max_rounds: int = 60
    seed: int = 0
    repeat: int = 5  # committee selection timings, the median reported

    def __post_init__(self) -> None:
        if self.nodes < 3:
            raise ValueError(f"nodes must be at least 3, got {self.nodes}")
        if self.seeds < 1 or self.forgers < 0 or self.seeds + self.forgers >= self.nodes:
            raise ValueError(f"need seeds >= 1, forgers >= 0 and an honest node besides the seeds; got "
                             f"{self.seeds} seeds and {self.forgers} forgers of {self.nodes} nodes")
        if self.max_rounds < 1 or self.repeat < 1:
            raise ValueError("max_rounds and repeat must be positive")


@dataclass
class SimNode:
    """A simulated member: its identity, address, table, gossip round counter and traffic."""

    identity: Identity
    address: str
    table: MembershipTable
    forged: list[node_pb2.NodeRecord] = field(default_factory=list)  # pushed with every message it sends
    rounds: int = 0
    known: int = 1
    sent: int = 0
    received: int = 0

    @property
    def node_id(self) -> str:
        return self.identity.name


@dataclass(frozen=True)
class Round:
    """One round's figures: nodes done, calls, bytes per node (sent and received), CPU seconds of all nodes."""

    round: int
    complete: int
    calls: int
    sent_mean: float
    received_mean: float
    traffic_max: int
    seconds: float


@dataclass(frozen=True)
class SimResult:
    """The whole simulation's figures (see the module docstring)."""

    nodes: int
    seeds: int
    fanout: int
    converged_round: int | None
    converged_s_at_interval: float | None
    gossip_interval_s: float
    cpu_s: float  # CPU seconds of the start-up rounds, every node's work together
    cpu_s_per_node_per_round: float  # the same per node and round: what one node spends on gossip each round
    record_bytes: int
    rejected: int
    forged_accepted: int
    committees: int
    choose_committees_ms: float
    pick_secure_nodes_ms: float
    live_copy_ms: float
    rounds: list[Round]
    update_round: int | None  # rounds until one node's re-signed record (a heartbeat) reached every table
    update_rounds: list[Round]

    def summary(self) -> str:
        """The per-round table and the headline figures."""
        lines = ["start-up: every node knows only the seeds", *_table(self.rounds)]
        lines += [f"every table holds all {self.nodes} records after {self.converged_round} rounds "
                  f"(~{self.converged_s_at_interval:.0f} s at the default {self.gossip_interval_s:g} s interval)"
                  if self.converged_round is not None else f"NOT converged after {len(self.rounds)} rounds"]
        lines += ["a heartbeat: one node re-signs its record", *_table(self.update_rounds)]
        lines += [f"every table holds the new record after {self.update_round} rounds"
                  if self.update_round is not None else f"the new record NOT everywhere after "
                  f"{len(self.update_rounds)} rounds",
                  f"simulation {self.cpu_s:.1f} CPU s in one process: {self.cpu_s_per_node_per_round * 1e3:.2f} ms of "
                  f"CPU per node per round; a record is {self.record_bytes} bytes on the wire",
                  f"forged records: {self.rejected} rejected, {self.forged_accepted} accepted anywhere",
                  f"from a full table: choose_committees {self.choose_committees_ms:.1f} ms ({self.committees} "
                  f"committees), pick_secure_nodes {self.pick_secure_nodes_ms:.1f} ms, live() "
                  f"{self.live_copy_ms:.1f} ms"]
        return "\n".join(lines)


def _table(rounds: list[Round]) -> list[str]:
    """Per-round lines: nodes done, calls, bytes per node, CPU seconds."""
    lines = [f"{'round':>5} {'done':>6} {'calls':>6} {'sent KB/node':>13} {'recv KB/node':>13} {'max KB/node':>12} "
             f"{'cpu s':>7}"]
    return lines + [f"{r.round:>5} {r.complete:>6} {r.calls:>6} {r.sent_mean / 1e3:>13.1f} "
                    f"{r.received_mean / 1e3:>13.1f} {r.traffic_max / 1e3:>12.1f} {r.seconds:>7.2f}" for r in rounds]


def make_nodes(spec: SimSpec, directory: Path, now: float) -> list[SimNode]:
    """`spec.nodes` members with certificates from one CA (each its own operator), their signed records installed."""
    create_ca(directory)
    names = [f"n{i:04d}" for i in range(spec.nodes)]
    for name in names:
        issue(directory, name, "node", operator=f"op-{name}")
    rng = random.Random(spec.seed)
    nodes = []
    for i, name in enumerate(names):
        identity = Identity.load(directory, name)
        node = SimNode(identity, f"{name}.sim:7070", MembershipTable(identity.ca_pem, name, clock=lambda: now))
        record = node_pb2.NodeRecord(
            node_id=name, address=node.address, roles=["secure"], healthy=True, heartbeat=1, issued_at=now,
            ttl_s=TTL_S, models=hosted(names, i),
            capability=node_pb2.Capability(device="cpu", memory_bytes=1 << 34, cpu_count=16,
                                           matmul_gflops=round(rng.uniform(20.0, 200.0), 1)))
        node.table.set_self(sign_record(identity, record))
        nodes.append(node)
    return nodes


def hosted(names: list[str], i: int) -> list[node_pb2.HostedModel]:
    """Node i's share of MODEL: the members of each whole triple host it as one committee."""
    first = i - i % 3
    if first + 3 > len(names):
        return []
    return [node_pb2.HostedModel(model_id=MODEL, committee_id=f"c{first // 3:04d}", node_ids=names[first:first + 3],
                                 party_index=i % 3, privacy=node_pb2.PRIVACY_SECRET, arch="gpt2")]


def forged_records(victim: SimNode, forger: SimNode, rogue: Identity, now: float) -> list[node_pb2.NodeRecord]:
    """What a dishonest member pushes: `victim`'s record altered after signing (and made newer), a record without
    signature, one signed by the forger but naming the victim, and one from another CA's certificate."""
    tampered = victim.table.get(victim.node_id)
    tampered.address, tampered.heartbeat = FORGED_ADDRESS, tampered.heartbeat + 10 ** 9
    unsigned = node_pb2.NodeRecord(node_id=FORGED_NODE, address=FORGED_ADDRESS, roles=["secure"], healthy=True,
                                   heartbeat=1, issued_at=now, ttl_s=TTL_S)
    impostor = sign_record(forger.identity, node_pb2.NodeRecord(
        node_id=forger.node_id, address=FORGED_ADDRESS, roles=["secure"], healthy=True, heartbeat=10 ** 12,
        issued_at=now, ttl_s=TTL_S))
    impostor.node_id = victim.node_id
    foreign = sign_record(rogue, node_pb2.NodeRecord(node_id=rogue.name, address=FORGED_ADDRESS, roles=["secure"],
                                                     healthy=True, heartbeat=10 ** 12, issued_at=now, ttl_s=TTL_S))
    return [tampered, unsigned, impostor, foreign]


def exchange(caller: SimNode, callee: SimNode) -> None:
    """One Gossip call: the caller's live records (and any forgeries) to the callee as wire bytes, the callee's
    merge and reply (what the Membership servicer does), the caller's merge of the reply (the gossip round)."""
    request = node_pb2.GossipRequest(records=caller.table.live() + caller.forged).SerializeToString()
    callee.known += callee.table.merge(list(node_pb2.GossipRequest.FromString(request).records))
    reply = node_pb2.GossipReply(records=callee.table.live() + callee.forged).SerializeToString()
    caller.known += caller.table.merge(list(node_pb2.GossipReply.FromString(reply).records))
    caller.sent, caller.received = caller.sent + len(request), caller.received + len(reply)
    callee.sent, callee.received = callee.sent + len(reply), callee.received + len(request)


def gossip_round(nodes: list[SimNode], seeds: list[str], rng: random.Random) -> int:
    """Every node's gossip round, in random order; returns the calls made."""
    by_address = {n.address: n for n in nodes}
    calls = 0
    for node in rng.sample(nodes, len(nodes)):
        node.rounds += 1
        for address, name in gossip_targets(node.table, seeds, node.address, node.rounds, rng, GOSSIP_FANOUT,
                                            ABSENT_SEED_EVERY):
            callee = by_address[address]
            if name not in (NODE_SAN, callee.node_id):
                continue  # TLS would refuse a peer whose certificate names another node
            exchange(node, callee)
            calls += 1
    return calls


def spread(spec: SimSpec, nodes: list[SimNode], rng: random.Random, done: Callable[[SimNode], bool]
           ) -> tuple[list[Round], int | None]:
    """Gossip rounds until `done` holds at every node (or max_rounds); the rounds and the one that finished."""
    seeds = [n.address for n in nodes[:spec.seeds]]
    rounds: list[Round] = []
    for number in range(1, spec.max_rounds + 1):
        for node in nodes:
            node.sent = node.received = 0
        start = time.process_time()
        calls = gossip_round(nodes, seeds, rng)
        seconds = time.process_time() - start
        complete = sum(map(done, nodes))
        rounds.append(Round(number, complete, calls, statistics.fmean(n.sent for n in nodes),
                            statistics.fmean(n.received for n in nodes), max(n.sent + n.received for n in nodes),
                            seconds))
        if complete == len(nodes):
            return rounds, number
    return rounds, None


def resign(node: SimNode) -> int:
    """`node` re-signs its record with a higher heartbeat and a new speed (what every heartbeat does); the
    heartbeat."""
    record = node.table.get(node.node_id)
    record.heartbeat += 1
    record.capability.matmul_gflops += 1.0
    node.table.set_self(sign_record(node.identity, record))
    return record.heartbeat


def holds(node_id: str, heartbeat: int) -> Callable[[SimNode], bool]:
    """Whether a node's table holds `node_id`'s record at `heartbeat` or newer."""
    def check(node: SimNode) -> bool:
        record = node.table.get(node_id)
        return record is not None and record.heartbeat >= heartbeat
    return check


def _median_ms(action: Any, repeat: int) -> float:
    """The median CPU time of `action()` over `repeat` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        action()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e3


def simulate(spec: SimSpec, directory: Path | None = None) -> SimResult:
    """Run one simulation (certificates under `directory`, default a temporary folder) and return its figures."""
    with tempfile.TemporaryDirectory(prefix="membership-") as scratch:
        base = Path(directory or scratch)
        now = time.time()
        nodes = make_nodes(spec, base / "ca", now)
        create_ca(base / "rogue")
        issue(base / "rogue", "n0000", "node", operator="op-rogue")
        rogue = Identity.load(base / "rogue", "n0000")
        rng = random.Random(spec.seed)
        honest = len(nodes) - spec.forgers
        for forger in nodes[honest:]:
            forger.forged = forged_records(nodes[rng.randrange(honest)], forger, rogue, now)
        start = time.process_time()
        rounds, converged = spread(spec, nodes, rng, lambda n: n.known == len(nodes))
        cpu = time.process_time() - start
        changed = nodes[len(nodes) - spec.forgers - 1]  # an honest node that is no seed
        update_rounds, updated = spread(spec, nodes, rng, holds(changed.node_id, resign(changed)))
    full = nodes[0].table
    records = full.live()
    return SimResult(
        nodes=spec.nodes, seeds=spec.seeds, fanout=GOSSIP_FANOUT, converged_round=converged,
        converged_s_at_interval=None if converged is None else converged * NodeConfig.gossip_interval_s,
        gossip_interval_s=NodeConfig.gossip_interval_s, cpu_s=cpu,
        cpu_s_per_node_per_round=cpu / (spec.nodes * len(rounds)),
        record_bytes=round(statistics.fmean(r.ByteSize() for r in records)),
        rejected=sum(n.table.rejected for n in nodes), forged_accepted=forged_accepted(nodes),
        committees=len(full.choose_committees(MODEL)),
        choose_committees_ms=_median_ms(lambda: full.choose_committees(MODEL), spec.repeat),
        pick_secure_nodes_ms=_median_ms(lambda: pick_secure_nodes(records), spec.repeat),
        live_copy_ms=_median_ms(full.live, spec.repeat), rounds=rounds, update_round=updated,
        update_rounds=update_rounds)


def forged_accepted(nodes: list[SimNode]) -> int:
    """Forged records held by any table: a record at the forged address or naming a node that is no member."""
    members = {n.node_id for n in nodes}
    return sum(r.address == FORGED_ADDRESS or r.node_id not in members for n in nodes for r in n.table.live())


def main(args: Any) -> int:
    """`secureinfer bench membership`: run the simulation, print its table, write JSON if asked."""
    spec = SimSpec(nodes=args.nodes, seeds=args.seeds, forgers=args.forgers, max_rounds=args.max_rounds,
                   seed=args.seed)
    result = simulate(spec)
    print(result.summary())
    if args.json:
        rerun = [f"--nodes={spec.nodes}", f"--seeds={spec.seeds}", f"--forgers={spec.forgers}",
                 f"--max-rounds={spec.max_rounds}", f"--seed={spec.seed}", f"--json={args.json}"]
        write_json(args.json, "membership", [asdict(result)], spec=asdict(spec),
                   command=command_line(["secureinfer", "bench", "membership"], rerun))
    return 0 if result.converged_round is not None and result.forged_accepted == 0 else 1
