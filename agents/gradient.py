"""Gradient-based planning: Adam on the action sequence through the differentiable world-model
rollout (as evaluated in DINO-WM and stable-worldmodel), from several starts at once; actions
are projected back into [-1, 1] after every step and the cheapest start wins."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.planner import CostFn, PlanResult, gaussian_candidates
from infra.errors import UserError


@dataclass
class GradConfig:
    """Gradient planner budget."""

    samples: int = 16
    """Parallel starts (the first is the initial mean)."""
    iterations: int = 20
    """Adam steps."""
    lr: float = 0.1
    """Adam step size (actions live in [-1, 1])."""
    init_std: float = 0.5
    """Spread of the random starts around the mean."""

    def __post_init__(self):
        if min(self.samples, self.iterations) < 1 or self.lr <= 0 or self.init_std < 0:
            raise UserError("gradient planner samples and iterations must be positive, lr above 0 and init-std not negative")


class GradientPlanner:
    """See the module docstring."""

    def __init__(self, cfg: GradConfig):
        self.cfg = cfg

    def plan(self, cost_fn: CostFn, init: torch.Tensor, generator: torch.Generator | None = None) -> PlanResult:
        cfg = self.cfg
        with torch.no_grad():
            start = gaussian_candidates(init, torch.full_like(init, cfg.init_std), cfg.samples, generator)
        actions = start.clone().requires_grad_(True)  # [B, S, H, A]
        optimizer = torch.optim.Adam([actions], lr=cfg.lr)
        with torch.enable_grad():
            for _ in range(cfg.iterations):
                cost = cost_fn(actions)  # [B, S]
                optimizer.zero_grad(set_to_none=True)
                cost.sum().backward()
                optimizer.step()
                with torch.no_grad():
                    actions.clamp_(-1.0, 1.0)
        with torch.no_grad():
            cost = cost_fn(actions)
            best = cost.argmin(1)
            rows = torch.arange(len(best))
            return PlanResult(actions[rows, best].detach(), cost[rows, best], {})
