"""The `secureinfer selector` subcommands: evaluate the selector on held-out data, explain a plan."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from secureinfer.lab.stores import MEASURED_STORES

from . import usage

SELECTOR_DESCRIPTION = """\
The selector picks, per request, the mode (secure committee or plaintext worker), the nodes and the strategy
(approximation profile, fixed point, public weights, precision, ...). Hard constraints come first and are never
traded for speed: a secret prompt never runs in plaintext or on fewer than three parties, a closed model's weights
stay secret, the accuracy budget and the deadline hold. Among what is left it ranks plans by predicted latency:
an analytic cost model (the engine's own round and byte counts over the link), a meta-learned predictor (boosted
trees trained on the performance store), and an online bandit that corrects both from every served request.
"""

SELECTOR_EPILOG = """\
examples:
  secureinfer selector eval                                  # held-out regret of every baseline, as a table
  secureinfer selector eval --json eval.json --plot eval.png # ... and the figures as JSON and a PNG plot
  secureinfer selector eval --group tiny-gpt2/dev-vm-2cpu/wan --passes 5
  secureinfer selector explain '{"model": "tiny-gpt2", "seq_len": 16, "gen_tokens": 4, "link": "wan"}'
  secureinfer selector explain request.json --json
"""

EVAL_DESCRIPTION = """\
Leave one group out over the performance store: for every (model, hardware, link) combination, train on all the
other rows, then ask that combination's requests (every measured request shape x each request kind x each
accuracy budget). Each policy picks one strategy per request among those measured for the case that meet its hard
constraints as measured; the oracle is the fastest of them. Reported per policy: median latency and its ratio to
the oracle's median, mean and median regret (latency / oracle - 1), the share of requests within 10% of the
oracle, and how often a model's own first choice was not runnable there (top miss).

policies:
  random      a uniformly random feasible strategy
  fixed       the single best strategy on the training data, used wherever it is feasible (else the next best)
  cost_model  the analytic cost model alone (calibrated on the training rows)
  predictor   the offline meta-learned predictor alone (MetaInf-style: predicts once, never explores)
  selector    predictor + online bandit; the held-out requests are replayed --passes times and every measured
              outcome is fed back, so it learns while it serves
request kinds:
  secret             private prompt, closed model: secure committees only
  secret-open-model  private prompt, open model: secure, public weights allowed
  open               public prompt, open model: plaintext workers allowed (plaintext rows get the client-worker
                     hop of the case's link added: one round trip per forward and the bytes)
"""

EXPLAIN_DESCRIPTION = """\
Show why the selector plans REQUEST the way it does: the request's features and constraints, the options, every
candidate's predictions (cost model, predictor, bandit residual, expected latency and error) in rank order, and
every candidate a hard constraint removed, with the reason.

REQUEST is a JSON object (inline or a file) with:
  model         a model name; its shape comes from the store's rows of it, or give arch, n_params, n_layers,
                hidden, vocab (and optionally n_heads, n_kv_heads, intermediate)
  seq_len       prompt tokens per row (required); batch (default 1); gen_tokens (decoders, default 1);
                task: embed, generate or logits (default by architecture)
  secret_prompt (default true), open_model (default false), max_error (default none), deadline_s (default none)
  link          the default network's link: local, lan, metro, wan, slow or {"latency_ms": .., "bandwidth_mbit": ..}
                (default lan); the default network is every node of the store as a committee of three copies
                of it and as a plaintext worker
  network       instead of the default: {"nodes": [{"id", "matmul_gflops", "device", "cpu_count", "memory_gb"}],
                "committees": [{"id", "nodes": [3 ids], "latency_ms", "bandwidth_mbit"}],
                "workers": [{"node", "latency_ms", "bandwidth_mbit"}]}
"""

EXPLAIN_EPILOG = """\
examples:
  secureinfer selector explain '{"model": "tiny-llama", "seq_len": 8, "gen_tokens": 4, "max_error": 0.01}'
  secureinfer selector explain '{"model": "minilm", "seq_len": 32, "secret_prompt": false, "open_model": true}'
  secureinfer selector explain '{"model": "tiny-bert", "seq_len": 64, "link": {"latency_ms": 30,
      "bandwidth_mbit": 50}}' --json
"""


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Add the `selector` command (eval, explain) to a parser's subcommands; return its parser."""
    sel = subcommands.add_parser("selector", help="evaluate the strategy selector, explain its plans",
                                 description=SELECTOR_DESCRIPTION, epilog=SELECTOR_EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = sel.add_subparsers(dest="selector_action", metavar="ACTION")
    ev = actions.add_parser("eval", help="held-out regret to the oracle of the selector and its baselines",
                            description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=SELECTOR_EPILOG)
    _stores(ev)
    ev.add_argument("--budgets", default="none,0.01", metavar="B[,B...]",
                    help="accuracy budgets of the request mix: max abs error vs plaintext, or none "
                         "(default none,0.01)")
    ev.add_argument("--kinds", default="secret,secret-open-model,open", metavar="K[,K...]",
                    help="request kinds (default all three: secret,secret-open-model,open)")
    ev.add_argument("--policies", default="random,fixed,cost_model,predictor,selector", metavar="P[,P...]",
                    help="policies to evaluate (default all five)")
    ev.add_argument("--passes", type=int, default=3,
                    help="times the held-out requests are replayed to the online selector (default 3)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the request order, random and the bandit")
    ev.add_argument("--holdout", choices=["combo", "model"], default="combo",
                    help="hold out one (model, hardware, link) combination (default) or every combination of a "
                         "model at once (harder: the model is unseen)")
    ev.add_argument("--network", action="store_true",
                    help="network level instead: a plan is strategy AND placement; each case is one request on a "
                         "network of every host that measured its shape (CPU and CUDA committees, workers), each "
                         "host behind one of its measured links; held out by (model, network); the fixed baseline "
                         "runs its strategy where a selector-less client would (fastest option first); "
                         "--holdout does not apply, --group is MODEL/NETWORK as printed")
    ev.add_argument("--group", action="append", metavar="MODEL/HARDWARE/LINK",
                    help="only this held-out group (repeatable; MODEL alone with --holdout model)")
    ev.add_argument("--json", metavar="FILE", help="write the summary (and the command) as JSON to FILE")
    ev.add_argument("--choices", action="store_true", help="with --json: also every request's choice per policy")
    ev.add_argument("--plot", metavar="FILE", help="write a PNG plot (needs matplotlib: the 'selector' extra)")
    ev.add_argument("--quiet", action="store_true", help="no progress lines")
    ev.set_defaults(handler=_eval)
    ex = actions.add_parser("explain", help="why the selector plans a request the way it does",
                            description=EXPLAIN_DESCRIPTION, epilog=EXPLAIN_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("request", metavar="REQUEST", help="the request: inline JSON or a JSON file (fields above)")
    _stores(ex)
    ex.add_argument("--json", action="store_true", help="print the explanation as JSON")
    ex.add_argument("--all", action="store_true", help="list every candidate (default: the first 12 of each list)")
    ex.add_argument("--seed", type=int, default=0, help="seed of the bandit's Thompson samples")
    ex.set_defaults(handler=_explain)
    usage.help_when_bare(sel)
    return sel


def _stores(parser: argparse.ArgumentParser) -> None:
    """The --store option of `eval` and `explain`."""
    parser.add_argument("--store", action="append", metavar="FILE",
                        help="performance store(s) to learn from, read-only (repeatable; default: the stores measured "
                             f"for secureinfer and shipped with it, {' and '.join(p.name for p in MEASURED_STORES)})")


def _records(paths: list[str] | None) -> list[Any]:
    """The rows of the stores given with --store, else of the measured stores shipped with secureinfer."""
    from secureinfer.selector.records import read_records

    chosen = paths or [str(p) for p in MEASURED_STORES if p.exists()]
    if not chosen:
        raise FileNotFoundError("no performance store given and the measured stores shipped with secureinfer "
                                f"({', '.join(str(p) for p in MEASURED_STORES)}) are missing: reinstall secureinfer, "
                                "or pass --store FILE (secureinfer bench sweep makes one)")
    rows = []
    for path in chosen:
        rows += read_records(path)
    return rows


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _eval(args: argparse.Namespace) -> int:
    from secureinfer.selector import evalcases, evalreport, evaluate
    from secureinfer.selector.features import SelectorError
    from secureinfer.perfstore import StoreError

    try:
        kinds_by_name = {k.name: k for k in evalcases.KINDS}
        bad = [k for k in _split(args.kinds) if k not in kinds_by_name]
        if bad:
            raise SelectorError(f"unknown request kinds {bad}; known: {', '.join(kinds_by_name)}")
        groups = tuple(tuple(g.split("/")) for g in args.group) if args.group else None
        config = evaluate.EvalConfig(kinds=tuple(kinds_by_name[k] for k in _split(args.kinds)),
                                     budgets=evalcases.parse_budgets(args.budgets), passes=args.passes,
                                     seed=args.seed, policies=tuple(_split(args.policies)), holdout=args.holdout,
                                     groups=groups)
        if args.plot:
            evalreport.check_plotting()
        records = _records(args.store)
        toolkit = evaluate.default_toolkit() if set(config.policies) - {"random", "fixed"} else None
        log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        if args.network:
            from secureinfer.selector.evalnet import evaluate_network

            report = evaluate_network(records, config, toolkit=toolkit or evaluate.default_toolkit(), progress=log)
        else:
            report = evaluate.evaluate(records, config, toolkit=toolkit, progress=log)
    except (SelectorError, StoreError, FileNotFoundError) as exc:
        return usage.fail("selector", exc)
    print(evalreport.report_table(report))
    command = _eval_command(args)
    if args.json:
        evalreport.write_json(report, args.json, command=command, choices=args.choices)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        evalreport.write_plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _eval_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this evaluation (every option spelled out, no folder of this machine)."""
    from secureinfer.lab.bench import command_line

    parts = []
    for store in args.store or []:
        parts += ["--store", store]
    parts += ["--budgets", args.budgets, "--kinds", args.kinds, "--policies", args.policies,
              "--passes", str(args.passes), "--seed", str(args.seed), "--holdout", args.holdout]
    parts += ["--network"] if args.network else []
    for group in args.group or []:
        parts += ["--group", group]
    parts += ["--json", args.json] if args.json else []
    parts += ["--choices"] if args.choices else []
    parts += ["--plot", args.plot] if args.plot else []
    return command_line(["secureinfer", "selector", "eval"], parts)


def _explain(args: argparse.Namespace) -> int:
    from secureinfer.selector import explain
    from secureinfer.selector.features import SelectorError
    from secureinfer.selector.selector import Selector
    from secureinfer.perfstore import StoreError

    try:
        records = _records(args.store)
        request, options = explain.parse_request(args.request, records)
        exp = Selector(records, seed=args.seed).explain(request, options)
    except (SelectorError, StoreError, FileNotFoundError) as exc:
        return usage.fail("selector", exc)
    if args.json:
        print(json.dumps(explain.to_json(exp), indent=2))
    else:
        print(explain.render_text(exp, limit=10**9 if args.all else 12))
    return 0 if exp.ranked else 1
