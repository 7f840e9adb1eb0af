"""Model-predictive path integral control (Williams et al. 2017) in the form TD-MPC2 (Hansen et
al. 2024) uses: sample around a Gaussian, keep the elites, refit the mean and spread as
exponentially cost-weighted averages of them, warm-started from the previous plan."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.planner import PlanResult, SamplingConfig, SamplingPlanner
from infra.errors import UserError


@dataclass
class MPPIConfig(SamplingConfig):
    """MPPI budget and weighting."""

    elites: int = 32
    """Cheapest candidates that are weighted (TD-MPC2: 64 of 512)."""
    temperature: float = 0.2
    """Weights are exp(-cost / temperature), costs rescaled to [0, 1] over the elites (scale-free)."""

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise UserError(f"MPPI temperature must be above 0, got {self.temperature}")


class MPPI(SamplingPlanner):
    """See the module docstring: the refit is the elites' cost-weighted mean and spread; the
    final mean is returned, with its cost."""

    def refit(self, mean, best, best_cost):
        spread = (best_cost[:, -1:] - best_cost[:, :1]).clamp_min(1e-9)
        weight = torch.softmax(-(best_cost - best_cost[:, :1]) / spread / self.cfg.temperature, 1)[:, :, None, None]
        mean = (weight * best).sum(1)
        return mean, (weight * (best - mean[:, None]) ** 2).sum(1).sqrt().clamp(self.cfg.min_std, 2.0)

    def result(self, cost_fn, mean, std, best, best_cost):
        return PlanResult(mean, cost_fn(mean[:, None])[:, 0], {"std": std.mean().item()})
