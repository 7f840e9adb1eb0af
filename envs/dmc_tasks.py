"""DeepMind Control Suite tasks (Tassa et al. 2018; the `dm_control` package) behind this project's
task interface, named `dmc:<domain>-<task>` wherever a task is named. Today: `dmc:reacher-easy`,
the torque-driven two-link reacher that LeWM (stable-worldmodel) plans on.

The suite's own MJCF model runs on the `mujoco` bindings directly (`MujocoTaskEnv`), so full-state
get/set, goal rendering and the simulator ceiling work as for the project's own tasks; dm_control
only supplies the model. What follows the suite and what follows the planning protocol:

- Physics, actuators (two motors, gear 0.05, controls in [-1, 1]) and camera ("fixed", top down)
  are the suite's; each env step repeats the action for 2 physics steps of 0.02 s, as
  stable-worldmodel's DMC wrapper does.
- The goal is a full state (the protocol's state 25 expert steps ahead) and comes as an image. The
  target sphere is drawn transparent, as in stable-worldmodel's default rendering: a goal image
  then shows the arm where it must go, and nothing else.
- Success is the suite's own test, `finger_to_target_dist <= target radius + finger radius`
  (easy: 0.05 + 0.01 m; the suite's reward is 1 exactly there), with the target placed at the
  goal state's fingertip.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.base import import_package
from envs.reacher import ReacherEnv, fingertip, wrap

TARGET_SIZES = {"easy": 0.05, "hard": 0.015}  # dm_control.suite.reacher's _BIG_TARGET, _SMALL_TARGET
FINGER_RADIUS = 0.01
WRIST_RANGE = np.deg2rad(160.0)


def _reacher_model_xml() -> tuple[str, dict]:
    """The suite's reacher MJCF text and its include files (`mujoco.MjModel.from_xml_string` args)."""
    reacher = import_package("dm_control.suite.reacher", "dm-control==1.0.28")
    xml, assets = reacher.get_model_and_assets()
    return xml.decode(), assets


class DMCReacherEnv(ReacherEnv):
    """DeepMind Control reacher (easy target); goal: the fingertip where the goal state has it. Its
    links have the project's reacher's lengths, so the kinematics, proprio and probes are that
    task's (`envs/reacher.py`)."""

    camera = "fixed"
    default_frame_skip = 2  # action repeat of stable-worldmodel's DMC wrapper
    default_max_steps = 100
    target_size = TARGET_SIZES["easy"]
    tolerance = np.array([TARGET_SIZES["easy"] + FINGER_RADIUS])
    success_criterion = ("the suite's test: fingertip within target + finger radius (0.06 m) of the goal state's "
                         "fingertip (reach 0.24 m)")
    probe_names = ("fingertip_x", "fingertip_y", "shoulder_cos", "shoulder_sin", "wrist")

    def build_model(self):
        xml, assets = _reacher_model_xml()
        model = mujoco.MjModel.from_xml_string(xml, assets)
        target = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "target")
        model.geom_size[target, 0] = self.target_size
        model.geom_rgba[target, 3] = 0.0
        model.geom_matid[target] = -1  # its material's colour would override the geom's alpha
        return model

    def sample_qpos(self, rng):
        # dm_control's randomize_limited_and_rotational_joints: the shoulder anywhere, the wrist in its range
        return np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-WRIST_RANGE, WRIST_RANGE)])

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self.model.geom_pos[self.model.geom("target").id, :2] = fingertip(self.goal_state[:2])  # where the suite's test measures from
        return obs, info


class DMCReacherExpert:
    """PD torque control of both joints toward the goal configuration (the goal state's angles)."""

    def __init__(self, env: DMCReacherEnv, stiffness: float = 8.0, damping: float = 1.0):
        self.env, self.stiffness, self.damping = env, stiffness, damping

    def reset(self) -> None:
        pass

    def __call__(self) -> np.ndarray:
        q, v, goal = self.env.data.qpos, self.env.data.qvel, self.env.goal_state
        error = np.array([wrap(goal[0] - q[0]), goal[1] - q[1]])
        return np.clip(self.stiffness * error - self.damping * v, -1.0, 1.0)
