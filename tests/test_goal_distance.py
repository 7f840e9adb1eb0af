"""The learned goal distance (HILP): goal sampling, and the TD fit recovering path lengths on a chain."""

import numpy as np
import torch

from experiments.distance_commands import transition_goals
from worldmodel.goal_distance import GoalDistance, GoalDistanceConfig


def test_trajectory_goals_lie_whole_model_steps_ahead_in_the_episode():
    cfg = GoalDistanceConfig(trajectory_goals=1.0, discount=0.8)
    first = np.array([0, 3, 10, 96, 100])
    ends = np.array([100, 100, 100, 100, 200])
    goals, reached = transition_goals(ends, first, 2, cfg, np.arange(200), np.random.default_rng(0))
    assert np.all((goals - first) % 2 == 0) and np.all(goals > first) and np.all(goals < ends)
    np.testing.assert_array_equal(reached, goals == first + 2)
    random_goals, _ = transition_goals(ends, first, 2, GoalDistanceConfig(trajectory_goals=0.0), np.array([7]), np.random.default_rng(0))
    assert np.all(random_goals == 7)


def test_td_fit_orders_states_by_steps_along_a_chain():
    """Random walks on a chain of 12 states with random 8-d latents: after a short fit the learned
    distance grows with the number of steps between states, including pairs no episode joined."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    states, latents = 12, torch.randn(12, 1, 8)
    walks = [np.clip(np.cumsum(rng.choice([-1, 1], 30)) + rng.integers(0, states), 0, states - 1) for _ in range(40)]
    path = np.concatenate(walks)
    ends = np.repeat(np.arange(1, 41) * 30, 30)
    first = np.concatenate([np.arange(e * 30, e * 30 + 29) for e in range(40)])
    cfg = GoalDistanceConfig(width=64, discount=0.9, target_ema=0.05)
    model = GoalDistance(cfg, 8)
    optimizer = torch.optim.Adam(model.phi.parameters(), lr=3e-3)
    for step in range(600):
        pick = rng.integers(0, len(first), 256)
        goals, reached = transition_goals(ends[first[pick]], first[pick], 1, cfg, np.arange(len(path)), rng)
        batch = {"z": latents[path[first[pick]]], "z_next": latents[path[first[pick] + 1]], "goal": latents[path[goals]],
                 "reached": torch.from_numpy(reached | (path[goals] == path[first[pick] + 1]))}
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_step(step + 1, 600)
    with torch.no_grad():
        steps = model.steps_from_value(-model.gap(latents[:, None], latents[None]))  # [12, 12]
    apart = np.abs(np.arange(states)[:, None] - np.arange(states)[None])
    far, near = steps[apart >= 6].mean(), steps[(apart >= 1) & (apart <= 2)].mean()
    assert far > 2 * near, (far, near)
    assert np.corrcoef(apart.ravel(), steps.numpy().ravel())[0, 1] > 0.8
