"""The meta-learned strategy selector: per request, pick the mode, the committee or worker, and the strategy.

Layers, each a small module (imports point down only: the selector uses the performance store, the strategy
vocabulary and the engine, never the daemon or the SDK):
  features.py   the shared dataclasses: RequestFeatures, NodeFeatures, LinkFeatures, CommitteeOption, WorkerOption,
                Prediction, Plan, Outcome, SelectorError
  records.py    performance-store rows (secureinfer.perfstore's RunRecord) <-> (request, option, strategy, outcome);
                read-only loading of a store file
  space.py      the strategy space per option and the hard constraints (privacy, owner Policy, accuracy budget),
                each removed candidate with its reason
  opcosts.py    the engine's own rounds and bytes per op, measured once on the in-process runtime
  cost.py       the analytic cost model: compute / device speed + rounds x RTT + bytes / bandwidth (cold start)
  gbrt.py       gradient-boosted regression trees in numpy (JSON, deterministic)
  predictor.py  the meta-learned predictor (MetaInf-style): trees on the store's rows, cost model as base margin
  bandit.py     discounted Thompson sampling on the predictor's residuals (placement and arm effects)
  selector.py   Selector.plan / observe / retrain / explain
  explain.py    `secureinfer selector explain`: a request as JSON in, the explanation as text or JSON out
The held-out evaluation against its baselines (`secureinfer selector eval`):
  evalcases.py  the ground truth: cases of measured strategies and the request mix asked of them
  policies.py   oracle, random, fixed, cost model, predictor and full selector, written once for both evaluations
  evaluate.py   held out per (model, hardware, link) combination
  evalnet.py    held out per (model, network of several hosts): a plan is a strategy and a placement
  evalreport.py the table, JSON and plot

    from secureinfer.selector import Selector, Policy, RequestFeatures, CommitteeOption, WorkerOption
    sel = Selector("secureinfer/lab/data/sweep.sqlite", policy=Policy(), seed=0)
    plans = sel.plan(request, options)      # ranked, every plan feasible; SelectorError if none is
    sel.observe(plans[0], outcome)

Submodules are imported on first use of these names, so importing the package is cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Selector": "selector", "CandidateView": "selector", "Explanation": "selector",
    "Policy": "space", "AccuracyTable": "space",
    "CostModel": "cost", "Predictor": "predictor", "Bandit": "bandit", "BanditConfig": "bandit",
    "RequestFeatures": "features", "NodeFeatures": "features", "LinkFeatures": "features",
    "CommitteeOption": "features", "WorkerOption": "features", "Prediction": "features", "Plan": "features",
    "Outcome": "features", "SelectorError": "features",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
