"""The evaluation's outputs: a text table, a JSON document and a PNG plot (matplotlib, the `selector` extra).

    print(report_table(report)); write_json(report, "eval.json"); write_plot(report, "eval.png")
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from .evaluate import EvalReport
from .features import SelectorError

TARGET_ORACLE_RATIO = 1.10  # the selector's targets: its median latency within 10% of the oracle's ...
TARGET_FIXED_CUT = 0.25  # ... and at least 25% below the single best fixed strategy's
LABELS = {"oracle": "oracle (best measured)", "random": "random", "fixed": "single best fixed",
          "cost_model": "cost model alone", "predictor": "offline predictor", "selector": "full selector"}
CLIP_RATIO = 2.0  # the plot's bars stop here (a random plaintext-or-secure pick can be 100x off)
INSTALL_HINT = "the plot needs matplotlib: pip install 'secureinfer[selector]' (or pip install 'matplotlib>=3.8')"


def targets(report: EvalReport) -> dict[str, Any]:
    """The selector's two targets, measured: selector vs oracle median ratio, selector vs fixed median cut."""
    sel, fixed = report.summary("selector"), report.summary("fixed")
    if not sel.get("n") or not fixed.get("n"):
        return {}
    ratio = sel["median_ratio"]
    cut = 1.0 - sel["median_s"] / fixed["median_s"]
    return {"selector_vs_oracle_median_ratio": ratio, "target_ratio": TARGET_ORACLE_RATIO,
            "ratio_met": ratio <= TARGET_ORACLE_RATIO,
            "selector_below_fixed_median": cut, "target_cut": TARGET_FIXED_CUT, "cut_met": cut >= TARGET_FIXED_CUT}


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def report_table(report: EvalReport, *, by_kind: bool = True) -> str:
    """The summary table: per policy, median latency and its ratio to the oracle's, regret, share within 10%."""
    head = f"{'policy':<24} {'n':>5} {'median':>10} {'/oracle':>8} {'mean regret':>12} {'med regret':>11} " \
           f"{'<=10%':>6} {'top miss':>9}"
    lines = [head, "-" * len(head)]

    def rows(kind: str | None) -> None:
        for p in report.policies():
            s = report.summary(p, kind)
            if not s.get("n"):
                continue
            lines.append(f"{LABELS[p]:<24} {s['n']:>5} {_fmt_s(s['median_s']):>10} {s['median_ratio']:>8.3f} "
                         f"{s['mean_regret']:>11.1%} {s['median_regret']:>10.1%} {s['within_10pct']:>6.0%} "
                         f"{s['top_misses']:>9}")

    rows(None)
    kinds = sorted({c.kind for c in report.choices})
    if by_kind and len(kinds) > 1:
        for kind in kinds:
            lines.append(f"-- {kind} requests")
            rows(kind)
    hardware = _hardware(report)
    if len(hardware) > 1:
        lines.append("-- median latency / oracle's (geometric mean of per-request ratios), by hardware (host "
                     "label) and by replay pass (the online selector learns across passes)")
        for label, pick in [*[(h, dict(hardware=h)) for h in hardware],
                            *[(f"pass {i}", dict(replay=i)) for i in range(report.config.passes)]]:
            cells = []
            for p in report.policies():
                s = report.summary(p, **pick)
                if p != "oracle" and s.get("n"):
                    cells.append(f"{p} {s['median_ratio']:.3f} ({s['geomean_ratio']:.3f})")
            lines.append(f"  {label:<12} " + ", ".join(cells))
    t = targets(report)
    if t:
        lines.append("")
        lines.append(f"target: full selector median within 10% of the oracle's: ratio "
                     f"{t['selector_vs_oracle_median_ratio']:.3f} -> {'met' if t['ratio_met'] else 'MISSED'}")
        lines.append(f"target: full selector median >= 25% below the single best fixed strategy's: "
                     f"{t['selector_below_fixed_median']:.1%} below -> {'met' if t['cut_met'] else 'MISSED'}")
    c = report.config
    budgets = ", ".join("none" if b is None else f"{b:g}" for b in c.budgets)
    kind_names = ", ".join(k.name for k in c.kinds)
    lines.append(f"{len(report.groups)} held-out groups ({report.unit or c.holdout}), kinds {kind_names}, "
                 f"budgets {budgets}, {c.passes} passes, seed {c.seed}; {report.seconds:.1f} s")
    for group, why in report.skipped_groups.items():
        lines.append(f"skipped group {group}: {why}")
    return "\n".join(lines)


def _hardware(report: EvalReport) -> list[str]:
    """Host labels of the held-out groups ((model, hardware, link) holdout; none when whole models are held out)."""
    return sorted({g[1] for g in report.groups if len(g) == 3})


def per_group(report: EvalReport) -> dict[str, dict[str, float]]:
    """Median latency ratio to the oracle per held-out group and policy."""
    out: dict[str, dict[str, float]] = {}
    for g in report.groups:
        key = "/".join(g)
        out[key] = {}
        for p in report.policies():
            rows = [c for c in report.choices if c.policy == p and c.group == g]
            if rows:
                out[key][p] = statistics.median(c.latency_s for c in rows) / statistics.median(
                    c.oracle_s for c in rows)
    return out


def to_json(report: EvalReport, *, command: str = "", choices: bool = False) -> dict[str, Any]:
    """The report as a JSON-ready dict: config, summary per policy (and per kind), targets, per-group ratios."""
    cfg = dataclasses.asdict(report.config)
    cfg["kinds"] = [k.name for k in report.config.kinds]
    kinds = sorted({c.kind for c in report.choices})
    doc: dict[str, Any] = {
        "command": command, "config": cfg, "seconds": report.seconds,
        "groups": ["/".join(g) for g in report.groups], "skipped_groups": report.skipped_groups,
        "summary": {p: report.summary(p) for p in report.policies()},
        "by_kind": {k: {p: report.summary(p, k) for p in report.policies()} for k in kinds},
        "by_hardware": {h: {p: report.summary(p, hardware=h) for p in report.policies()} for h in _hardware(report)},
        "by_pass": {str(i): {p: report.summary(p, replay=i) for p in report.policies()}
                    for i in range(report.config.passes)},
        "targets": targets(report), "per_group_median_ratio": per_group(report)}
    if choices:
        doc["choices"] = [{**dataclasses.asdict(c), "group": "/".join(c.group)} for c in report.choices]
    return doc


def write_json(report: EvalReport, path: str | Path, *, command: str = "", choices: bool = False) -> None:
    Path(path).write_text(json.dumps(to_json(report, command=command, choices=choices), indent=2) + "\n")


def check_plotting() -> None:
    """Raise SelectorError with the install command if matplotlib is missing (before a long evaluation)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise SelectorError(INSTALL_HINT) from exc


def write_plot(report: EvalReport, path: str | Path) -> None:
    """Two panels: median latency ratio to the oracle per policy and request kind; CDF of per-request ratios."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    policies = [p for p in report.policies() if p != "oracle"]
    kinds = ["all", *sorted({c.kind for c in report.choices})]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(kinds)
    top = CLIP_RATIO
    for k, kind in enumerate(kinds):
        vals = [report.summary(p, None if kind == "all" else kind).get("median_ratio", float("nan")) for p in policies]
        xs = [i + k * width for i in range(len(policies))]
        ax1.bar(xs, [min(v, top) for v in vals], width, label=kind)
        for x, v in zip(xs, vals):  # the value on each bar; clipped bars say so
            ax1.text(x, min(v, top) + 0.01, f"{v:.2f}" if v <= top else f"{v:.0f}\u2191", ha="center", va="bottom",
                     fontsize=6, rotation=90)
    ax1.axhline(1.0, color="black", lw=0.8)
    ax1.axhline(1.10, color="grey", ls="--", lw=0.8, label="oracle + 10%")
    ax1.set_xticks([i + width * (len(kinds) - 1) / 2 for i in range(len(policies))],
                   [LABELS[p] for p in policies], rotation=20, ha="right")
    ax1.set_ylim(0.9, top * 1.12)
    ax1.set_ylabel(f"median latency / oracle median latency (clipped at {top:g})")
    ax1.set_title("median latency vs the oracle (held-out groups)")
    ax1.legend(fontsize=8)
    for p in policies:
        ratios = sorted(c.latency_s / c.oracle_s for c in report.choices if c.policy == p)
        ax2.plot(ratios, [(i + 1) / len(ratios) for i in range(len(ratios))], label=LABELS[p])
    ax2.set_xscale("log")
    ax2.axvline(1.10, color="grey", ls="--", lw=0.8)
    ax2.set_xlabel("latency / oracle latency (per request)")
    ax2.set_ylabel("share of requests")
    ax2.set_title("per-request regret (CDF)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
