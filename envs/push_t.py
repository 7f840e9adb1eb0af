"""PushT: push a T-shaped block to a goal pose with a round pusher (Push-T, Chi et al. 2023,
Diffusion Policy; used by DINO-WM, PLDM and LeWM), in MuJoCo physics.

qpos = (block x, block y, block angle, pusher x, pusher y). Actions are pusher velocity targets.
Success: block position within 0.02 m and angle within 0.2 rad (11.5 degrees) of the goal pose;
the T's bar is 0.1 m wide.
"""

from __future__ import annotations

import numpy as np

from envs.base import MujocoTaskEnv
from envs.symmetry import SquareSymmetry

ARENA = 0.25
PUSHER_RADIUS = 0.015
# block frame rectangles (x_min, x_max, y_min, y_max): the bar, then the stem
T_RECTS = np.array([[-0.05, 0.05, 0.0075, 0.0325], [-0.0125, 0.0125, -0.0675, 0.0075]])
T_RADIUS = 0.075  # farthest point of the T from the block frame's origin


def wrap(angle):
    """Angle wrapped to [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def distance_to_t(points: np.ndarray, pose: np.ndarray, rects: np.ndarray = T_RECTS) -> np.ndarray:
    """Distance of world points [..., 2] to the T made of `rects` (block frame (x_min, x_max, y_min,
    y_max) rectangles) at pose (x, y, angle); 0 inside."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    local = np.asarray(points) - pose[:2]
    local = np.stack([c * local[..., 0] + s * local[..., 1], -s * local[..., 0] + c * local[..., 1]], -1)
    dx = np.maximum(np.maximum(rects[:, 0] - local[..., None, 0], local[..., None, 0] - rects[:, 1]), 0)
    dy = np.maximum(np.maximum(rects[:, 2] - local[..., None, 1], local[..., None, 1] - rects[:, 3]), 0)
    return np.hypot(dx, dy).min(-1)


class PushTEnv(MujocoTaskEnv):
    """Round pusher and T block; goal: the block's pose."""

    asset = "push_t.xml"
    default_frame_skip = 10  # 0.1 s per step
    default_max_steps = 200
    tolerance = np.array([0.02, 0.2])
    success_criterion = "block within 0.02 m and 0.2 rad of the goal pose (T bar 0.1 m wide)"
    square_symmetry = SquareSymmetry(proprio=((0, 1), (2, 3)), actions=((0, 1),))  # pusher position and velocity; velocity targets
    imitation_recipe = {"moments": {"jepa_weight": 1.0}}  # predicting the future frames' moments lifts PushT (BENCHMARKS.md, Imitation)

    planning_recipe = {"world_model": {"moments": 4, "proprio": True}}  # colour moments and proprio in the state (BENCHMARKS.md, Planning)
    probe_names = ("block_x", "block_y", "block_cos", "block_sin", "pusher_x", "pusher_y")
    position_names = ("block_x", "block_y")

    @staticmethod
    def probe_variables(states):
        return np.column_stack([states[:, :2], np.cos(states[:, 2]), np.sin(states[:, 2]), states[:, 3:5]])

    def proprio(self, data):
        return np.concatenate([data.qpos[3:5], data.qvel[3:5]])

    def sample_qpos(self, rng):
        block = np.array([*rng.uniform(-0.12, 0.12, 2), rng.uniform(-np.pi, np.pi)])
        while True:  # pusher anywhere in the arena, clear of the block
            pusher = rng.uniform(-ARENA + 0.03, ARENA - 0.03, 2)
            if distance_to_t(pusher, block) > PUSHER_RADIUS + 0.01:
                return np.concatenate([block, pusher])

    def goal_error(self, state, goal):
        return np.stack([np.linalg.norm(state[..., :2] - goal[:2], axis=-1), np.abs(wrap(state[..., 2] - goal[2]))], -1)

    def pair_kind(self, start, goal):
        turned = abs(wrap(goal[2] - start[2])) > self.tolerance[1]
        return "needs a turn beyond 0.2 rad" if turned else "turn within 0.2 rad"


FIXED_GOAL = np.array([0.0, 0.0, np.pi / 4, 0.18, -0.18, 0.0, 0.0, 0.0, 0.0, 0.0])  # block centred at 45 degrees, pusher aside
FIXED_GOAL.flags.writeable = False


class PushTFixedGoalEnv(PushTEnv):
    """PushT with one goal pose for every episode (the block centred, turned 45 degrees), as in the
    Push-T imitation benchmark of Diffusion Policy; starts stay random. A turned episode aims at
    another goal pose, so the square's symmetries do not leave this task unchanged."""

    square_symmetry = None
    imitation_recipe = {}

    def reset(self, *, seed=None, options=None):
        options = dict(options or {})
        options.setdefault("goal", FIXED_GOAL.copy())
        return super().reset(seed=seed, options=options)
