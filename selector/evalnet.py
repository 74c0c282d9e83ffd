"""Network-level held-out evaluation: a plan is a strategy AND a placement.

A network case is one request shape (model, seq_len, batch, gen_tokens) on a network of several options built from
measured rows only, one host per option, never mixing hosts: for each host that measured the shape, at one of the
links it was measured over (the host's link in this network),
  committees  one per device kind the host measured secure rows on (a GPU host: a CUDA committee and a CPU
              committee; a CPU-only host: a CPU committee), three nodes of that device behind the host's link;
  workers     one per device kind the host measured plaintext rows on, behind the same link (client-worker hop
              added, evalcases.plaintext_hop_s).
A network is one link per host; every combination of the hosts' measured links is one network. A candidate is
(host, strategy) with that host's measured latency; the CUDA committee's CPU strategies are the host's CPU rows (the
same machine). Held-out unit: (model, network): the model's rows on each host at that host's link, and its
plaintext rows on those hosts, are left out of training.

The policies are selector/policies.py's; how each places here (`NetworkArena`):
  oracle      the fastest feasible measured (host, strategy) of the network
  random      a uniformly random feasible (host, strategy)
  fixed       what a selector-less client does: one fixed strategy (the training ranking's best that is feasible),
              on the first option of the membership view's default order (secureinfer/net/membership.py,
              choose_committees: the fastest slowest-member matmul speed first) that runs that strategy's mode and
              device and measured it
  cost_model, predictor   rank every measured (option, strategy) by their predicted latency, privacy and predicted
              error applied
  selector    Selector.plan(request, the network's options): the first plan that is a feasible measured
              (host, strategy) runs and its outcome is observed

    report = evaluate_network(records, EvalConfig(), toolkit=default_toolkit())
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from secureinfer.strategy import Strategy

from . import policies
from .cost import device_kind
from .evalcases import Case, EvalRequest, cases_from_records, feasible, strategy_key
from .evaluate import EvalConfig, EvalReport, replay_fold, request_stream, training_rows
from .features import CommitteeOption, NodeFeatures, Option, Plan, SelectorError, WorkerOption
from .policies import Toolkit, safe_default
from .selector import option_id


@dataclass(frozen=True)
class NetCandidate:
    """One measured strategy on one host of a network."""

    host: str
    strategy: Strategy
    total_s: float
    error: float | None
    samples: tuple[float, ...]
    bytes_per_party: float | None = None
    rounds: int | None = None

    @property
    def name(self) -> str:
        return f"{self.strategy.name}@{self.host}"


@dataclass(frozen=True)
class NetCase:
    """One request shape on one network: its options (default membership order) and measured candidates."""

    model: str
    network: tuple[tuple[str, str], ...]  # (host, link name) per host
    features: Any  # RequestFeatures of the shape
    options: tuple[Option, ...]  # membership default order: fastest slowest member first
    option_host: dict[str, str]  # option id -> host
    candidates: tuple[NetCandidate, ...]

    @property
    def group(self) -> tuple[str, str]:
        return (self.model, network_label(self.network))

    @property
    def label(self) -> str:
        f = self.features
        return f"{self.model}:{f.seq_len}:{f.batch}:{f.gen_tokens} on {network_label(self.network)}"

    def lookup(self, host: str, strategy: Strategy) -> NetCandidate | None:
        key = strategy_key(strategy)
        return next((c for c in self.candidates if c.host == host and strategy_key(c.strategy) == key), None)


def network_label(network: Sequence[tuple[str, str]]) -> str:
    return "+".join(f"{h}@{link}" for h, link in network)


def _nodes(node: NodeFeatures, tag: str, kind: str) -> NodeFeatures:
    """The case's node as a party of device kind `kind` (a CPU party on a GPU host gossips its CPU speed)."""
    if kind == "cpu" and node.device.startswith("cuda"):
        node = dataclasses.replace(node, device="cpu", matmul_gflops=node.gflops_for("cpu"))
    return dataclasses.replace(node, node_id=tag)


def _options(case: Case) -> list[tuple[Option, str]]:
    """(option, host) for every device kind and mode the host measured in this case."""
    out: list[tuple[Option, str]] = []
    kinds = {(c.strategy.mode, device_kind(c.strategy.device)) for c in case.candidates}
    for mode, kind in sorted(kinds):
        tag = f"{case.hardware}/{kind}"
        if mode == "secure":
            nodes = tuple(_nodes(case.node, f"{tag}#{i}", kind) for i in range(3))
            out.append((CommitteeOption(f"{tag}@{case.link_name}", nodes, case.link), case.hardware))
        else:
            out.append((WorkerOption(_nodes(case.node, f"{tag}-worker", kind), case.link), case.hardware))
    return out


def _speed(option: Option) -> float:
    nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
    return min(n.matmul_gflops for n in nodes)


def network_cases(records: Iterable[Any], max_networks: int | None = None) -> list[NetCase]:
    """Every shape measured on two or more hosts, on every combination of its hosts' measured links."""
    by_shape: dict[tuple, dict[str, dict[str, Case]]] = defaultdict(lambda: defaultdict(dict))
    for case in cases_from_records(records):
        f = case.features
        by_shape[(case.model, f.seq_len, f.batch, f.gen_tokens)][case.hardware][case.link_name] = case
    out = []
    for shape in sorted(by_shape, key=str):
        hosts = by_shape[shape]
        if len(hosts) < 2:
            continue
        names = sorted(hosts)
        combos = list(itertools.product(*[sorted(hosts[h]) for h in names]))
        for links in combos[:max_networks]:
            parts = [hosts[h][link] for h, link in zip(names, links)]
            pairs = [p for case in parts for p in _options(case)]
            pairs.sort(key=lambda p: (-_speed(p[0]), option_id(p[0])))
            cands = [NetCandidate(case.hardware, c.strategy, c.total_s, c.error, c.samples, c.bytes_per_party,
                                  c.rounds) for case in parts for c in case.candidates]
            out.append(NetCase(shape[0], tuple(zip(names, links)), parts[0].features, tuple(p[0] for p in pairs),
                               {option_id(o): h for o, h in pairs}, tuple(cands)))
    return out


def network_requests(cases: Sequence[NetCase], config: EvalConfig) -> list[EvalRequest]:
    out = []
    for i, case in enumerate(cases):
        for kind in config.kinds:
            for budget in config.budgets:
                f = dataclasses.replace(case.features, secret_prompt=kind.secret_prompt, open_model=kind.open_model,
                                        max_error=budget)
                req = EvalRequest(case=i, kind=kind.name, features=f)
                if any(feasible(req, c) for c in case.candidates):
                    out.append(req)
    return out


def _runs_on(option: Option, c: NetCandidate) -> bool:
    """Whether a selector-less client on `option` would run `c` there: the option's mode and its nodes' device."""
    committee = isinstance(option, CommitteeOption)
    node = option.nodes[0] if committee else option.node
    return committee == (c.strategy.mode == "secure") and device_kind(node.device) == device_kind(c.strategy.device)


def default_placements(case: NetCase, request: EvalRequest) -> dict[str, NetCandidate]:
    """Strategy name -> that strategy on the first option of the default order that runs it and measured it
    feasibly (strategies no option can run feasibly are left out)."""
    placed: dict[str, NetCandidate] = {}
    for option in case.options:
        host = case.option_host[option_id(option)]
        for c in case.candidates:
            if c.host == host and c.strategy.name not in placed and _runs_on(option, c) and feasible(request, c):
                placed[c.strategy.name] = c
    return placed


def default_placement(case: NetCase, request: EvalRequest, name: str) -> NetCandidate | None:
    """Strategy `name` on the first option of the default order that runs it and measured it feasibly."""
    return default_placements(case, request).get(name)


class NetworkArena:
    """A case is a network of options on several hosts: the scored policies rank every (option, strategy) an option
    runs, a plan maps to its option's host, and a fixed strategy runs at its default placement."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def offers(self, case: NetCase) -> list[tuple[Option, NetCandidate]]:
        return [(o, c) for o in case.options for c in case.candidates
                if c.host == case.option_host[option_id(o)] and _runs_on(o, c)]

    def options(self, case: NetCase) -> list[Option]:
        return list(case.options)

    def measured(self, case: NetCase, plan: Plan) -> NetCandidate | None:
        return case.lookup(case.option_host[option_id(plan.option)], plan.strategy)

    def placements(self, case: NetCase, request: EvalRequest) -> dict[str, NetCandidate]:
        return default_placements(case, request)

    def fixed_fallback(self, allowed: list[NetCandidate]) -> tuple[NetCandidate, str]:
        """No strategy of the ranking can be placed: the most accurate feasible candidate, a miss."""
        return safe_default(allowed), "none-feasible"

    def training_mix(self, rows: list[Any]) -> tuple[list[NetCase], list[EvalRequest]]:
        cases = network_cases(rows)
        return cases, network_requests(cases, self.config)


def evaluate_network(records: Iterable[Any], config: EvalConfig = EvalConfig(), *, toolkit: Toolkit,
                     progress: Callable[[str], None] | None = None) -> EvalReport:
    """Leave-one-(model, network)-out evaluation of every policy on network cases built from `records`."""
    start = time.perf_counter()
    records = [r for r in records if r.status == "ok" and r.total_s is not None]
    cases = network_cases(records)
    by_group: dict[tuple[str, ...], list[EvalRequest]] = defaultdict(list)
    for req in network_requests(cases, config):
        by_group[cases[req.case].group].append(req)
    groups = sorted(by_group) if config.groups is None else [tuple(g) for g in config.groups]
    report, arena = EvalReport(config, [], groups, unit="model, network"), NetworkArena(config)
    for fold, group in enumerate(groups):
        reqs = by_group.get(group, [])
        if not reqs:
            raise SelectorError(f"no requests for held-out network group {group}; known: {sorted(by_group)}")
        held = cases[reqs[0].case]
        train = training_rows(records, held.model, dict(held.network))
        seed = config.seed * 1000 + fold
        stream = request_stream(reqs, config.passes, seed)
        if progress:
            progress(f"network fold {fold + 1}/{len(groups)} {'/'.join(group)}: {len(train)} rows, {len(stream)} "
                     "requests")
        replay_fold(report, group, stream, cases, policies.build(config.policies, arena, train, toolkit, seed), seed)
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["NetCandidate", "NetCase", "NetworkArena", "default_placement", "default_placements", "evaluate_network",
           "network_cases", "network_requests"]
