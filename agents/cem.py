"""Cross-entropy method (Rubinstein 1999) as used for latent planning by PlaNet, DINO-WM and
V-JEPA 2-AC: sample around a Gaussian, refit it to the elites, repeat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.planner import CostFn, PlanResult, SamplingConfig, elites, gaussian_candidates


@dataclass
class CEMConfig(SamplingConfig):
    """CEM budget and schedule."""

    momentum: float = 0.1
    """Weight of the old mean in each refit (V-JEPA 2-AC: 0.15)."""


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
