"""The meta-learned latency predictor (MetaInf-style): boosted trees over request, node, link and strategy features,
trained on the performance store, with the analytic cost model's estimate as both a feature and the base margin.

The trees learn log(total_s) - log(cost model's total_s): where the store has data the trees correct the analytic
model; on unseen hardware, links or model sizes, the residual stays in the range seen in training while the cost
model's own term carries the extrapolation (trees alone cannot predict outside the targets they saw). Why boosted
trees: see gbrt.py. Features: log sizes (parameters, layers, hidden, vocabulary, sequence, batch, new tokens), task
and architecture, device kind, log matmul speed, CPU count, log link latency and bandwidth, mode, profile,
fractional bits, public weights, precision, int8, static cache, batching, CUDA graphs, compile, speculation, and the
cost model's log latency, log rounds and log bytes.

    p = Predictor(cost_model).fit(records)
    p.predict(request, option, strategy).total_s
    Predictor.from_json(p.to_json(), cost_model)
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from secureinfer.perfstore import RunRecord
from secureinfer.strategy import PlaintextStrategy, SecureStrategy, Strategy

from .cost import CostModel, device_kind, option_gflops
from .features import CommitteeOption, Option, Prediction, RequestFeatures, SelectorError
from .gbrt import GBRT, GBRTConfig
from .records import quiet, samples

FEATURES: tuple[str, ...] = (
    "log_params", "layers", "log_hidden", "log_vocab", "log_seq", "batch", "gen_tokens", "task_embed",
    "arch_bert", "arch_gpt2", "arch_llama", "cuda", "log_gflops", "cpu_count", "log_latency", "log_bandwidth",
    "secure", "profile_accurate", "profile_fast", "profile_lean", "frac_bits", "public_weights", "prec_fp64",
    "prec_fp32", "prec_bf16", "prec_fp16", "int8", "static_cache", "batched", "cuda_graphs", "compiled",
    "speculation", "cost_log_s", "cost_log_rounds", "cost_log_bytes",
)
_NO_LINK_BW = 1e11  # bytes/s standing in for an unlimited link (log-feature)


def feature_vector(request: RequestFeatures, option: Option, strategy: Strategy, cost: Prediction) -> list[float]:
    """The FEATURES of one (request, option, strategy) with its cost-model prediction."""
    nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
    secure = isinstance(strategy, SecureStrategy)
    plain = strategy if isinstance(strategy, PlaintextStrategy) else None
    bw = option.link.bandwidth_bytes_per_s or _NO_LINK_BW
    return [
        math.log(max(request.n_params, 1)), request.n_layers, math.log(request.hidden), math.log(request.vocab),
        math.log(request.seq_len), request.batch, request.gen_tokens, float(request.task == "embed"),
        float(request.arch == "bert"), float(request.arch == "gpt2"), float(request.arch == "llama"),
        float(device_kind(strategy.device) == "cuda"), math.log(option_gflops(option, strategy.device)),
        min(n.cpu_count for n in nodes), math.log(option.link.latency_s + 1e-6), math.log(bw),
        float(secure),
        float(secure and strategy.profile == "accurate"), float(secure and strategy.profile == "fast"),
        float(secure and strategy.profile == "lean"), float(strategy.frac_bits) if secure else 0.0,
        float(secure and strategy.public_weights),
        *[float(plain is not None and plain.precision == p) for p in ("fp64", "fp32", "bf16", "fp16")],
        float(plain is not None and plain.quantization == "int8"), float(plain is not None and plain.static_cache),
        float(strategy.batch_requests), float(plain is not None and plain.cuda_graphs),
        float(plain is not None and plain.compile), float(plain is not None and plain.speculation != "none"),
        math.log(max(cost.total_s, 1e-9)), math.log(cost.rounds + 1.0), math.log(cost.bytes_per_party + 1.0),
    ]


class Predictor:
    """Boosted trees on the store's rows, predicting log(total_s) with the cost model as base margin."""

    def __init__(self, cost_model: CostModel, config: GBRTConfig = GBRTConfig()) -> None:
        self.cost_model = cost_model
        self.config = config
        self.model: GBRT | None = None
        self.n_train = 0

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def _rows(self, items: Sequence[tuple[RequestFeatures, Option, Strategy]]
              ) -> tuple[np.ndarray, np.ndarray, list[Prediction]]:
        costs = [self.cost_model.predict(r, o, s) for r, o, s in items]
        x = np.array([feature_vector(r, o, s, c) for (r, o, s), c in zip(items, costs)], dtype=np.float64)
        base = np.log(np.maximum([c.total_s for c in costs], 1e-9))
        return x, base, costs

    def fit(self, records: Iterable[RunRecord], *, max_load_per_cpu: float | None = 1.75) -> "Predictor":
        """Train on the measured rows (status ok, positive total_s, measured below `max_load_per_cpu`: see
        records.quiet; None keeps every row); returns self."""
        rows = list(records)
        data = samples(quiet(rows, max_load_per_cpu) if max_load_per_cpu is not None else rows)
        if not data:
            raise SelectorError("no measured rows to train the predictor on")
        return self.fit_samples(data)

    def fit_samples(self, data: Sequence[tuple[RequestFeatures, Option, Strategy, float]]) -> "Predictor":
        """Train on (request, option, strategy, total_s) samples; returns self."""
        x, base, _ = self._rows([(r, o, s) for r, o, s, _ in data])
        y = np.log([t for *_, t in data])
        self.model = GBRT(self.config).fit(x, y, base)
        self.n_train = len(data)
        return self

    def predict_many(self, items: Sequence[tuple[RequestFeatures, Option, Strategy]]) -> list[Prediction]:
        """Predictions for several candidates at once (the cost model alone when not fitted)."""
        if not items:
            return []
        x, base, costs = self._rows(items)
        if self.model is None:
            return costs
        log_s = self.model.predict(x, base)
        return [Prediction(total_s=float(math.exp(v)), bytes_per_party=c.bytes_per_party, rounds=c.rounds,
                           source="predictor") for v, c in zip(log_s, costs)]

    def predict(self, request: RequestFeatures, option: Option, strategy: Strategy) -> Prediction:
        return self.predict_many([(request, option, strategy)])[0]

    # --- JSON (no pickle)

    def to_json(self) -> str:
        if self.model is None:
            raise SelectorError("the predictor is not fitted")
        return json.dumps({"version": 1, "features": list(FEATURES), "n_train": self.n_train,
                           "model": self.model.to_dict()})

    @classmethod
    def from_json(cls, text: str, cost_model: CostModel) -> "Predictor":
        data = json.loads(text)
        if data.get("version") != 1 or data.get("features") != list(FEATURES):
            raise SelectorError("predictor JSON from another version (features differ); retrain it")
        p = cls(cost_model)
        p.model = GBRT.from_dict(data["model"])
        p.config = p.model.config
        p.n_train = int(data["n_train"])
        return p


# --- how far the predictor's ranking of one case's strategies can be trusted

SPREAD_FOLDS = 3
MIN_SPREAD_CASES = 8  # cases (with two strategies or more) a mode needs for its spread to be estimated


def _host_of(option: Option) -> str:
    node = option.nodes[0] if isinstance(option, CommitteeOption) else option.node
    return node.host or node.node_id


def _combination(item: tuple[RequestFeatures, Option, Strategy, float]) -> tuple[str, str, str]:
    """The (model, host, link) combination a sample belongs to: the held-out unit."""
    request, option, _, _ = item
    return request.model, _host_of(option), repr(option.link)


@dataclass(frozen=True)
class ResidualSpread:
    """How far the predictor's held-out log-latency errors spread: between the strategies of one case, per mode
    (`within`), and between cases (`between`, the sd of the case means)."""

    within: dict[str, float]
    between: float | None


def residual_spread(data: Sequence[tuple[RequestFeatures, Option, Strategy, float]], cost_model: CostModel,
                    config: GBRTConfig = GBRTConfig(), folds: int = SPREAD_FOLDS) -> ResidualSpread:
    """The predictor's held-out residuals, log(measured / predicted), where a case is one request on one host, link
    and device kind, and held out means its whole (model, host, link) combination was left out of training
    (`folds` folds, round-robin over the sorted combinations: deterministic).
      within   per mode ("secure", "plaintext"): the root mean square of the residuals around their case mean (with
               the n/(n-1) correction): how well the predictor orders the strategies of an unseen case once their
               common offset is known, the scale of the bandit's arm prior. Modes with fewer than
               MIN_SPREAD_CASES cases of two strategies or more are left out.
      between  the standard deviation of the case means: how far off the predictor is for an unseen placement as a
               whole, the scale of the bandit's placement prior (None below MIN_SPREAD_CASES cases)."""
    combos = sorted({_combination(d) for d in data})
    if len(combos) < folds:
        return ResidualSpread({}, None)
    fold_of = {c: i % folds for i, c in enumerate(combos)}
    folded = [(fold_of[_combination(d)], d) for d in data]
    residuals: dict[tuple, list[float]] = {}
    for k in range(folds):
        train = [d for f, d in folded if f != k]
        test = [d for f, d in folded if f == k]
        if not train or not test:
            continue
        preds = Predictor(cost_model, config).fit_samples(train).predict_many([(r, o, s) for r, o, s, _ in test])
        for (r, o, s, t), p in zip(test, preds):
            case = (r, _host_of(o), repr(o.link), s.mode, device_kind(s.device))
            residuals.setdefault(case, []).append(math.log(t / p.total_s))
    within: dict[str, float] = {}
    for mode in ("secure", "plaintext"):
        groups = [v for case, v in residuals.items() if case[3] == mode and len(v) > 1]
        if len(groups) >= MIN_SPREAD_CASES:
            squares = [(e - statistics.fmean(v)) ** 2 * len(v) / (len(v) - 1) for v in groups for e in v]
            within[mode] = math.sqrt(statistics.fmean(squares))
    means = [statistics.fmean(v) for v in residuals.values()]
    return ResidualSpread(within, statistics.stdev(means) if len(means) >= MIN_SPREAD_CASES else None)
