"""Model-predictive path integral control (Williams et al. 2017) in the form TD-MPC2 (Hansen et
al. 2024) uses: sample around a Gaussian, keep the elites, refit the mean and spread as
exponentially cost-weighted averages of them, warm-started from the previous plan."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.planner import CostFn, PlanResult, elites, gaussian_candidates
from envs.errors import UserError


@dataclass
class MPPIConfig:
    """MPPI budget and weighting."""

    samples: int = 200
    """Candidates per iteration."""
    iterations: int = 5
    """Refits of the sampling distribution (TD-MPC2: 6)."""
    elites: int = 32
    """Cheapest candidates that are weighted (TD-MPC2: 64 of 512)."""
    temperature: float = 0.2
    """Weights are exp(-cost / temperature), costs rescaled to [0, 1] over the elites (scale-free)."""
    init_std: float = 0.7
    """Initial spread of every action component."""
    min_std: float = 0.05
    """Floor of the spread (TD-MPC2: 0.05)."""

    def __post_init__(self):
        if min(self.samples, self.iterations, self.elites) < 1 or self.temperature <= 0 or self.init_std <= 0:
            raise UserError("MPPI samples, iterations and elites must be positive, temperature and init-std above 0")


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
        return PlanResult(mean, best_cost[:, 0], {"std": std.mean().item()})
