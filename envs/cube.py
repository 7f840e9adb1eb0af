"""Cube: pick a cube up and place it at a goal location (a small cousin of OGBench cube-single,
Park et al. 2025, and the V-JEPA 2-AC pick-and-place tasks, Assran et al. 2025), in MuJoCo.

qpos = (hand x, y, z, finger left, finger right, cube position [3], cube quaternion [4]).
Actions: hand velocity targets (x, y, z) and the grip (-1 open, +1 closed).
Success: the cube's centre within 0.03 m of its goal position (the cube is 0.05 m wide).
"""

from __future__ import annotations

import numpy as np

from envs.base import MujocoTaskEnv, steer

HALF = 0.025  # cube half-size
OPEN = 0.045  # finger joint fully open
GRASP_HEIGHT = 0.05  # hand above the cube's centre when the fingers hold it
CARRY_Z = 0.16  # hand height for moving around
REACH = 0.14  # cube positions are sampled in [-REACH, REACH]^2


class CubeEnv(MujocoTaskEnv):
    """Gantry gripper and a cube; goal: the cube's position."""

    asset = "cube.xml"
    camera = "front"
    default_frame_skip = 20  # 0.1 s per step
    default_max_steps = 100
    tolerance = np.array([0.03])
    success_criterion = "cube centre within 0.03 m of its goal position (cube 0.05 m wide)"
    imitation_recipe = {"moments": {"colour_moments": 6, "history": 1}}  # the measured Cube recipe (BENCHMARKS.md, Imitation)

    planning_recipe = {"world_model": {"moments": 6, "proprio": True}}  # colour moments and proprio in the state (BENCHMARKS.md, Planning)
    probe_names = ("cube_x", "cube_y", "cube_z", "hand_x", "hand_y", "hand_z", "grip")
    position_names = ("cube_x", "cube_y", "cube_z")

    def probe_variables(self, states):
        return states[:, [5, 6, 7, 0, 1, 2, 3]]

    def controls(self, action):
        return np.concatenate([action[..., :3] * self.model.actuator_ctrlrange[:3, 1], OPEN * (1.0 - action[..., 3:]) / 2.0], -1)

    def proprio(self, data):
        return np.concatenate([data.qpos[:4], data.qvel[:3]])

    def sample_qpos(self, rng):
        cube = rng.uniform(-REACH, REACH, 2)
        yaw = rng.uniform(-0.25, 0.25)
        while True:  # hand anywhere above the table, not straddling the cube
            hand = np.array([*rng.uniform(-0.18, 0.18, 2), rng.uniform(0.12, 0.25)])
            if np.linalg.norm(hand[:2] - cube) > 0.06:
                break
        quat = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        return np.concatenate([hand, [OPEN, OPEN], cube, [HALF], quat])

    def goal_error(self, state, goal):
        return np.linalg.norm(state[..., 5:8] - goal[5:8], axis=-1)[..., None]

    def pair_kind(self, start, goal):
        return "cube held at the start" if start[7] > HALF + 0.01 else "needs a grasp"


class CubeExpert:
    """Reach above the cube, descend, close, lift, carry above the goal, lower, release."""

    def __init__(self, env: CubeEnv, gain: float = 10.0):
        self.env, self.gain = env, gain
        self.reset()

    def reset(self) -> None:
        self.phase, self.timer = "reach", 0

    def __call__(self) -> np.ndarray:
        env = self.env
        hand, gap, cube = env.data.qpos[:3], env.data.qpos[3], env.data.qpos[5:8]
        goal = env.goal_state[5:8]
        speed = env.model.actuator_ctrlrange[0, 1]
        above_cube = np.linalg.norm(hand[:2] - cube[:2]) < 0.008
        holding = gap < HALF + 0.006 and np.linalg.norm(hand - (cube + [0, 0, GRASP_HEIGHT])) < 0.03
        grip, target = -1.0, hand.copy()
        if self.phase in ("lift", "carry", "lower") and not holding:
            self.phase = "reach"  # dropped it: start again
        if self.phase == "reach":
            low = hand[2] < CARRY_Z - 0.03 and not above_cube
            target = np.array([*(hand[:2] if low else cube[:2]), CARRY_Z])
            if above_cube:
                self.phase = "descend"
        if self.phase == "descend":
            target = cube + [0, 0, GRASP_HEIGHT]
            if not above_cube and np.linalg.norm(hand[:2] - cube[:2]) > 0.02:
                self.phase = "reach"
            elif abs(hand[2] - target[2]) < 0.006:
                self.phase, self.timer = "grasp", 0
        if self.phase == "grasp":
            grip, self.timer = 1.0, self.timer + 1
            if self.timer >= 4:
                self.phase = "lift" if holding else "reach"
        if self.phase in ("lift", "carry", "lower"):
            grip = 1.0
            carry = max(CARRY_Z, goal[2] + GRASP_HEIGHT)
            if self.phase == "lift":
                target = np.array([*hand[:2], carry])
                if hand[2] > carry - 0.01:
                    self.phase = "carry"
            if self.phase == "carry":
                target = np.array([*goal[:2], carry])
                if np.linalg.norm(cube[:2] - goal[:2]) < 0.006:
                    self.phase = "lower"
            if self.phase == "lower":
                target = np.array([*(hand[:2] + goal[:2] - cube[:2]), goal[2] + GRASP_HEIGHT])
                if abs(cube[2] - goal[2]) < 0.005 and goal[2] < HALF + 0.01:
                    self.phase = "release"
        if self.phase == "release":
            grip, target = -1.0, np.array([*hand[:2], CARRY_Z])
            if gap < HALF + 0.01:
                target = hand.copy()  # open before rising
        return np.array([*steer(hand, target, self.gain, speed), grip])
