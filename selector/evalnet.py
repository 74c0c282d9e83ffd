"""Network-level held-out evaluation: a plan is a strategy AND a placement (issue 6's second table).

A network case is one request shape (model, seq_len, batch, gen_tokens) on a network of several options built from
measured rows only, one host per option, never mixing hosts: for each host that measured the shape, at one of the
links it was measured over (the host's link in this network),
  committees  one per device kind the host measured secure rows on (the H200 host: a CUDA committee and a CPU
              committee; the 2-core VM: a CPU committee), three nodes of that device behind the host's link;
  workers     one per device kind the host measured plaintext rows on, behind the same link (client-worker hop
              added, evalcases.plaintext_hop_s).
A network is one link per host; every combination of the hosts' measured links is one network. A candidate is
(host, strategy) with that host's measured latency; the CUDA committee's CPU strategies are the host's CPU rows (the
same machine). Held-out unit: (model, network): the model's rows on each host at that host's link, and its
plaintext rows on those hosts, are left out of training.

Policies and how each places:
  oracle      the fastest feasible measured (host, strategy) of the network
  random      a uniformly random feasible (host, strategy)
  fixed       what a selector-less client does: one fixed strategy (the training ranking's best that is feasible),
              on the first option of the membership view's default order (nodes/membership.choose_committees: the
              fastest slowest-member matmul speed first) that runs that strategy's mode and device and measured it
  cost_model, predictor   rank every measured (option, strategy) by their predicted latency, privacy and predicted
              error applied (as evaluate.py does)
  selector    Selector.plan(request, the network's options): the first plan that is a feasible measured
              (host, strategy) runs and its outcome is observed

    report = evaluate_network(records, EvalConfig(), toolkit=default_toolkit())
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from secureinfer.strategy import Strategy

from .cost import device_kind
from .evalcases import Case, EvalRequest, cases_from_records, feasible, link_name
from .evaluate import (Choice, EvalConfig, EvalReport, Toolkit, _miss_kind, _privacy_ok, _safe_default,
                       strategy_key)
from .features import CommitteeOption, NodeFeatures, Option, Outcome, Plan, SelectorError, WorkerOption
from .selector import option_id


@dataclass(frozen=True)
class NetCandidate:
    """One measured strategy on one host of a network."""

    host: str
    strategy: Strategy
    total_s: float
    error: float | None
    samples: tuple[float, ...]

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
            cands = [NetCandidate(case.hardware, c.strategy, c.total_s, c.error, c.samples)
                     for case in parts for c in case.candidates]
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


def default_placement(case: NetCase, request: EvalRequest, name: str) -> NetCandidate | None:
    """Strategy `name` on the first option of the default order that runs it and measured it feasibly."""
    for option in case.options:
        host = case.option_host[option_id(option)]
        for c in case.candidates:
            if c.host == host and c.strategy.name == name and _runs_on(option, c) and feasible(request, c):
                return c
    return None


def _oracle(request: EvalRequest, case: NetCase) -> NetCandidate:
    return min((c for c in case.candidates if feasible(request, c)), key=lambda c: (c.total_s, c.name))


def fixed_ranking(cases: Sequence[NetCase], requests: Sequence[EvalRequest]) -> list[str]:
    """Strategy names, best first, by mean log ratio to the network oracle of the strategy on its default placement
    over the training requests where it could be placed."""
    logs: dict[str, list[float]] = defaultdict(list)
    for req in requests:
        case = cases[req.case]
        best = _oracle(req, case).total_s
        for name in {c.strategy.name for c in case.candidates}:
            c = default_placement(case, req, name)
            if c is not None:
                logs[name].append(math.log(c.total_s / best))
    return sorted(logs, key=lambda n: (statistics.fmean(logs[n]), -len(logs[n]), n))


class _Policy:
    name = ""

    def choose(self, req: EvalRequest, case: NetCase, allowed: list[NetCandidate]) -> tuple[NetCandidate, str]:
        raise NotImplementedError

    def observe(self, chosen: NetCandidate, latency_s: float) -> None:
        return None


class _Random(_Policy):
    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # evaluation sampling, not secret randomness

    def choose(self, req, case, allowed):
        return self.rng.choice(allowed), ""


class _Fixed(_Policy):
    name = "fixed"

    def __init__(self, ranking: list[str]) -> None:
        self.ranking = ranking

    def choose(self, req, case, allowed):
        for name in self.ranking:
            c = default_placement(case, req, name)
            if c is not None:
                return c, ""
        return _safe_default(allowed), "none-feasible"


class _Scored(_Policy):
    def __init__(self, name: str, scorer: Any) -> None:
        self.name, self.scorer = name, scorer

    def choose(self, req, case, allowed):
        f = req.features
        pairs = [(o, c) for o in case.options for c in case.candidates
                 if c.host == case.option_host[option_id(o)] and _runs_on(o, c)]
        preds = self.scorer.predict_many([(f, o, c.strategy) for o, c in pairs])
        ranked = sorted(((p, c) for (o, c), p in zip(pairs, preds) if _privacy_ok(c.strategy, f)
                         and (f.max_error is None or p.error <= f.max_error)), key=lambda x: (x[0].total_s, x[1].name))
        pick = next((c for _, c in ranked if c in allowed), None)
        if pick is None:
            return _safe_default(allowed), "none-feasible"
        return pick, "" if ranked[0][1] is pick else _miss_kind(req, ranked[0][1])


class _Online(_Policy):
    name = "selector"

    def __init__(self, planner: Any) -> None:
        self.planner, self._last = planner, None

    def choose(self, req, case, allowed):
        self._last, miss = None, ""
        try:
            plans: list[Plan] = self.planner.plan(req.features, list(case.options))
        except SelectorError:
            return _safe_default(allowed), "no-plan"
        for plan in plans:
            cand = case.lookup(case.option_host[option_id(plan.option)], plan.strategy)
            if cand is None or isinstance(plan.option, WorkerOption) != (cand.strategy.mode == "plaintext"):
                miss = miss or "unmeasured"
            elif cand not in allowed:
                miss = miss or _miss_kind(req, cand)
            else:
                self._last = plan
                return cand, miss
        return _safe_default(allowed), "none-feasible"

    def observe(self, chosen, latency_s):
        if self._last is not None:
            self.planner.observe(self._last, Outcome(total_s=latency_s, error=chosen.error))


def _training_rows(records: Sequence[Any], case: NetCase) -> list[Any]:
    """Every row but the held-out model's rows on each host of the network at that host's link (and its plaintext
    rows on those hosts)."""
    links = dict(case.network)

    def held(r: Any) -> bool:
        if r.model != case.model or r.host not in links:
            return False
        return r.mode == "plaintext" or link_name(r.latency_s or 0.0, r.bandwidth_bytes_per_s) == links[r.host]

    return [r for r in records if not held(r)]


def _policies(config: EvalConfig, train: list[Any], toolkit: Toolkit, seed: int) -> list[_Policy]:
    out: list[_Policy] = []
    for name in config.policies:
        if name == "random":
            out.append(_Random(seed))
        elif name == "fixed":
            cases = network_cases(train)
            out.append(_Fixed(fixed_ranking(cases, network_requests(cases, config))))
        elif name == "cost_model":
            out.append(_Scored(name, toolkit.cost_model(train, seed)))
        elif name == "predictor":
            out.append(_Scored(name, toolkit.predictor(train, seed)))
        else:
            out.append(_Online(toolkit.selector(train, seed)))
    return out


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
    report = EvalReport(config, [], groups, unit="model, network")
    for fold, group in enumerate(groups):
        reqs = by_group.get(group, [])
        if not reqs:
            raise SelectorError(f"no requests for held-out network group {group}; known: {sorted(by_group)}")
        train = _training_rows(records, cases[reqs[0].case])
        seed = config.seed * 1000 + fold
        order = random.Random(seed)
        stream = [(p, r) for p in range(config.passes) for r in order.sample(reqs, len(reqs))]
        if progress:
            progress(f"network fold {fold + 1}/{len(groups)} {'/'.join(group)}: {len(train)} rows, {len(stream)} "
                     "requests")
        for p, r in stream:
            best = _oracle(r, cases[r.case])
            report.choices.append(Choice("oracle", group, cases[r.case].label, r.kind, r.features.max_error, p,
                                         best.name, best.total_s, best.total_s, best.name))
        for policy in _policies(config, train, toolkit, seed):
            rng = random.Random(seed + 1)
            for p, r in stream:
                case = cases[r.case]
                allowed = [c for c in case.candidates if feasible(r, c)]
                best = _oracle(r, case)
                chosen, miss = policy.choose(r, case, allowed)
                policy.observe(chosen, rng.choice(chosen.samples))
                report.choices.append(Choice(policy.name, group, case.label, r.kind, r.features.max_error, p,
                                             chosen.name, chosen.total_s, best.total_s, best.name, miss))
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["NetCandidate", "NetCase", "default_placement", "evaluate_network", "fixed_ranking", "network_cases",
           "network_requests"]
