"""A learned goal distance in a world model's latent space: about how many model steps separate a
latent from a goal latent, through the transitions the dataset shows.

Why: MPC that minimises the plain latent distance to the goal has local minima where the straight
line is blocked (behind a wall the latent distance falls while the path to the goal grows). A
distance that counts steps along feasible paths has none, so a short horizon suffices.

Method: HILP (Park, Kreiman & Levine 2024, "Foundation Policies with Hilbert Representations"). A
map phi gives the goal-conditioned value V(s, g) = -||phi(s) - phi(g)||, fitted by expectile
regression (IQL, Kostrikov et al. 2022) to the Bellman target -1 + gamma * V_target(s', g) on
the dataset's transitions (one model step, `frame_skip` env steps apart), with an EMA target
network; the target is -1 alone when s' is the goal. Goals are later frames of the same episode
(geometric offsets) or random frames. The value then approximates the discounted shortest path
through the data, -(1 - gamma^d) / (1 - gamma) for d steps; `steps_from_value` inverts it.

Trained on the world model's (frozen) latents only; no simulator state.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from infra.errors import UserError


@dataclass
class GoalDistanceConfig:
    """The map phi and its TD fit."""

    width: int = 128
    """Hidden width of phi's MLP."""
    depth: int = 2
    """Hidden layers of phi's MLP."""
    dim: int = 32
    """Size of phi's output (the space whose Euclidean distance is the value)."""
    discount: float = 0.95
    """gamma per model step (distances saturate at 1 / (1 - gamma) steps' worth)."""
    expectile: float = 0.9
    """tau of the expectile loss (above 0.5: fit the shortest paths, not the average one)."""
    target_ema: float = 0.02
    """Fraction of the online weights moved into the target network after every step."""
    trajectory_goals: float = 0.7
    """Share of goals drawn from the same episode (the rest are random training frames)."""

    def __post_init__(self):
        if min(self.width, self.depth, self.dim) < 1:
            raise UserError("goal-distance width, depth and dim must be positive")
        if not (0 < self.discount < 1 and 0.5 <= self.expectile < 1 and 0 < self.target_ema <= 1 and 0 <= self.trajectory_goals <= 1):
            raise UserError("need 0 < discount < 1, 0.5 <= expectile < 1, 0 < target-ema <= 1 and 0 <= trajectory-goals <= 1")


class GoalDistance(nn.Module):
    """phi over flattened frame latents [..., N*D]; see the module docstring."""

    def __init__(self, cfg: GoalDistanceConfig, latent_size: int):
        super().__init__()
        self.cfg = cfg
        layers, width = [], latent_size
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.width), nn.LayerNorm(cfg.width), nn.GELU()]
            width = cfg.width
        self.phi = nn.Sequential(*layers, nn.Linear(width, cfg.dim))
        self.target = copy.deepcopy(self.phi).requires_grad_(False)

    @staticmethod
    def _gap(phi: nn.Module, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """||phi(z) - phi(goal)|| [...] for latents [..., N, D] (goal broadcast against z)."""
        return (phi(z.flatten(-2)) - phi(goal.flatten(-2))).square().sum(-1).clamp_min(1e-8).sqrt()

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """batch: "z", "z_next", "goal" [B, N, D] and "reached" [B] (the goal is z_next) -> (loss, metrics)."""
        value = -self._gap(self.phi, batch["z"], batch["goal"])  # [B]
        with torch.no_grad():
            following = -self._gap(self.target, batch["z_next"], batch["goal"])
            target = -1.0 + self.cfg.discount * (1.0 - batch["reached"].float()) * following
        error = target - value
        weight = torch.where(error > 0, self.cfg.expectile, 1 - self.cfg.expectile)
        loss = (weight * error.square()).mean()
        return loss, {"loss/expectile": loss.detach(), "train/mean_steps": self.steps_from_value(value.detach()).mean()}

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        for online, target in zip(self.phi.parameters(), self.target.parameters()):
            target.lerp_(online, self.cfg.target_ema)

    def steps_from_value(self, value: torch.Tensor) -> torch.Tensor:
        """Model steps d with -(1 - gamma^d) / (1 - gamma) = value (capped where the value saturates)."""
        gamma = self.cfg.discount
        remaining = (1 + (1 - gamma) * value).clamp_min(1e-6)
        return remaining.log() / math.log(gamma)

    def gap(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The planning cost: ||phi(z) - phi(goal)|| [...] (minus the value) of latents [..., N, D] to a goal [..., N, D]."""
        return self._gap(self.phi, z, goal)
