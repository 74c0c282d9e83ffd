"""`secureinfer selector explain`: why the selector plans a request the way it does, for people and as JSON.

A request is JSON (a file or inline): the model (a model the store has rows of, or its shape), the work, the hard
constraints, and optionally the network to plan on; without one, every node of the store is offered as a committee
(three copies of it) and as a plaintext worker over one link (the request's `link`, default `lan`).

    {"model": "tiny-gpt2", "seq_len": 16, "gen_tokens": 4, "secret_prompt": true, "max_error": 0.01,
     "link": "metro"}
    {"model": "my-bert", "arch": "bert", "n_layers": 6, "hidden": 384, "vocab": 30522, "n_params": 22700000,
     "seq_len": 128, "task": "embed", "secret_prompt": false, "open_model": true,
     "network": {"nodes": [{"id": "a", "device": "cpu", "matmul_gflops": 40, "cpu_count": 2}, ...],
                 "committees": [{"id": "c1", "nodes": ["a", "b", "c"], "latency_ms": 2, "bandwidth_mbit": 100}],
                 "workers": [{"node": "g", "latency_ms": 20, "bandwidth_mbit": 100}]}}

    request, options = parse_request(text, records)
    print(render_text(selector.explain(request, options)))
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from .evalcases import LINK_NAMES, link_name
from .features import (TASKS, CommitteeOption, LinkFeatures, NodeFeatures, Option, RequestFeatures, SelectorError,
                       WorkerOption)
from .records import MODEL_SHAPES, host_cpu_gflops, node_of, request_of

LINKS: dict[str, LinkFeatures] = {name: LinkFeatures(lat, bw) for (lat, bw), name in LINK_NAMES.items()}
SHAPE_FIELDS = ("arch", "n_params", "n_layers", "hidden", "vocab", "n_heads", "n_kv_heads", "intermediate")
WORK_FIELDS = ("seq_len", "batch", "gen_tokens", "task")
CONSTRAINT_FIELDS = ("secret_prompt", "open_model", "max_error", "deadline_s")
KNOWN_FIELDS = {"model", "link", "network", *SHAPE_FIELDS, *WORK_FIELDS, *CONSTRAINT_FIELDS}
GIB = 2**30


def load_request_json(text: str) -> dict[str, Any]:
    """REQUEST as given on the command line: a path to a JSON file, or the JSON itself."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise SelectorError(f"REQUEST must be a JSON object or a JSON file; {text!r} is neither")
        stripped = path.read_text()
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise SelectorError(f"REQUEST is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SelectorError("REQUEST must be a JSON object")
    unknown = sorted(set(data) - KNOWN_FIELDS)
    if unknown:
        raise SelectorError(f"unknown REQUEST fields {unknown}; known: {', '.join(sorted(KNOWN_FIELDS))}")
    return data


def _shape(data: dict[str, Any], records: Sequence[Any]) -> dict[str, Any]:
    """The model's shape: from the request where given, else from a store row of that model."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise SelectorError("REQUEST needs a 'model' name")
    rows = [r for r in records if r.model == model]
    shape: dict[str, Any] = {}
    if rows:
        base = request_of(rows[0])
        shape = {f: getattr(base, f) for f in SHAPE_FIELDS}
    elif model in MODEL_SHAPES:
        shape["n_heads"], shape["n_kv_heads"], shape["intermediate"] = MODEL_SHAPES[model]
    shape.update({f: data[f] for f in SHAPE_FIELDS if f in data})
    missing = [f for f in ("arch", "n_params", "n_layers", "hidden", "vocab") if f not in shape]
    if missing:
        known = sorted({r.model for r in records})
        raise SelectorError(f"model {model!r} has no rows in the store, so REQUEST must give its shape: "
                            f"{', '.join(missing)} (models in the store: {', '.join(known) or 'none'})")
    return shape


def _link(spec: Any, where: str) -> LinkFeatures:
    """A link by name (local, lan, metro, wan, slow) or as {"latency_ms": ..., "bandwidth_mbit": ...}."""
    if isinstance(spec, str):
        if spec not in LINKS:
            raise SelectorError(f"{where}: unknown link {spec!r}; known: {', '.join(LINKS)} or "
                                "{\"latency_ms\": ..., \"bandwidth_mbit\": ...}")
        return LINKS[spec]
    if isinstance(spec, dict):
        bad = set(spec) - {"latency_ms", "bandwidth_mbit"}
        if bad:
            raise SelectorError(f"{where}: unknown link fields {sorted(bad)}; use latency_ms and bandwidth_mbit")
        mbit = spec.get("bandwidth_mbit")
        try:
            latency_s = float(spec.get("latency_ms", 0.0)) / 1e3
            return LinkFeatures(latency_s, None if mbit is None else float(mbit) * 1e6 / 8)
        except (TypeError, ValueError) as exc:
            raise SelectorError(f"{where}: latency_ms and bandwidth_mbit must be numbers") from exc
    raise SelectorError(f"{where}: a link is a name or an object with latency_ms and bandwidth_mbit")


def _node(spec: Any) -> NodeFeatures:
    if not isinstance(spec, dict) or "id" not in spec or "matmul_gflops" not in spec:
        raise SelectorError("each network node needs at least 'id' and 'matmul_gflops' (measured float32 GFLOP/s; "
                            "`secureinfer network status` shows each node's); optional: device (default cpu), "
                            "cpu_count, memory_gb, host, cpu_gflops (a GPU node's CPU speed)")
    return NodeFeatures(node_id=str(spec["id"]), device=str(spec.get("device", "cpu")),
                        cpu_count=int(spec.get("cpu_count", 1)), matmul_gflops=float(spec["matmul_gflops"]),
                        memory_bytes=int(float(spec.get("memory_gb", 16)) * GIB), host=str(spec.get("host", "")),
                        cpu_gflops=float(spec.get("cpu_gflops", 0.0)))


def network_options(spec: dict[str, Any]) -> list[Option]:
    """Options from a network description: nodes, committees (three node ids and a link), workers (node, link)."""
    if not isinstance(spec, dict):
        raise SelectorError("'network' must be an object with nodes, committees and workers")
    nodes = {n.node_id: n for n in map(_node, spec.get("nodes", []))}

    def get(node_id: Any, where: str) -> NodeFeatures:
        if node_id not in nodes:
            raise SelectorError(f"{where}: unknown node {node_id!r}; nodes: {', '.join(nodes) or 'none'}")
        return nodes[node_id]

    out: list[Option] = []
    for i, c in enumerate(spec.get("committees", [])):
        where = f"committee {c.get('id', i)}"
        ids = c.get("nodes", [])
        if len(ids) != 3:
            raise SelectorError(f"{where}: a committee is exactly three node ids")
        link = _link({k: c[k] for k in ("latency_ms", "bandwidth_mbit") if k in c}, where)
        out.append(CommitteeOption(str(c.get("id", f"committee-{i}")), tuple(get(n, where) for n in ids), link))
    for i, w in enumerate(spec.get("workers", [])):
        where = f"worker {w.get('node', i)}"
        link = _link({k: w[k] for k in ("latency_ms", "bandwidth_mbit") if k in w}, where)
        out.append(WorkerOption(get(w.get("node"), where), link))
    if not out:
        raise SelectorError("the network offers no committee and no worker")
    return out


def store_options(records: Sequence[Any], link: LinkFeatures) -> list[Option]:
    """Every node of the store (one per host and device) as a committee of three copies and as a worker."""
    seen: dict[tuple[str, str], Any] = {}
    for r in records:
        seen.setdefault((r.host, r.device), r)
    cpu = host_cpu_gflops(records)
    out: list[Option] = []
    for (host, device), r in sorted(seen.items()):
        tag = f"{host}/{device.split(' ')[0]}"
        node = node_of(r, cpu_gflops=cpu.get(host, 0.0))
        nodes = tuple(dataclasses.replace(node, node_id=f"{tag}#{i}") for i in range(3))
        out.append(CommitteeOption(f"{tag}@{link_name(link.latency_s, link.bandwidth_bytes_per_s)}", nodes, link))
        out.append(WorkerOption(dataclasses.replace(node, node_id=tag), link))
    if not out:
        raise SelectorError("the store has no rows, so there is no default network: give REQUEST a 'network'")
    return out


def parse_request(text: str, records: Sequence[Any]) -> tuple[RequestFeatures, list[Option]]:
    """The request's features and the options to plan it on (its network, else the store's nodes)."""
    data = load_request_json(text)
    shape = _shape(data, records)
    work = {f: data[f] for f in WORK_FIELDS if f in data}
    work.setdefault("task", "embed" if shape["arch"] == "bert" else "generate")
    if work["task"] not in TASKS:
        raise SelectorError(f"task must be one of {TASKS}; got {work['task']!r}")
    if "seq_len" not in work:
        raise SelectorError("REQUEST needs 'seq_len' (prompt tokens per row)")
    if work["task"] == "generate" and "gen_tokens" not in work:
        work["gen_tokens"] = 1
    constraints = {f: data[f] for f in CONSTRAINT_FIELDS if f in data}
    try:
        request = RequestFeatures(model=data["model"], **shape, **work, **constraints)
    except TypeError as exc:
        raise SelectorError(f"REQUEST: {exc}") from exc
    if "network" in data:
        if "link" in data:
            raise SelectorError("give either 'network' (links per committee and worker) or 'link', not both")
        return request, network_options(data["network"])
    return request, store_options(records, _link(data.get("link", "lan"), "link"))


# --- rendering

def _s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.3g} s"


def _constraints(r: RequestFeatures) -> str:
    parts = ["secret prompt" if r.secret_prompt else "public prompt",
             "open model" if r.open_model else "closed model (secret weights)",
             f"max error {r.max_error:g}" if r.max_error is not None else "any error",
             f"deadline {r.deadline_s:g} s" if r.deadline_s is not None else "no deadline"]
    return ", ".join(parts)


def _option_text(o: Option) -> str:
    link = f"{link_name(o.link.latency_s, o.link.bandwidth_bytes_per_s)} link"
    if isinstance(o, CommitteeOption):
        return f"committee {o.committee_id}: {', '.join(n.node_id for n in o.nodes)} ({o.nodes[0].device}), {link}"
    return f"worker {o.node.node_id} ({o.node.device}, {o.node.matmul_gflops:.0f} GFLOP/s), {link}"


def render_text(exp: Any, *, limit: int = 12) -> str:
    """The explanation for people: request, options, the plan, ranked candidates, what the constraints removed."""
    r = exp.request
    lines = [f"request   {r.model} ({r.arch}, {r.n_layers} layers, hidden {r.hidden}, vocab {r.vocab}, "
             f"{r.n_params / 1e6:.2f}M params): {r.task}, {r.batch} x {r.seq_len} tokens"
             + (f", {r.gen_tokens} new" if r.gen_tokens else ""),
             f"          constraints: {_constraints(r)}",
             "models    cost model (engine's round/byte counts, calibrated on the store)"
             + (f", predictor trained on {exp.predictor_rows} rows" if exp.predictor_rows else
                ", no predictor (too few rows: the cost model alone)")
             + f", bandit after {exp.observations} outcomes"
             + (", arm prior sd " + ", ".join(f"{m} {sd:.3f}" for m, sd in sorted(exp.arm_prior_sd.items()))
                if exp.arm_prior_sd else "")
             + (f", placement prior sd {exp.placement_prior_sd:.3f}" if exp.placement_prior_sd else ""),
             "options"] + [f"  {_option_text(o)}" for o in exp.options]
    ranked = exp.ranked
    if ranked:
        top = ranked[0]
        lines.append(f"plan      {top.strategy} on {top.option}: expected {_s(top.expected_s)} "
                     f"(cost model {_s(top.cost_model_s)}, predictor {_s(top.predictor_s)}, "
                     f"bandit residual {top.bandit_mean:+.3f}), expected error {top.expected_error:.3g}")
    else:
        lines.append("plan      none: every candidate was removed by a hard constraint (below)")
    lines.append("")
    head = f"{'rank':>4}  {'strategy':<30} {'option':<24} {'cost model':>11} {'predictor':>10} " \
           f"{'bandit μ/sample':>16} {'expected':>10} {'error':>8}"
    lines += ["ranked plans (served first; Thompson sampling may reorder plans within the exploration window):",
              head]
    for c in ranked[:limit]:
        lines.append(f"{c.rank:>4}  {c.strategy:<30} {c.option:<24} {_s(c.cost_model_s):>11} "
                     f"{_s(c.predictor_s):>10} {c.bandit_mean:>+7.3f}/{c.bandit_sample:<+8.3f} "
                     f"{_s(c.expected_s):>10} {c.expected_error:>8.2g}")
    if len(ranked) > limit:
        lines.append(f"      ... {len(ranked) - limit} more (--all shows every one)")
    dropped = exp.dropped
    if dropped:
        lines.append("")
        lines.append(f"removed by hard constraints ({len(dropped)}):")
        by: dict[str, list[Any]] = {}
        for c in dropped:
            by.setdefault(c.constraint or "?", []).append(c)
        for constraint, items in by.items():
            lines.append(f"  {constraint} ({len(items)}):")
            for c in items[:limit]:
                reason = (c.reason or "").removeprefix(f"{constraint}: ")
                lines.append(f"    {c.strategy} on {c.option}: {reason}")
            if len(items) > limit:
                lines.append(f"    ... {len(items) - limit} more")
    return "\n".join(lines)


def _option_json(o: Option) -> dict[str, Any]:
    base = {"link": {"latency_s": o.link.latency_s, "bandwidth_bytes_per_s": o.link.bandwidth_bytes_per_s}}
    if isinstance(o, CommitteeOption):
        return {"committee": o.committee_id, "nodes": [dataclasses.asdict(n) for n in o.nodes], **base}
    return {"worker": o.node.node_id, "node": dataclasses.asdict(o.node), **base}


def to_json(exp: Any) -> dict[str, Any]:
    """The explanation as a JSON-ready dict."""
    ranked = exp.ranked
    return {"request": dataclasses.asdict(exp.request), "options": [_option_json(o) for o in exp.options],
            "predictor_rows": exp.predictor_rows, "observations": exp.observations,
            "arm_prior_sd": dict(exp.arm_prior_sd), "placement_prior_sd": exp.placement_prior_sd,
            "plan": dataclasses.asdict(ranked[0]) if ranked else None,
            "ranked": [dataclasses.asdict(c) for c in ranked],
            "removed": [dataclasses.asdict(c) for c in exp.dropped]}
