"""Cross-entropy method (Rubinstein 1999) as used for latent planning by PlaNet, DINO-WM and
V-JEPA 2-AC: sample around a Gaussian, refit it to the elites, repeat."""

from __future__ import annotations

from dataclasses import dataclass

from agents.planner import PlanResult, SamplingConfig, SamplingPlanner


@dataclass
class CEMConfig(SamplingConfig):
    """CEM budget and schedule."""

    momentum: float = 0.1
    """Weight of the old mean in each refit (V-JEPA 2-AC: 0.15)."""


class CEM(SamplingPlanner):
    """See the module docstring: the refit is the elites' mean (with momentum) and spread; the
    cheapest candidate of the last iteration is returned."""

    def refit(self, mean, best, best_cost):
        mean = self.cfg.momentum * mean + (1 - self.cfg.momentum) * best.mean(1)
        return mean, best.std(1, unbiased=False).clamp_min(self.cfg.min_std)

    def result(self, cost_fn, mean, std, best, best_cost):
        return PlanResult(best[:, 0], best_cost[:, 0], {"std": std.mean().item()})
