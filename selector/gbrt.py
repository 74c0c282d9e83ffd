"""Gradient-boosted regression trees in numpy (Huber or squared loss), small and deterministic, saved as JSON.

Why trees, and why these: the training set is the performance store, a few hundred to a few thousand rows of mixed
categorical (mode, profile, precision, device kind) and numeric (sizes, link latency, the cost model's estimate)
features whose effects are monotone-ish and interact (a profile matters only in secure mode, bandwidth only for
byte-heavy plans). Boosted trees handle that with no feature scaling, little tuning and no risk of the wild
extrapolation a neural net or a high-degree polynomial has; with features pre-binned into at most `max_bins`
quantile bins, a split search is a few `np.bincount` calls, so fitting is fast on one core. No heavy dependency
(no sklearn/xgboost/lightgbm), no randomness (no row/column subsampling), and the model is plain numbers that
round-trip through JSON (no pickle). The default Huber loss (residuals clipped at 0.5 in log latency) keeps a few
timing outliers of a shared, busy machine from dragging leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GBRTConfig:
    """Boosting hyper-parameters."""

    n_trees: int = 300
    learning_rate: float = 0.05
    max_depth: int = 3
    min_leaf: int = 3
    max_bins: int = 32
    l2: float = 1.0  # ridge penalty on leaf values (shrinks leaves with few rows)
    huber: float | None = 0.5  # Huber loss: residuals clipped at this size (timing outliers); None: squared loss


class GBRT:
    """Boosted trees; `fit(x, y, base)` learns y - base, `predict(x, base)` adds the trees to base."""

    def __init__(self, config: GBRTConfig = GBRTConfig()) -> None:
        self.config = config
        self.edges: list[np.ndarray] = []  # per feature: bin upper edges (value <= edge[b] goes to bin <= b)
        self.trees: list[dict[str, list]] = []  # feature, threshold, left, right, value (arrays per node)
        self.bias = 0.0

    # --- fitting

    def _bin(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.int32)
        for j, edges in enumerate(self.edges):
            out[:, j] = np.searchsorted(edges, x[:, j], side="left")
        return out

    def fit(self, x: np.ndarray, y: np.ndarray, base: np.ndarray | None = None) -> "GBRT":
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError(f"fit needs x (n, d) and y (n,) with n > 0; got {x.shape} and {y.shape}")
        base = np.zeros(len(y)) if base is None else np.asarray(base, dtype=np.float64)
        self.edges = []
        for j in range(x.shape[1]):
            values = np.unique(x[:, j])
            if len(values) > self.config.max_bins:
                qs = np.quantile(x[:, j], np.linspace(0, 1, self.config.max_bins + 1)[1:-1])
                values = np.unique(qs)
            # thresholds halfway between consecutive distinct values
            self.edges.append((values[:-1] + values[1:]) / 2 if len(values) > 1 else np.array([]))
        bins = self._bin(x)
        resid = y - base
        self.bias = float(np.median(resid) if self.config.huber is not None else np.mean(resid))
        pred = np.full(len(y), self.bias)
        self.trees = []
        for _ in range(self.config.n_trees):
            g = resid - pred  # the loss's negative gradient: the residual, clipped for Huber
            tree = self._grow(bins, g if self.config.huber is None else np.clip(g, -self.config.huber,
                                                                                 self.config.huber))
            pred += self._apply(tree, bins, binned=True)
            self.trees.append(tree)
        return self

    def _grow(self, bins: np.ndarray, g: np.ndarray) -> dict[str, list]:
        tree: dict[str, list] = {"feature": [], "threshold": [], "bin": [], "left": [], "right": [], "value": []}
        self._node(tree, bins, g, np.arange(len(g)), 0)
        return tree

    def _new(self, tree: dict[str, list]) -> int:
        for k in tree:
            tree[k].append(0.0 if k in ("value", "threshold") else -1)
        return len(tree["value"]) - 1

    def _node(self, tree: dict[str, list], bins: np.ndarray, g: np.ndarray, idx: np.ndarray, depth: int) -> int:
        node = self._new(tree)
        lr, lam = self.config.learning_rate, self.config.l2
        tree["value"][node] = float(lr * g[idx].sum() / (len(idx) + lam))
        if depth >= self.config.max_depth or len(idx) < 2 * self.config.min_leaf:
            return node
        split = self._best_split(bins[idx], g[idx])
        if split is None:
            return node
        j, b = split
        go_left = bins[idx, j] <= b
        tree["feature"][node], tree["threshold"][node], tree["bin"][node] = j, float(self.edges[j][b]), b
        tree["left"][node] = self._node(tree, bins, g, idx[go_left], depth + 1)
        tree["right"][node] = self._node(tree, bins, g, idx[~go_left], depth + 1)
        return node

    def _best_split(self, bins: np.ndarray, g: np.ndarray) -> tuple[int, int] | None:
        """(feature, bin) maximising the reduction of squared error, or None when nothing helps."""
        lam, m = self.config.l2, self.config.min_leaf
        total_g, total_n = g.sum(), len(g)
        parent = total_g * total_g / (total_n + lam)
        best, best_gain = None, 1e-12
        for j, edges in enumerate(self.edges):
            nb = len(edges) + 1
            if nb < 2:
                continue
            cnt = np.cumsum(np.bincount(bins[:, j], minlength=nb))[:-1]
            sg = np.cumsum(np.bincount(bins[:, j], weights=g, minlength=nb))[:-1]
            ok = (cnt >= m) & (total_n - cnt >= m)
            if not ok.any():
                continue
            gain = sg ** 2 / (cnt + lam) + (total_g - sg) ** 2 / (total_n - cnt + lam) - parent
            gain = np.where(ok, gain, -np.inf)
            b = int(np.argmax(gain))
            if gain[b] > best_gain:
                best, best_gain = (j, b), float(gain[b])
        return best

    # --- prediction

    def _apply(self, tree: dict[str, list], x: np.ndarray, binned: bool = False) -> np.ndarray:
        """The tree's leaf value for every row (vectorised descent; `binned`: x holds bin indices)."""
        feature = np.asarray(tree["feature"], dtype=np.int64)
        split = np.asarray(tree["bin"] if binned else tree["threshold"], dtype=np.float64)
        left, right = np.asarray(tree["left"], dtype=np.int64), np.asarray(tree["right"], dtype=np.int64)
        node = np.zeros(len(x), dtype=np.int64)
        rows = np.arange(len(x))
        while True:
            f = feature[node]
            inner = f >= 0
            if not inner.any():
                break
            r, n = rows[inner], node[inner]
            go_left = x[r, f[inner]] <= split[n]
            node[inner] = np.where(go_left, left[n], right[n])
        return np.asarray(tree["value"], dtype=np.float64)[node]

    def predict(self, x: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if self.edges and x.shape[1] != len(self.edges):
            raise ValueError(f"expected {len(self.edges)} features, got {x.shape[1]}")
        out = np.full(len(x), self.bias) + (0.0 if base is None else np.asarray(base, dtype=np.float64))
        for tree in self.trees:
            out += self._apply(tree, x)
        return out

    # --- JSON

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.__dict__, "bias": self.bias, "edges": [e.tolist() for e in self.edges],
                "trees": self.trees}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GBRT":
        model = cls(GBRTConfig(**data["config"]))
        model.bias = float(data["bias"])
        model.edges = [np.asarray(e, dtype=np.float64) for e in data["edges"]]
        model.trees = [{k: list(v) for k, v in t.items()} for t in data["trees"]]
        return model
