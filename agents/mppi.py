"""Model-predictive path integral control (Williams et al. 2017) in the form TD-MPC2 (Hansen et
al. 2024) uses: sample around a Gaussian, keep the elites, refit the mean and spread as
exponentially cost-weighted averages of them, warm-started from the previous plan."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.planner import CostFn, PlanResult, SamplingConfig, elites, gaussian_candidates
from envs.errors import UserError


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


class MPPI:
    """See the module docstring."""

    def __init__(self, cfg: MPPIConfig):
        self.cfg = cfg

    @torch.no_grad()
    def plan(self, cost_fn: CostFn, init: torch.Tensor, generator: torch.Generator | None = None) -> PlanResult:
        cfg = self.cfg
        mean, std = init.clone(), torch.full_like(init, cfg.init_std)  # [B, H, A]
        for _ in range(cfg.iterations):
            candidates = gaussian_candidates(mean, std, cfg.samples, generator)
            best, best_cost = elites(candidates, cost_fn(candidates), cfg.elites)  # [B, K, H, A], [B, K]
            spread = (best_cost[:, -1:] - best_cost[:, :1]).clamp_min(1e-9)
            weight = torch.softmax(-(best_cost - best_cost[:, :1]) / spread / cfg.temperature, 1)[:, :, None, None]
            mean = (weight * best).sum(1)
            std = (weight * (best - mean[:, None]) ** 2).sum(1).sqrt().clamp(cfg.min_std, 2.0)
        return PlanResult(mean, cost_fn(mean[:, None])[:, 0], {"std": std.mean().item()})
