"""The planner interface shared by CEM, MPPI and the gradient planner, and the latent goal cost.

A planner minimises a cost over action sequences: `plan(cost_fn, init) -> PlanResult`, where
`cost_fn(actions[B, S, H, A]) -> cost[B, S]` scores S candidates for each of B problems at once
(one batched world-model rollout) and `init [B, H, A]` is the starting mean (zeros, or the
previous plan shifted: the MPC warm start). Actions stay in [-1, 1]. Planners hold no state, log
nothing and never touch a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from infra.errors import UserError

CostFn = Callable[[torch.Tensor], torch.Tensor]  # actions [B, S, H, A] -> cost [B, S]


@dataclass
class PlanResult:
    """The planned sequence [B, H, A], its cost [B] and planner diagnostics."""

    actions: torch.Tensor
    cost: torch.Tensor
    info: dict = field(default_factory=dict)


@dataclass
class SamplingConfig:
    """Budget of a sampling planner (CEM, MPPI)."""

    samples: int = 150
    """Candidates per iteration."""
    iterations: int = 4
    """Refits of the sampling distribution."""
    elites: int = 20
    """Cheapest candidates the distribution is refitted to."""
    init_std: float = 0.7
    """Initial spread of every action component."""
    min_std: float = 0.05
    """Floor of the spread (keeps exploring)."""

    def __post_init__(self):
        if min(self.samples, self.iterations, self.elites) < 1 or self.init_std <= 0:
            raise UserError("planner samples, iterations and elites must be positive, and init-std above 0")


class SamplingPlanner:
    """The loop CEM and MPPI share: sample around a Gaussian, keep the elites, refit; subclasses
    give the refit and which plan to return."""

    def __init__(self, cfg: SamplingConfig):
        self.cfg = cfg

    @torch.no_grad()
    def plan(self, cost_fn: CostFn, init: torch.Tensor, generator: torch.Generator | None = None) -> PlanResult:
        cfg = self.cfg
        mean, std = init.clone(), torch.full_like(init, cfg.init_std)  # [B, H, A]
        for _ in range(cfg.iterations):
            candidates = gaussian_candidates(mean, std, cfg.samples, generator)
            best, best_cost = elites(candidates, cost_fn(candidates), cfg.elites)  # [B, K, H, A], [B, K]
            mean, std = self.refit(mean, best, best_cost)
        return self.result(cost_fn, mean, std, best, best_cost)

    def refit(self, mean: torch.Tensor, best: torch.Tensor, best_cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New (mean, std) [B, H, A] from the old mean and the elites."""
        raise NotImplementedError

    def result(self, cost_fn: CostFn, mean, std, best, best_cost) -> PlanResult:
        """The plan returned after the last iteration."""
        raise NotImplementedError


class Planner(Protocol):
    def plan(self, cost_fn: CostFn, init: torch.Tensor, generator: torch.Generator | None = None) -> PlanResult:
        """Minimise `cost_fn` starting from the mean `init` [B, H, A]."""


def gaussian_candidates(mean: torch.Tensor, std: torch.Tensor, samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """S candidates [B, S, H, A] around mean [B, H, A] with spread std (same shape), clipped to
    [-1, 1]; candidate 0 is the mean itself, so an iteration never loses the incumbent."""
    noise = torch.randn((mean.shape[0], samples, *mean.shape[1:]), generator=generator, dtype=mean.dtype).to(mean.device)
    candidates = (mean[:, None] + std[:, None] * noise).clamp(-1.0, 1.0)
    candidates[:, 0] = mean
    return candidates


def elites(candidates: torch.Tensor, cost: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` cheapest candidates [B, K, H, A] and their costs [B, K], cheapest first."""
    cost, index = cost.topk(min(count, cost.shape[1]), dim=1, largest=False)
    return candidates.gather(1, index[:, :, None, None].expand(-1, -1, *candidates.shape[2:])), cost


def latent_step_cost(predicted: torch.Tensor, goal: torch.Tensor, norm: str = "l2", weight: torch.Tensor | None = None) -> torch.Tensor:
    """Distance of predicted latents [B, S, H, N, D] to the goal latent [B, N, D] at every step ->
    [B, S, H]: mean squared (l2), root mean squared (dist) or mean absolute (l1) error, each
    channel weighed by `weight` [D] where given (a weighted mean)."""
    diff = predicted - goal[:, None, None]
    per_channel = diff.abs() if norm == "l1" else diff**2
    if weight is None:
        per_step = per_channel.mean((-2, -1))
    else:
        per_step = (per_channel * weight).sum(-1).mean(-1) / weight.sum().clamp_min(1e-12)
    return per_step.clamp_min(1e-12).sqrt() if norm == "dist" else per_step


def horizon_cost(per_step: torch.Tensor, final_weight: float = 0.0, final_only: bool = False) -> torch.Tensor:
    """Per-step costs [..., H] -> [...]: the mean over every step of the horizon plus `final_weight`
    times the last step's (a final-step cost alone leaves MPC's first moves arbitrary; some weight
    on it favours plans that end at the goal over ones that hover near it); `final_only`: the last
    step's alone (LeWM's and DINO-WM's cost)."""
    if final_only:
        return per_step[..., -1]
    return per_step.mean(-1) + final_weight * per_step[..., -1]

