"""Model-predictive control (receding horizon) around any planner and any model of the future.

Every `execute` model steps the agent replans H model steps ahead, warm-starting from the
previous plan shifted by what was executed (PlaNet, TD-MPC2, DINO-WM's MPC). One model step is an
action block of `frame_skip` env steps; with `repeat_actions` the planner searches one action per
block, held for the block (H x A numbers instead of H x skip x A).

The model of the future is an `Imagination`: `observe` takes each real observation, `cost` scores
candidate action blocks from the latest one. `LatentImagination` is the world model with the
goal image's latent; the evaluation protocol also plugs in the true simulator (the ceiling).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Protocol

import numpy as np
import torch
import tyro

from agents import PLANNERS
from agents.cem import CEMConfig
from agents.gradient import GradConfig
from agents.mppi import MPPIConfig
from agents.planner import PlanResult, horizon_cost, latent_step_cost
from infra.errors import UserError


@dataclass
class MPCConfig:
    """Receding-horizon control and the cost."""

    planner: Annotated[str, tyro.conf.arg(prefix_name=False)] = "cem"
    """cem, mppi or grad."""
    horizon: int | None = None
    """Model steps (action blocks) planned ahead (None: the evaluation setting's, 5 by default)."""
    execute: int = 1
    """Model steps executed before replanning."""
    norm: str = "l2"
    """Latent distance per step: l2 (mean squared), dist (root mean squared) or l1 (mean absolute)."""
    final_weight: float | None = None
    """Extra weight of the last predicted step in the cost, on top of every step's (None: the setting's, 0 by default)."""
    final_only: bool = False
    """Score a plan by its last predicted step alone (LeWM's and DINO-WM's cost) instead of every step's."""
    distance_weight: float | None = None
    """Weight of the run's learned goal distance (`jepa train-distance`: discounted model steps, at
    most 1 / (1 - discount)) added to the latent distance at every step, for runs that have one
    (None: the setting's; 0: latent distance only)."""
    cost: str | None = None
    """Channels of the state the latent distance weighs: all, or goal (those `jepa train-wm` found
    to follow where its training episodes reach their goals; the others get no weight); None: the
    run's recipe, else all."""
    prior_only: bool = False
    """With a policy prior (`jepa plan-eval --prior`): choose among the policy's action hypotheses
    by the world model's cost, without the planner's search around them."""
    repeat_actions: bool = True
    """Plan one action per block, held for the block's env steps."""
    cem: CEMConfig = field(default_factory=CEMConfig)
    mppi: MPPIConfig = field(default_factory=MPPIConfig)
    grad: GradConfig = field(default_factory=GradConfig)

    def __post_init__(self):
        if self.planner not in PLANNERS:
            raise UserError(f"planner must be one of {tuple(PLANNERS)}, got {self.planner!r}")
        if self.cost not in (None, "all", "goal"):
            raise UserError(f"cost must be all or goal, got {self.cost!r}")
        if self.norm not in ("l1", "l2", "dist"):
            raise UserError(f"norm must be l1, l2 or dist, got {self.norm!r}")
        if self.horizon is not None and self.horizon < 1:
            raise UserError(f"the planning horizon must be at least 1, got {self.horizon}")
        if self.execute < 1 or (self.horizon is not None and self.execute > self.horizon):
            raise UserError(f"execute ({self.execute}) must be between 1 and the horizon ({self.horizon})")

    def build_planner(self):
        """The configured planner."""
        cls, _ = PLANNERS[self.planner]
        return cls(getattr(self, self.planner))


PRESETS = {  # the published planners, as their configs give them (ANCHORS.md); each replaces the fields it names
    # LeWM / stable-worldmodel: CEM 300 x 30, top 30, horizon 5 blocks of 5 actions, cost on the final
    # predicted step only, all 5 blocks executed before replanning
    "lewm": {"planner": "cem", "horizon": 5, "execute": 5, "final_only": True, "repeat_actions": False,
             "cem": CEMConfig(samples=300, iterations=30, elites=30)},
}


def with_preset(cfg: MPCConfig, preset: str | None) -> MPCConfig:
    """`cfg` with a published planner's settings (`PRESETS`) in place of its own; None: unchanged."""
    if preset is None:
        return cfg
    if preset not in PRESETS:
        raise UserError(f"unknown planner preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(cfg, **PRESETS[preset])


class Imagination(Protocol):
    def observe(self, obs: dict, info: dict, executed: np.ndarray | None) -> None:
        """Record a real observation (and the action block [skip * A] that led to it, None at the start)."""

    def cost(self, blocks: torch.Tensor) -> torch.Tensor:
        """Cost [1, S] of candidate action blocks [1, S, H, skip * A] from the latest observation."""


class LatentImagination:
    """A world model's rollouts scored against the goal image's latent: the latent distance at every
    step (`latent_step_cost`), plus `distance_weight` times the learned goal distance where the run
    has one (`worldmodel/goal_distance.py`), combined over the horizon by `horizon_cost`."""

    def __init__(self, model, goal_pixels: np.ndarray, cfg: MPCConfig, distance=None, goal_proprio: np.ndarray | None = None):
        self.model, self.cfg = model.requires_grad_(False), cfg
        self.distance = distance if cfg.distance_weight else None
        self.weight = model.cost_weight if cfg.cost == "goal" else None
        self.goal = self._encode(goal_pixels, goal_proprio)[None]  # [1, N, D]; a state with proprio reads the goal's from the image when not given
        history = model.cfg.predictor.history
        self.latents, self.actions = deque(maxlen=history), deque(maxlen=history - 1)

    def _encode(self, pixels: np.ndarray, proprio: np.ndarray | None) -> torch.Tensor:
        proprio = None if proprio is None else torch.as_tensor(proprio, dtype=torch.float32)[None, None]
        with torch.no_grad():
            return self.model.encode(torch.from_numpy(np.ascontiguousarray(pixels))[None, None], proprio)[0, 0]  # [N, D]

    def observe(self, obs: dict, info: dict, executed: np.ndarray | None) -> None:
        if executed is not None and self.actions.maxlen:
            self.actions.append(torch.as_tensor(executed, dtype=torch.float32))
        self.latents.append(self._encode(obs["pixels"], obs.get("proprio")))

    def _with_history(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(history latents [Th, N, D], the action blocks between them followed by `blocks` [..., Th-1+H, skip * A])."""
        z_hist = torch.stack(list(self.latents))
        if len(z_hist) == 1:
            return z_hist, blocks
        past = torch.stack(list(self.actions)[-(len(z_hist) - 1):])  # [Th-1, skip * A]
        return z_hist, torch.cat([past.expand(*blocks.shape[:-2], *past.shape), blocks], -2)

    def cost(self, blocks: torch.Tensor) -> torch.Tensor:
        z_hist, blocks = self._with_history(blocks)
        predicted = self.model.rollout(z_hist.expand(*blocks.shape[:2], *z_hist.shape), blocks)  # [1, S, H, N, D]
        per_step = latent_step_cost(predicted, self.goal, self.cfg.norm, self.weight)  # [1, S, H]
        if self.distance is not None:
            per_step = per_step + self.cfg.distance_weight * self.distance.gap(predicted, self.goal[:, None, None])
        return horizon_cost(per_step, self.cfg.final_weight, self.cfg.final_only)

    @torch.no_grad()
    def predicted(self, blocks: torch.Tensor) -> torch.Tensor:
        """The imagined latents [H, N, D] of one plan's blocks [H, skip * A] (for videos)."""
        return self.model.rollout(*self._with_history(blocks))


class PolicyPrior:
    """A trained policy's proposals for the planner (policy-guided planning): it sees every env
    step's observation with the goal image, and at each replanning gives its action hypotheses as
    planned blocks, each block's action the mean of a chunk's actions in it."""

    def __init__(self, policy, goal_pixels: np.ndarray):
        self.policy, self.goal = policy, np.ascontiguousarray(goal_pixels)[None]
        policy.reset()

    def _batched(self, obs: dict) -> dict:
        return {"pixels": obs["pixels"][None], "proprio": obs["proprio"][None], "goal": self.goal}

    def observe(self, obs: dict) -> None:
        """Add a step's observation to the policy's history."""
        self.policy.observe(self._batched(obs))

    def act(self, obs: dict, info: dict | None = None) -> np.ndarray:
        """The policy's own next action [A] (the policy alone, for comparison)."""
        return self.policy.select_action(self._batched(obs))[0].numpy()

    def blocks(self, obs: dict, frame_skip: int, horizon: int, repeat: bool) -> tuple[torch.Tensor, int]:
        """(the policy's action hypotheses as planned blocks [M, B, A] (`repeat`: each block's action
        the mean of the chunk's actions in it) or [M, B, skip * A] (every action; a last partial block
        holds the chunk's last action), the most likely first, with B the blocks a chunk covers, at
        most `horizon`; and B)."""
        chunks, logits = self.policy.predict_action_hypotheses(self._batched(obs), observe=False)
        chunks = chunks[0].float()  # [M, k, A]
        if logits is not None:
            chunks = chunks[logits[0].argsort(descending=True)]
        covered = min(horizon, -(-chunks.shape[1] // frame_skip))
        padded = torch.cat([chunks, chunks[:, -1:].expand(-1, covered * frame_skip - chunks.shape[1], -1)], 1)[:, : covered * frame_skip]
        blocks = padded.reshape(len(chunks), covered, frame_skip, -1)  # [M, B, skip, A]
        return (blocks.mean(2) if repeat else blocks.flatten(2)), covered


class MPC:
    """Receding-horizon controller: `reset(imagination)`, then `act(obs, info)` every env step.
    With a `PolicyPrior`, each of the policy's hypotheses begins a candidate plan (the rest is the
    warm start), the most likely one seeds the planner's search, and the cheapest of the
    hypotheses' plans and the search's is executed (`prior_only`: no search)."""

    def __init__(self, cfg: MPCConfig, action_dim: int, frame_skip: int, seed: int = 0):
        if cfg.horizon is None:
            raise ValueError("MPCConfig.horizon must be set (plan-eval takes it from the evaluation setting)")
        self.cfg, self.action_dim, self.frame_skip = cfg, action_dim, frame_skip
        self.planner = cfg.build_planner()
        self.generator = torch.Generator().manual_seed(seed)
        self.plan_times: list[float] = []

    @property
    def planned_width(self) -> int:
        """Numbers per planned step: one action, or a whole block."""
        return self.action_dim * (1 if self.cfg.repeat_actions else self.frame_skip)

    def reset(self, imagination: Imagination, prior: PolicyPrior | None = None) -> None:
        """Start an episode toward the goal the imagination holds (with a policy's proposals, if given)."""
        self.imagination, self.prior = imagination, prior
        self.prior_kept = 0  # replannings where the prior's own plan scored best
        self.mean = torch.zeros(1, self.cfg.horizon, self.planned_width)
        self.queue: list[np.ndarray] = []
        self.recent: list[np.ndarray] = []  # env actions since the last block boundary
        self.steps = 0
        self.last_plan: torch.Tensor | None = None

    def act(self, obs: dict, info: dict) -> np.ndarray:
        """The next env action [A]; the imagination sees every block boundary's observation, and
        the planner runs when the executed blocks run out."""
        began = time.perf_counter()
        if self.steps % self.frame_skip == 0:
            self.imagination.observe(obs, info, np.concatenate(self.recent) if self.recent else None)
            self.recent = []
        if self.prior is not None:
            self.prior.observe(obs)
        if not self.queue:
            cost = lambda a: self.imagination.cost(self._hold(a))  # noqa: E731
            result = self.planner.plan(cost, self.mean, self.generator) if self.prior is None else self._plan_with_prior(obs, cost)
            self.plan_times.append(time.perf_counter() - began)
            self.last_plan = self._hold(result.actions)[0]  # [H, skip * A]
            self.queue = list(self.last_plan[: self.cfg.execute].reshape(-1, self.action_dim).numpy())
            shifted = result.actions[:, self.cfg.execute:]  # warm start: the rest of the plan, then zeros
            self.mean = torch.cat([shifted, torch.zeros(1, self.cfg.execute, self.planned_width)], 1)
        action = self.queue.pop(0)
        self.recent.append(action)
        self.steps += 1
        return action

    def _plan_with_prior(self, obs: dict, cost) -> PlanResult:
        """The cheapest of the plans each policy hypothesis begins (the warm start after it) and,
        unless `prior_only`, of the planner's search seeded by the most likely one."""
        hypotheses, covered = self.prior.blocks(obs, self.frame_skip, self.cfg.horizon, self.cfg.repeat_actions)
        proposals = self.mean[:, None].repeat(1, len(hypotheses), 1, 1)  # [1, M, H, planned]
        proposals[0, :, :covered] = hypotheses
        scores = cost(proposals)[0]  # [M]
        best = int(scores.argmin())
        result = PlanResult(proposals[:, best], scores[best: best + 1])
        if not self.cfg.prior_only:
            searched = self.planner.plan(cost, proposals[:, 0], self.generator)
            if searched.cost[0] < result.cost[0]:
                return searched
        self.prior_kept += 1
        return result

    def _hold(self, planned: torch.Tensor) -> torch.Tensor:
        """[..., H, planned_width] -> action blocks [..., H, skip * A] (each action held for its block)."""
        if not self.cfg.repeat_actions:
            return planned
        return planned[..., None, :].expand(*planned.shape[:-1], self.frame_skip, self.action_dim).flatten(-2)
