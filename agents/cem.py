"""Cross-entropy method (Rubinstein 1999) as used for latent planning by PlaNet, DINO-WM and
V-JEPA 2-AC: sample around a Gaussian, refit it to the elites, repeat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.planner import CostFn, PlanResult, elites, gaussian_candidates
from envs.errors import UserError


@dataclass
class CEMConfig:
    """CEM budget and schedule."""

    samples: int = 200
    """Candidates per iteration."""
    iterations: int = 5
    """Refits of the sampling distribution."""
    elites: int = 20
    """Cheapest candidates the distribution is refitted to."""
    init_std: float = 0.7
    """Initial spread of every action component."""
    min_std: float = 0.05
    """Floor of the spread (keeps exploring)."""
    momentum: float = 0.1
    """Weight of the old mean in each refit (V-JEPA 2-AC: 0.15)."""

    def __post_init__(self):
        if min(self.samples, self.iterations, self.elites) < 1 or self.init_std <= 0:
            raise UserError("CEM samples, iterations and elites must be positive, and init-std above 0")


class CEM:
    """See the module docstring."""

    def __init__(self, cfg: CEMConfig):
        self.cfg = cfg

    @torch.no_grad()
    def plan(self, cost_fn: CostFn, init: torch.Tensor, generator: torch.Generator | None = None) -> PlanResult:
        cfg = self.cfg
        mean, std = init.clone(), torch.full_like(init, cfg.init_std)  # [B, H, A]
        for _ in range(cfg.iterations):
            candidates = gaussian_candidates(mean, std, cfg.samples, generator)
            best, best_cost = elites(candidates, cost_fn(candidates), cfg.elites)
            mean = cfg.momentum * mean + (1 - cfg.momentum) * best.mean(1)
            std = best.std(1, unbiased=False).clamp_min(cfg.min_std)
        return PlanResult(best[:, 0], best_cost[:, 0], {"std": std.mean().item()})
