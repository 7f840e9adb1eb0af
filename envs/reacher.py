"""Reacher: a planar two-link arm that must match a goal configuration shown as an image
(the DeepMind Control reacher used by DINO-WM, Zhou et al. 2024, and LeWM, here with no target
marker: the goal comes only as an image).

Actions are joint-velocity targets; success is the fingertip within 0.02 m of where it is in
the goal configuration (arm reach 0.24 m).
"""

from __future__ import annotations

import numpy as np

from envs.base import MujocoTaskEnv

LINK = 0.12
ELBOW_LIMIT = 2.5  # sampled configurations stay inside the joint range of +-2.7


def fingertip(qpos: np.ndarray) -> np.ndarray:
    """Fingertip (x, y) [..., 2] of configurations [..., 2], by forward kinematics."""
    a, b = qpos[..., 0], qpos[..., 0] + qpos[..., 1]
    return LINK * np.stack([np.cos(a) + np.cos(b), np.sin(a) + np.sin(b)], -1)


def wrap(angle):
    """Angle wrapped to [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


class ReacherEnv(MujocoTaskEnv):
    """Two-link arm; goal: bring the fingertip to where the goal configuration has it."""

    asset = "reacher.xml"
    default_frame_skip = 10  # 0.1 s per step
    default_max_steps = 50
    tolerance = np.array([0.02])
    success_criterion = "fingertip within 0.02 m of the goal configuration's fingertip (reach 0.24 m)"

    planning_recipe = {"world_model": {"moments": 4, "proprio": True}}  # colour moments and proprio in the state (BENCHMARKS.md, Planning)
    probe_names = ("fingertip_x", "fingertip_y", "shoulder_cos", "shoulder_sin", "elbow")
    position_names = ("fingertip_x", "fingertip_y")

    def probe_variables(self, states):
        return np.column_stack([fingertip(states[:, :2]), np.cos(states[:, 0]), np.sin(states[:, 0]), states[:, 1]])

    def proprio(self, data):
        q = data.qpos
        return np.array([np.cos(q[0]), np.sin(q[0]), q[1], data.qvel[0], data.qvel[1]])

    def sample_qpos(self, rng):
        return np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-ELBOW_LIMIT, ELBOW_LIMIT)])

    def goal_error(self, state, goal):
        return np.linalg.norm(fingertip(state[..., :2]) - fingertip(goal[:2]), axis=-1)[..., None]


class ReacherExpert:
    """Proportional control of both joints toward the goal configuration."""

    def __init__(self, env: ReacherEnv, gain: float = 6.0):
        self.env, self.gain = env, gain

    def reset(self) -> None:
        pass

    def __call__(self) -> np.ndarray:
        q, goal = self.env.data.qpos[:2], self.env.goal_state[:2]
        error = np.array([wrap(goal[0] - q[0]), goal[1] - q[1]])
        return np.clip(self.gain * error / self.env.model.actuator_ctrlrange[:, 1], -1.0, 1.0)
