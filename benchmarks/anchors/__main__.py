"""`secureinfer bench anchors` (from any folder) or `python -m benchmarks.anchors` (from the checkout's root):
secureinfer against SPU/PUMA, CrypTen and transformers, side by side, in one run.

See benchmarks/anchors/__init__.py for what is measured and how; BENCHMARKS.md for the results.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import harness, report, workloads

# The command as typed: it names the help's usage and the command a result records.
MODULE_PROG = ("python", "-m", "benchmarks.anchors")


def parse(argv: list[str] | None, prog: tuple[str, ...] = MODULE_PROG) -> argparse.Namespace:
    """The command line."""
    name = " ".join(prog)
    parser = argparse.ArgumentParser(
        prog=name,
        description="Run secureinfer's secure forward and each anchor (SecretFlow SPU running PUMA's recipes, CrypTen, "
                    "Hugging Face transformers in plaintext) on the same workloads, one after another in one run, and "
                    "print time, bytes per party, rounds, accuracy against float64 plaintext, the ratios to "
                    "secureinfer, and projections to real networks. The anchors' virtual environments are built on "
                    "first use under --env-dir (minutes; an anchor whose install fails is skipped with its reason).",
        epilog=f"examples:\n  {name} --workload minilm            # the headline figure\n"
               f"  {name} --anchor spu --workload gpt2\n"
               f"  {name} --json out.json --markdown out.md   # everything, for BENCHMARKS.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", action="append", choices=workloads.WORKLOADS,
                        help="only this workload (repeatable; default all: minilm, bert-base, gpt2)")
    parser.add_argument("--anchor", action="append", choices=harness.ANCHORS,
                        help="only this anchor (repeatable; default all); secureinfer always runs")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per system and workload (median; default 1)")
    parser.add_argument("--profile", action="append", choices=["accurate", "fast", "lean"],
                        help="secureinfer's approximation profile (repeatable: each runs, ratios against each; "
                             "default accurate)")
    parser.add_argument("--env-dir", type=Path, default=harness.ENV_DIR,
                        help="where the anchors' venvs live (default: .anchors in the checkout's root)")
    parser.add_argument("--work-dir", type=Path, default=harness.WORK_DIR,
                        help="where workload files and raw results go (about 2 GB for all three workloads; default: "
                             ".anchors/work in the checkout's root)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the anchors' environments")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one system may take on one workload")
    parser.add_argument("--no-breakdown", action="store_true", help="skip secureinfer's traced per-op breakdown run")
    parser.add_argument("--no-ops", action="store_true", help="skip the per-op table against CrypTen")
    parser.add_argument("--json", type=Path, help="write every figure as JSON to this file")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None, prog: tuple[str, ...] = MODULE_PROG) -> int:
    """Run the harness and print, and optionally write, its tables; `prog` is the command as the user typed it."""
    from secureinfer.lab.bench import machine

    args = parse(argv, prog)
    cfg = harness.HarnessConfig(workloads=tuple(args.workload or workloads.WORKLOADS),
                                anchors=tuple(args.anchor or harness.ANCHORS), repeats=args.repeats,
                                env_dir=args.env_dir, work_dir=args.work_dir, rebuild=args.rebuild,
                                timeout_s=args.timeout, breakdown=not args.no_breakdown,
                                profiles=tuple(dict.fromkeys(args.profile or ["accurate"])),
                                ops=not args.no_ops)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    outcome = harness.run(cfg, log)
    report.print_tables(outcome)
    text = report.markdown(outcome) + "\n" + report.breakdown_markdown(outcome)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        command, config = recorded(cfg, argv, prog)
        payload = {"benchmark": "anchors", "machine": machine("cpu"), "command": command,
                   "seconds": time.perf_counter() - start, "config": config, "environments": outcome.environments,
                   "workloads": outcome.results, "ops": outcome.ops}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def recorded(cfg: harness.HarnessConfig, argv: list[str] | None,
             prog: tuple[str, ...] = MODULE_PROG) -> tuple[str, dict[str, str]]:
    """The command (`prog` and the arguments: rerunnable from the repository root) and the configuration a result
    records, without this machine's folders: paths inside the working directory relative to it, others under the
    placeholder folder OUT."""
    from secureinfer.lab.bench import portable_paths

    args = list(sys.argv[1:] if argv is None else argv)
    config = {k: str(v) for k, v in asdict(cfg).items()}
    folders = ("env_dir", "work_dir")
    portable = portable_paths(args + [config[k] for k in folders])
    config.update(zip(folders, portable[len(args):]))
    return shlex.join([*prog, *portable[:len(args)]]), config


if __name__ == "__main__":
    raise SystemExit(main())
