"""TwoRoom: point-mass navigation through a door (the Two-Room/Wall task of PLDM, Sobal et al.
2025; DINO-WM, Zhou et al. 2024; LeWM 2026), simulated in MuJoCo.

Actions are velocity targets for the point mass; success is being within 0.1 (5% of the arena
width) of the goal position.
"""

from __future__ import annotations

import numpy as np

from envs.base import MujocoTaskEnv, steer

WALL_HALF = 0.04
DOOR_Y, DOOR_HALF = 0.3, 0.22
AGENT_RADIUS = 0.09
FREE = 1.0 - WALL_HALF * 2 - AGENT_RADIUS  # |coordinate| the agent's centre can reach


class TwoRoomEnv(MujocoTaskEnv):
    """Point mass in two rooms joined by one door; goal: reach the goal position."""

    asset = "two_room.xml"
    default_frame_skip = 5  # 0.1 s per step
    default_max_steps = 100
    tolerance = np.array([0.1])
    success_criterion = "agent within 0.1 of the goal position (arena is 2 x 2)"

    probe_names = ("agent_x", "agent_y", "agent_vx", "agent_vy")
    position_names = ("agent_x", "agent_y")

    def probe_variables(self, states):
        return states[:, [0, 1, 2, 3]]

    def proprio(self, data):
        return np.concatenate([data.qpos[:2], data.qvel[:2]])

    def sample_qpos(self, rng):
        x = rng.uniform(WALL_HALF + AGENT_RADIUS + 0.02, FREE) * rng.choice([-1.0, 1.0])
        return np.array([x, rng.uniform(-FREE, FREE)])

    def goal_error(self, state, goal):
        return np.linalg.norm(state[..., :2] - goal[:2], axis=-1)[..., None]

    @staticmethod
    def room(x: float) -> int:
        """-1 for the left room, +1 for the right one."""
        return -1 if x < 0 else 1

    @staticmethod
    def in_other_rooms(start: np.ndarray, goal: np.ndarray) -> bool:
        """Start and goal states lie in different rooms: the way between them leads through the door."""
        return TwoRoomEnv.room(start[0]) != TwoRoomEnv.room(goal[0])

    pair_rules = {"cross-room": in_other_rooms}


class TwoRoomExpert:
    """Go to the door when the goal is in the other room, then straight to the goal."""

    def __init__(self, env: TwoRoomEnv, gain: float = 8.0):
        self.env, self.gain = env, gain

    def reset(self) -> None:
        pass

    def __call__(self) -> np.ndarray:
        pos, goal = self.env.data.qpos[:2], self.env.goal_state[:2]
        target = goal
        if TwoRoomEnv.room(pos[0]) != TwoRoomEnv.room(goal[0]):
            side = TwoRoomEnv.room(pos[0])
            aligned = abs(pos[1] - DOOR_Y) < DOOR_HALF - AGENT_RADIUS - 0.02
            # line up with the door first, then cross it
            target = np.array([-side * 0.3 if aligned else side * 0.3, DOOR_Y])
        return steer(pos, target, self.gain, self.env.model.actuator_ctrlrange[0, 1])
