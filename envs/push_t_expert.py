"""Scripted PushT expert: choose a push by look-ahead on the true simulator, then execute it.

At each decision it tries short straight pushes at points around the T's outline (pusher placed
just outside the contact point, pushing along the inward normal, at two speeds) on a scratch
copy of the simulator, and picks the one that leaves the block closest to the goal pose. The
pusher then walks around the block to the push's start point and executes it. Privileged state
only: this is a demonstrator, never an input to a world model.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.base import steer
from envs.push_t import ARENA, PUSHER_RADIUS, T_RADIUS, PushTEnv, distance_to_t, wrap

# contact points on the T outline in the block frame, with outward normals
_BAR_TOP = [([x, 0.0325], [0, 1]) for x in (-0.04, -0.02, 0.0, 0.02, 0.04)]
_BAR_BOTTOM = [([x, 0.0075], [0, -1]) for x in (-0.042, -0.03, 0.03, 0.042)]
_BAR_ENDS = [([0.05, 0.02], [1, 0]), ([-0.05, 0.02], [-1, 0])]
_STEM_SIDES = [([sx * 0.0125, y], [sx, 0]) for sx in (-1, 1) for y in (-0.06, -0.04, -0.02)]
_STEM_END = [([0.0, -0.0675], [0, -1])]
CONTACTS = np.array([p for p, _ in _BAR_TOP + _BAR_BOTTOM + _BAR_ENDS + _STEM_SIDES + _STEM_END])
NORMALS = np.array([n for _, n in _BAR_TOP + _BAR_BOTTOM + _BAR_ENDS + _STEM_SIDES + _STEM_END], float)

KEYPOINTS = np.array([[-0.05, 0.02], [0.05, 0.02], [0.0, -0.0675], [0.0, 0.0]])
STANDOFF = PUSHER_RADIUS + 0.006  # pusher centre's distance from the contact point before a push
SAFE_RADIUS = T_RADIUS + PUSHER_RADIUS + 0.015  # circle the pusher walks around the block on


def _keypoints(pose: np.ndarray) -> np.ndarray:
    """World positions [4, 2] of the T's bar ends, stem end and origin at pose (x, y, angle)."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    return KEYPOINTS @ np.array([[c, s], [-s, c]]) + pose[:2]


class PushTExpert:
    """Look-ahead push selection + collision-free approach; see the module docstring."""

    def __init__(self, env: PushTEnv, push_steps: int = 6, speeds: tuple = (1.0, 0.35, 0.1), gain: float = 12.0):
        self.env, self.push_steps, self.speeds, self.gain = env, push_steps, speeds, gain
        self.reset()

    def reset(self) -> None:
        self.plan = None  # (start point [2], push direction [2], speed, steps left)
        self.waypoints: list = []

    def _cost(self, state: np.ndarray) -> float:
        """Mean distance of the T's keypoints to where the goal pose puts them (couples angle and position)."""
        return float(np.linalg.norm(_keypoints(state[:3]) - _keypoints(self.env.goal_state[:3]), axis=-1).mean())

    def _choose_push(self):
        """Simulate every candidate push from the current block pose; return the best one."""
        env, state = self.env, self.env.get_state()
        pose = state[:3]
        c, s = np.cos(pose[2]), np.sin(pose[2])
        rot = np.array([[c, -s], [s, c]])
        points, normals = CONTACTS @ rot.T + pose[:2], NORMALS @ rot.T
        starts = points + normals * STANDOFF
        best, best_cost = None, self._cost(state)
        for start, normal in zip(starts, normals):
            if np.any(np.abs(start) > ARENA - PUSHER_RADIUS - 0.012) or distance_to_t(start, pose) < PUSHER_RADIUS + 0.002:
                continue
            for speed in self.speeds:
                trial = state.copy()
                trial[3:5], trial[5:] = start, 0.0
                env.set_state(trial, env.scratch)
                env.scratch.ctrl[:] = -normal * speed * env.model.actuator_ctrlrange[:, 1]
                mujoco.mj_step(env.model, env.scratch, nstep=env.frame_skip * self.push_steps)
                cost = self._cost(env.get_state(env.scratch))
                if cost < best_cost - 1e-4:
                    best, best_cost = (start, -normal, speed, self.push_steps), cost
        return best

    def _path(self, pusher: np.ndarray, start: np.ndarray, normal: np.ndarray, pose: np.ndarray) -> list:
        """Waypoints from the pusher to a push's start that stay clear of the block: straight if
        the segment is clear, else out to a circle around the block, along it, and in along the
        contact normal (a ray that by construction of CONTACTS touches nothing)."""
        segment = pusher + np.linspace(0, 1, 16)[:, None] * (start - pusher)
        if np.all(distance_to_t(segment[1:], pose) > PUSHER_RADIUS + 0.003):
            return [start]
        centre = pose[:2]
        # point on the contact's outward ray at SAFE_RADIUS from the centre
        rel = start - centre
        b, c = rel @ normal, rel @ rel - SAFE_RADIUS**2
        entry = start + normal * (-b + np.sqrt(max(b * b - c, 0.0)))
        here = np.arctan2(*(pusher - centre)[::-1])
        there = np.arctan2(*(entry - centre)[::-1])
        turn = wrap(there - here)
        angles = here + turn * np.linspace(0, 1, max(int(abs(turn) / 0.4), 1) + 1)
        circle = centre + SAFE_RADIUS * np.stack([np.cos(angles), np.sin(angles)], -1)
        limit = ARENA - PUSHER_RADIUS - 0.005
        return [np.clip(p, -limit, limit) for p in circle] + [entry, start]

    def __call__(self) -> np.ndarray:
        env = self.env
        pusher, scale = env.data.qpos[3:5], env.model.actuator_ctrlrange[0, 1]
        if self.plan is None:
            if env.is_success():  # done: hold still rather than disturb the block
                return np.zeros(2)
            self.plan = self._choose_push()
            if self.plan is None:
                return np.zeros(2)
            self.waypoints = self._path(pusher, self.plan[0], -self.plan[1], env.data.qpos[:3])
        while self.waypoints:  # approach, waypoint by waypoint
            close = 0.004 if len(self.waypoints) == 1 else 0.012
            if np.linalg.norm(pusher - self.waypoints[0]) > close:
                return steer(pusher, self.waypoints[0], self.gain, scale)
            self.waypoints.pop(0)
        start, direction, speed, left = self.plan
        self.plan = None if left <= 1 else (start, direction, speed, left - 1)
        return direction * speed
