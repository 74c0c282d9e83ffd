"""Online contextual bandit: discounted Thompson sampling on the predictor's residuals in log latency.

The context is carried by the predictor: for a plan it predicts log latency, and the bandit models only what the
predictor gets wrong, the residual e = log(measured total_s) - log(predicted total_s), which is about 0 for a
well-predicted arm. The residual of a plan is the sum of two effects, each with a conjugate Normal-Inverse-Gamma
posterior (unknown mean and variance):
  placement  the nodes it runs on (a slowed-down node makes every strategy on that committee slow);
  arm        the plan itself (Plan.arm: strategy + placement).
An observation updates the placement with the residual minus the arm's posterior mean, then the arm with the residual
minus the updated placement's (one backfitting step). The placement's prior is weak and the arm's strong, so a
residual shared by a committee's strategies goes to the placement: after one slow request every strategy on that
committee looks slower, not only the one that was served.
Change points: a residual far outside an effect's posterior predictive (more than `reset_sigmas` predictive sds
and `reset_min` from its mean) restarts that effect's statistics, so a committee that suddenly got slow is left
after one or two requests instead of after its whole discounted history has been outweighed.
Forgetting: after every observation all statistics are multiplied by `discount` (< 1), so an arm not served for a
while returns to the prior (mean 0: trust the predictor) with growing variance; its Thompson samples then win again
now and then, it is re-tried, and it regains trust if it has recovered (discounted Thompson sampling, Raj & Kalyani
2017). A failed request counts as a residual of at least `failure_penalty`.
Empirical priors: an arm's and a placement's prior scale may be given per call (`arm_beta`, `placement_beta`: the
inverse-gamma scale of the effect's prior). The selector sets them from its predictor's held-out errors on the
training rows (Selector.arm_prior_sd, Selector.placement_prior_sd), so effects the predictor gets right are
explored less.
Randomness: a seeded numpy Generator (exploration noise, not secret randomness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BanditConfig:
    """Prior and forgetting of the residual posteriors."""

    discount: float = 0.95  # per observation, applied to every arm's statistics
    prior_kappa: float = 2.0  # arm effect: pseudo-observations behind the prior mean 0
    placement_kappa: float = 0.3  # placement effect: a weak prior, so a slow node shows after one request
    prior_alpha: float = 2.0
    prior_beta: float = 0.05  # prior residual sd ~ sqrt(beta / (alpha - 1)) = 0.22 (about +-25% in latency)
    failure_penalty: float = math.log(10.0)
    reset_sigmas: float = 4.0  # a residual this many predictive sds from an effect's mean restarts that effect
    reset_min: float = 0.3  # ... and at least this far (log latency: x1.35), so noise never restarts anything

    def __post_init__(self) -> None:
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1]; got {self.discount}")
        if min(self.prior_kappa, self.placement_kappa) <= 0 or self.prior_alpha <= 1 or self.prior_beta <= 0:
            raise ValueError("prior_kappa, placement_kappa > 0, prior_alpha > 1 and prior_beta > 0 are required")


@dataclass
class NIG:
    """Discounted sufficient statistics of one effect's residuals: weight, sum, sum of squares."""

    n: float = 0.0
    s: float = 0.0
    ss: float = 0.0

    def posterior(self, c: BanditConfig, kappa0: float, beta0: float | None = None
                  ) -> tuple[float, float, float, float]:
        """(mu, kappa, alpha, beta) of the Normal-Inverse-Gamma posterior (prior mean 0, prior weight kappa0, prior
        scale beta0, default c.prior_beta)."""
        kappa = kappa0 + self.n
        mu = self.s / kappa
        alpha = c.prior_alpha + self.n / 2
        mean = self.s / self.n if self.n > 1e-12 else 0.0
        scatter = max(self.ss - self.n * mean * mean, 0.0)
        beta = (c.prior_beta if beta0 is None else beta0) + 0.5 * scatter + kappa0 * self.n * mean * mean / (2 * kappa)
        return mu, kappa, alpha, beta

    def mean(self, c: BanditConfig, kappa0: float) -> float:
        return self.posterior(c, kappa0)[0]

    def sample(self, c: BanditConfig, kappa0: float, rng: np.random.Generator, beta0: float | None = None) -> float:
        mu, kappa, alpha, beta = self.posterior(c, kappa0, beta0)
        var = beta / rng.gamma(alpha)  # sigma^2 ~ InvGamma(alpha, beta)
        return float(rng.normal(mu, math.sqrt(var / kappa)))

    def surprised(self, e: float, c: BanditConfig, kappa0: float, beta0: float | None = None) -> bool:
        """Whether e lies far outside this effect's posterior predictive (a change point)."""
        mu, kappa, alpha, beta = self.posterior(c, kappa0, beta0)
        sd = math.sqrt(beta / (alpha - 1) * (1 + 1 / kappa))
        return abs(e - mu) > max(c.reset_sigmas * sd, c.reset_min)

    def add(self, e: float) -> None:
        self.n, self.s, self.ss = self.n + 1.0, self.s + e, self.ss + e * e

    def decay(self, factor: float) -> None:
        self.n, self.s, self.ss = self.n * factor, self.s * factor, self.ss * factor


@dataclass
class Bandit:
    """Residual posteriors per placement and per arm; Thompson samples and discounted updates."""

    config: BanditConfig = field(default_factory=BanditConfig)
    seed: int = 0
    placements: dict[str, NIG] = field(default_factory=dict)
    arms: dict[str, NIG] = field(default_factory=dict)
    observations: int = 0
    resets: int = 0  # change points detected

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def _get(self, table: dict[str, NIG], key: str) -> NIG:
        return table.get(key) or NIG()

    def mean(self, arm: str, placement: str) -> float:
        """Posterior mean residual of a plan (placement effect + arm effect)."""
        c = self.config
        return (self._get(self.placements, placement).mean(c, c.placement_kappa)
                + self._get(self.arms, arm).mean(c, c.prior_kappa))

    def sample(self, arm: str, placement: str, arm_beta: float | None = None, placement_beta: float | None = None
               ) -> float:
        """One Thompson sample of a plan's residual."""
        return self.sample_placement(placement, placement_beta) + self.sample_arm(arm, arm_beta)

    def sample_placement(self, placement: str, placement_beta: float | None = None) -> float:
        """One Thompson sample of a placement's effect (draw it once per planning round and share it among the
        placement's arms: the effect is common to them, so it must not reorder them)."""
        c = self.config
        return self._get(self.placements, placement).sample(c, c.placement_kappa, self.rng, placement_beta)

    def sample_arm(self, arm: str, arm_beta: float | None = None) -> float:
        """One Thompson sample of an arm's own effect (`arm_beta`: its prior scale, default the config's)."""
        c = self.config
        return self._get(self.arms, arm).sample(c, c.prior_kappa, self.rng, arm_beta)

    def observed(self, arm: str, placement: str) -> float:
        """Effective (discounted) number of observations behind this arm."""
        return self._get(self.arms, arm).n

    def update(self, arm: str, placement: str, residual: float, ok: bool = True, arm_beta: float | None = None,
               placement_beta: float | None = None) -> None:
        """Forget a little everywhere, then add one residual (failures count at least failure_penalty; `arm_beta`,
        `placement_beta`: the effects' prior scales, as given to the samples)."""
        c = self.config
        e = residual if ok else max(residual, c.failure_penalty)
        for table in (self.placements, self.arms):
            for stats in table.values():
                stats.decay(c.discount)
        place = self.placements.setdefault(placement, NIG())
        arm_stats = self.arms.setdefault(arm, NIG())
        e_place = e - arm_stats.mean(c, c.prior_kappa)  # the placement takes what the arm does not explain
        if place.surprised(e_place, c, c.placement_kappa, placement_beta):
            self.placements[placement] = place = NIG()  # a change point: forget the old regime at once
            self.resets += 1
        place.add(e_place)
        e_arm = e - place.mean(c, c.placement_kappa)  # the arm what the (updated) placement does not
        if arm_stats.surprised(e_arm, c, c.prior_kappa, arm_beta):
            self.arms[arm] = arm_stats = NIG()
            self.resets += 1
        arm_stats.add(e_arm)
        self.observations += 1

    def to_dict(self) -> dict[str, Any]:
        def dump(table: dict[str, NIG]) -> dict[str, list[float]]:
            return {k: [v.n, v.s, v.ss] for k, v in table.items()}

        return {"config": self.config.__dict__, "seed": self.seed, "observations": self.observations,
                "placements": dump(self.placements), "arms": dump(self.arms)}
