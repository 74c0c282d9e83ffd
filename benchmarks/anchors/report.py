"""Tables of an anchor-benchmark run: the terminal's and BENCHMARKS.md's (Markdown), from the same figures."""

from __future__ import annotations

from typing import Any

from .harness import OURS, Outcome
from .projection import LINKS


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e6:,.1f}"


def _acc(r: dict[str, Any]) -> str:
    a = r.get("accuracy", {})
    if not a.get("finite", False):
        return "not finite"
    extra = (f"emb cos {a['embedding_cosine']:.6f}" if "embedding_cosine" in a
             else f"top-1 {a.get('top1_agreement', 0):.0%}")
    return f"max abs diff {a['max_abs_diff']:.2e}, row cos {a['min_row_cosine']:.6f}, {extra}"


def system_rows(workload: dict[str, Any]) -> list[list[str]]:
    """One row per system: name, time, ratio, MB/party (busiest), ratio, rounds, accuracy, projections."""
    rows = []
    ratios = workload["ratios"]
    for name, r in workload["systems"].items():
        if "seconds" not in r:
            rows.append([name, r.get("skipped") or f"failed: {r.get('failed')}"] + [""] * (6 + len(LINKS)))
            continue
        q = ratios.get(name, {})
        bytes_max = max(r["bytes_per_party"]) if r.get("bytes_per_party") else None
        proj = r.get("projection") or {}
        mine = name.startswith(OURS)
        time_ratio = "1" if name == OURS else "-" if mine else _ratio(q.get("time"))
        rows.append([name, f"{r['seconds']:.2f}", time_ratio,
                     _mb(bytes_max), "1" if name == OURS else (f"{q['bytes']:.2f}x" if "bytes" in q else "-"),
                     "-" if r.get("rounds") is None else str(r["rounds"]), _acc(r),
                     *["-" if proj.get(link.name) is None else f"{proj[link.name]:.1f}" for link in LINKS],
                     "" if mine else ("yes" if q.get("at_least_as_accurate") else "no")])
    return rows


HEADER = ["system", "time s", "vs ours", "MB/party", "vs ours", "rounds", "accuracy vs float64 plaintext",
          *[f"proj. {link.name} s" for link in LINKS], "ours as accurate?"]


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def _ops_row(row: dict[str, Any]) -> str:
    o, c = row["secureinfer"], row["crypten"]
    shapes = "x".join("(" + ",".join(map(str, s)) + ")" for s in row["shapes"])
    their_error = "-" if c["max_error"] is None else f"{c['max_error']:.1f} {c['error_unit']}"
    return (f"| {row['op']} | {shapes} | {o['seconds'] * 1e3:.1f} | {c['seconds'] * 1e3:.1f} | "
            f"{_ratio(row['time_ratio'])} | {_mb(o['bytes_max'])} | {_mb(c['bytes_max'])} | "
            f"{_ratio(row['bytes_ratio'])} | {o['rounds']} | {c['rounds']} | "
            f"{o['max_error']:.1f} {o['error_unit']} | {their_error} |")


def markdown(outcome: Outcome) -> str:
    """The run's tables in Markdown: one per workload, then the ops table."""
    parts = []
    for wname, workload in outcome.results.items():
        parts.append(f"#### {wname}\n")
        parts.append("| " + " | ".join(HEADER) + " |")
        parts.append("|" + "---|" * len(HEADER))
        parts.extend("| " + " | ".join(row) + " |" for row in system_rows(workload))
        parts.append("")
        for ours_name, table in workload.get("ratios_by_profile", {}).items():
            if ours_name != OURS and table:
                parts.append(f"Against {ours_name}: " + "; ".join(
                    f"{a} time {_ratio(q.get('time'))}, bytes {_ratio(q.get('bytes'))}, "
                    f"{ours_name} as accurate: {'yes' if q['at_least_as_accurate'] else 'no'}"
                    for a, q in table.items()) + "\n")
    if outcome.ops:
        parts.append("#### ops (secureinfer `bench ops` vs CrypTen, same shapes)\n")
        parts.append("| op | shapes | ours ms | CrypTen ms | time ratio | ours MB | CrypTen MB | bytes ratio | ours rounds "
                     "| CrypTen rounds | ours max error | CrypTen max error |")
        parts.append("|" + "---|" * 12)
        for row in outcome.ops["rows"]:
            parts.append(_ops_row(row))
    return "\n".join(parts) + "\n"


def breakdown_markdown(outcome: Outcome) -> str:
    """Where secureinfer's secure forward spends time and bytes (party 0, one traced run), per workload."""
    parts = []
    for wname, workload in outcome.results.items():
        bd = workload["systems"].get(OURS, {}).get("breakdown")
        if not bd:
            continue
        total = sum(s["seconds"] for s in bd["by_model_op"].values()) or 1.0
        for title, table in (("model op (inclusive)", bd["by_model_op"]), ("protocol (exclusive)", bd["by_protocol"])):
            parts.append(f"#### {wname}: per {title}, party 0, traced\n")
            parts.append("| name | seconds | share | MB sent | rounds |")
            parts.append("|---|---|---|---|---|")
            for name, f in sorted(table.items(), key=lambda kv: -kv[1]["seconds"]):
                parts.append(f"| {name} | {f['seconds']:.3f} | {100 * f['seconds'] / total:.1f}% | "
                             f"{_mb(f['bytes_sent'])} | {f['rounds']} |")
            parts.append("")
    return "\n".join(parts) + "\n"


def print_tables(outcome: Outcome) -> None:
    """The same tables for a terminal (the Markdown is readable as it is)."""
    for name, env in outcome.environments.items():
        if env.get("skipped"):
            print(f"{name}: skipped ({env['skipped']})")
        elif env.get("build_seconds") is not None:
            state = "reused, built earlier in" if env.get("reused") else "built in"
            print(f"{name}: environment {state} {env['build_seconds']:.0f} s")
    print()
    print(markdown(outcome))
