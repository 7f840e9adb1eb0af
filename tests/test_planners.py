"""Planners on a toy cost with a known optimum, and the MPC loop's bookkeeping."""

import pytest
import torch

from agents import PLANNERS
from agents.mpc import MPC, MPCConfig
from agents.planner import elites, gaussian_candidates, horizon_cost, latent_step_cost

TARGET = torch.tensor([[0.3, -0.5], [0.8, 0.1], [-0.2, 0.6]])  # [H, A], inside [-1, 1]


def quadratic(actions: torch.Tensor) -> torch.Tensor:
    """Cost [B, S] of actions [B, S, H, A]: squared distance to TARGET (batch row 1 wants -TARGET)."""
    target = torch.stack([TARGET, -TARGET])[:, None]  # [B=2, 1, H, A]
    return ((actions - target) ** 2).sum((-2, -1))


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_planner_finds_known_optimum(name):
    cls, cfg_cls = PLANNERS[name]
    cfg = cfg_cls(iterations=30) if name != "grad" else cfg_cls(iterations=100)
    result = cls(cfg).plan(quadratic, torch.zeros(2, 3, 2), torch.Generator().manual_seed(0))
    assert result.actions.shape == (2, 3, 2) and result.cost.shape == (2,)
    assert torch.allclose(result.actions[0], TARGET, atol=0.05), result.actions[0]
    assert torch.allclose(result.actions[1], -TARGET, atol=0.05), result.actions[1]
    assert float(result.cost.max()) < 0.01


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_planner_respects_action_bounds(name):
    """An optimum outside [-1, 1] is met at the boundary, never beyond it."""
    cls, cfg_cls = PLANNERS[name]
    result = cls(cfg_cls()).plan(lambda a: ((a - 3.0) ** 2).sum((-2, -1)), torch.zeros(1, 2, 2), torch.Generator().manual_seed(0))
    assert result.actions.abs().max() <= 1.0 + 1e-6
    assert result.actions.min() > 0.9


def test_candidates_keep_the_mean_and_elites_are_cheapest():
    mean = torch.full((2, 3, 2), 0.5)
    candidates = gaussian_candidates(mean, torch.ones_like(mean), 50, torch.Generator().manual_seed(0))
    assert candidates.shape == (2, 50, 3, 2) and torch.equal(candidates[:, 0], mean)
    assert candidates.abs().max() <= 1.0
    cost = quadratic(candidates)
    best, best_cost = elites(candidates, cost, 5)
    assert torch.equal(best_cost, cost.sort(1).values[:, :5])
    assert torch.allclose(quadratic(best), best_cost)


def test_latent_cost_all_steps_and_final():
    goal = torch.zeros(1, 1, 2)
    predicted = torch.tensor([1.0, 2.0, 3.0])[None, None, :, None, None].expand(1, 1, 3, 1, 2)  # [B, S, H, N, D]
    assert horizon_cost(latent_step_cost(predicted, goal)).item() == pytest.approx((1 + 4 + 9) / 3)
    assert horizon_cost(latent_step_cost(predicted, goal, "l1")).item() == pytest.approx(2.0)
    assert horizon_cost(latent_step_cost(predicted, goal), final_weight=2.0).item() == pytest.approx(14 / 3 + 18)


class PointImagination:
    """A 1-D integrator as the model: cost is the distance to 1.0 after each block."""

    def __init__(self):
        self.position, self.observed = 0.0, []

    def observe(self, obs, info, executed):
        self.position = info["position"]
        self.observed.append(None if executed is None else executed.copy())

    def cost(self, blocks):
        steps = blocks.reshape(*blocks.shape[:3], -1).sum(-1) * 0.1  # [1, S, H]
        return ((self.position + steps.cumsum(-1) - 1.0) ** 2).mean(-1)


def test_mpc_reaches_the_goal_and_feeds_back_executed_blocks():
    mpc = MPC(MPCConfig(horizon=3, execute=1), action_dim=1, frame_skip=2)
    imagination = PointImagination()
    mpc.reset(imagination)
    position = 0.0
    for _ in range(20):
        action = mpc.act({}, {"position": position})
        assert action.shape == (1,) and abs(action[0]) <= 1.0
        position += 0.1 * float(action[0])
    assert abs(position - 1.0) < 0.1
    assert imagination.observed[0] is None and imagination.observed[1].shape == (2,)  # one block = skip actions
    assert len(mpc.plan_times) == 10  # one plan per block
