"""OGBench's visual cube-single (Park et al. 2025; the `ogbench` package: a UR5e arm with a Robotiq
gripper, MuJoCo), the cube task DINO-WM and LeWM plan on, behind this project's task interface as
`ogbench:cube-single`.

The package's scene, controller and camera run unchanged: actions in [-1, 1]^5 are its relative
end-effector moves (x, y, z, yaw) and gripper command, turned into joint targets by its
differential IK and PD servos, 25 physics steps of 2 ms per env step; frames come from its
`front_pixels` camera with the arm drawn transparent, as in `visual-cube-single-v0`, with two
changes that make software rendering cheaper: shadows and multisampling are off, as for every
task here, and the UR5e's links, which OGBench draws at 10% opacity, are left out (122k of the
scene's 185k mesh faces; the gripper and the cube are drawn as OGBench draws them). On top of it:

- The state is MuJoCo's qpos and qvel [41]; it can be read and set, so start/goal pairs, goal images
  and the simulator ceiling work as for the project's tasks. Starts and random goals follow the
  package's data-collection reset (arm pose, cube position and yaw). The target marker is hidden: a
  goal comes as the image of the goal state.
- Success is OGBench's own test, the cube within 0.04 m of its goal position.
- `--policy expert` is OGBench's own scripted oracle (`CubeMarkovOracle`, which generated its
  datasets), aimed at the goal state's cube position and yaw.
"""

from __future__ import annotations

import contextlib

import gymnasium as gym
import mujoco
import numpy as np

from envs.base import GoalStateTaskEnv, check_image_size, import_package, new_renderer, read_state, write_state
from infra.errors import UserError

PHYSICS_STEPS = 25  # 0.05 s control step / 0.002 s physics step, the package's
CENTRE, SCALE = np.array([0.425, 0.0, 0.0]), 10.0  # OGBench's normalisation of workspace positions
VISUAL_GROUP, HIDDEN_GROUP = 2, 5  # the package's visual meshes; a geom group MuJoCo does not draw by default


class OGBenchCubeEnv(GoalStateTaskEnv):
    """OGBench visual cube-single with full-state goals; see the module docstring."""

    default_max_steps = 200  # OGBench's cube-single episode limit
    tolerance = np.array([0.04])
    success_criterion = "OGBench's test: the cube within 0.04 m of its goal position"
    probe_names = ("cube_x", "cube_y", "cube_z", "effector_x", "effector_y", "effector_z")
    position_names = ("cube_x", "cube_y", "cube_z")
    planning_recipe = {"world_model": {"moments": 6, "proprio": True}}  # as the project's cube (envs/cube.py)

    def __init__(self, image_size: int = 64, frame_skip: int | None = None, render_mode: str | None = "rgb_array", pixels: bool = True):
        if frame_skip not in (None, PHYSICS_STEPS):
            raise UserError(f"OGBench runs at its own {PHYSICS_STEPS} physics steps per env step, got --frame-skip {frame_skip}")
        check_image_size(image_size)
        self.image_size, self.frame_skip, self.render_mode, self.pixels = image_size, PHYSICS_STEPS, render_mode, pixels
        package = import_package("ogbench.manipspace.envs.cube_env", "ogbench")
        self.sim = package.CubeEnv(env_type="single", ob_type="pixels", width=image_size, height=image_size,
                                   visualize_info=False, mode="data_collection", terminate_at_goal=False)
        self.sim.reset(seed=0)  # compiles the model (and draws a frame with a renderer of its own, freed now: this env draws with its own)
        self.sim._renderer.close()
        self.sim._renderer = None
        self.model = self.sim._model
        self.model.vis.quality.shadowsize, self.model.vis.quality.offsamples = 0, 0
        links = [g for g in range(self.model.ngeom) if self.model.geom_group[g] == VISUAL_GROUP
                 and self.model.body(self.model.geom_bodyid[g]).name.startswith("ur5e/")
                 and not self.model.body(self.model.geom_bodyid[g]).name.startswith("ur5e/robotiq")]
        self.model.geom_group[links] = HIDDEN_GROUP  # the arm's faint links, not drawn
        self.data, self.scratch = self.sim._data, mujoco.MjData(self.model)  # the episode; goal images and rollouts
        self._cube = self.model.joint("object_joint_0").qposadr[0]
        self._renderer = None
        self.state_dim = self.model.nq + self.model.nv
        self.action_space = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)})
        self.goal_state = self.get_state()

    @contextlib.contextmanager
    def _on(self, data: mujoco.MjData):
        """The package's methods (controller, observation info) acting on `data` for a while."""
        episode, self.sim._data = self.sim._data, data
        try:
            yield self.sim
        finally:
            self.sim._data = episode

    # ---- state -------------------------------------------------------------------------
    def get_state(self, data: mujoco.MjData | None = None) -> np.ndarray:
        return read_state(self.data if data is None else data)

    def set_state(self, state: np.ndarray, data: mujoco.MjData | None = None) -> None:
        write_state(self, self.data if data is None else data, state)

    def cube(self, states: np.ndarray) -> np.ndarray:
        """The cube's position [..., 3] in states [..., S]."""
        return states[..., self._cube: self._cube + 3]

    def random_state(self, rng: np.random.Generator) -> np.ndarray:
        """The package's data-collection reset (arm above the table, cube on it), drawn from `rng`."""
        mujoco.mj_resetData(self.model, self.scratch)
        with self._on(self.scratch) as sim:
            sim._np_random = rng
            sim._data.qpos[sim._arm_joint_ids] = sim._home_qpos
            sim.initialize_arm()
        yaw = rng.uniform(0, 2 * np.pi)
        self.scratch.qpos[self._cube: self._cube + 7] = [*rng.uniform(*self.sim._object_sampling_bounds), 0.02,
                                                         np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        mujoco.mj_forward(self.model, self.scratch)
        return self.get_state(self.scratch)

    def draw(self, data: mujoco.MjData | None = None) -> np.ndarray:
        if self._renderer is None:
            self._renderer = new_renderer(self, self.model, self.image_size)
        self._renderer.update_scene(self.data if data is None else data, camera="front_pixels", scene_option=self.sim._scene_option)
        return self._renderer.render()

    def proprio_of(self, state: np.ndarray) -> np.ndarray:
        """Effector position (OGBench's normalisation), yaw as cos and sin, gripper opening."""
        self.set_state(state, self.scratch)
        with self._on(self.scratch) as sim:
            info = sim.compute_ob_info()
        yaw = info["proprio/effector_yaw"][0]
        return np.concatenate([(info["proprio/effector_pos"] - CENTRE) * SCALE, [np.cos(yaw), np.sin(yaw)],
                               info["proprio/gripper_opening"]]).astype(np.float32)

    def goal_error(self, state, goal):
        return np.linalg.norm(self.cube(state) - self.cube(goal), axis=-1)[..., None]

    def probe_variables(self, states):
        effector = np.zeros((len(states), 3))
        for i, state in enumerate(states):
            self.set_state(state, self.scratch)
            effector[i] = self.scratch.site_xpos[self.sim._pinch_site_id]
        return np.column_stack([self.cube(states), effector])

    # ---- dynamics ----------------------------------------------------------------------
    def advance(self, action: np.ndarray, data: mujoco.MjData | None = None) -> None:
        """One env step on `data` (default: the episode's): the package's controller, physics and contact forces."""
        data = self.data if data is None else data
        with self._on(data) as sim:
            sim.set_control(np.clip(action, -1.0, 1.0))
            mujoco.mj_step(self.model, data, nstep=PHYSICS_STEPS)
            mujoco.mj_rnePostConstraint(self.model, data)  # the gripper's contact reading uses them

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        # the package's target (hidden), where its oracle takes the cube: the goal state's cube pose
        goal, target = self.goal_state[self._cube: self._cube + 7], self.sim._cube_target_mocap_ids[0]
        self.data.mocap_pos[target], self.data.mocap_quat[target] = goal[:3], goal[3:]
        return obs, info

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class OGBenchCubeExpert:
    """OGBench's own scripted oracle for the cube, aimed at the goal state's cube pose."""

    def __init__(self, env: OGBenchCubeEnv):
        self.env = env
        oracles = import_package("ogbench.manipspace.oracles.markov.cube_markov", "ogbench")
        self.oracle = oracles.CubeMarkovOracle(env=env.sim)
        self.reset()

    def reset(self) -> None:
        sim, rng = self.env.sim, self.env.np_random
        self.oracle.reset(None, None)
        # its resting pose after the place, drawn from the episode's generator (the package draws it unseeded)
        self.oracle._final_pos = rng.uniform(*sim._arm_sampling_bounds)
        self.oracle._final_yaw = rng.uniform(-np.pi, np.pi)

    def __call__(self) -> np.ndarray:
        sim = self.env.sim
        sim._target_block = 0
        return self.oracle.select_action(None, sim.compute_ob_info())
