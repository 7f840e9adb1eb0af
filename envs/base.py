"""The task interface every env of this project implements (`TaskEnv`), the goal-state machinery of
tasks whose simulator state can be set (`GoalStateTaskEnv`: episodes, goal images, success), and the
MuJoCo pixel tasks built on it (`MujocoTaskEnv`): model loading, cheap rendering, state.

Every task is a goal-conditioned `gymnasium.Env` whose observation is
`{"pixels": uint8[H, W, 3], "proprio": float32[P]}` and whose actions lie in [-1, 1]^A;
`info["is_success"]` applies the task's own criterion. A settable task's goal is a full simulator
state (as returned by `get_state`). The true state is exposed for experts, probes and evaluation
only: a world model never trains on it.
"""

from __future__ import annotations

import atexit
import importlib
import weakref
from importlib import resources
from typing import Callable, ClassVar

# isort: off
import envs.gl  # noqa: F401  (must precede the mujoco import: it picks the GL backend)
# isort: on
import gymnasium as gym
import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from envs.symmetry import SquareSymmetry
from infra.errors import UserError

MAX_IMAGE_SIZE = 512


def check_image_size(image_size) -> None:
    """A one-line error unless the render size is an integer from 8 to MAX_IMAGE_SIZE."""
    if not isinstance(image_size, int) or not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"image size must be an integer from 8 to {MAX_IMAGE_SIZE}, got {image_size!r}")


_RENDERING_ENVS: "weakref.WeakSet[MujocoTaskEnv]" = weakref.WeakSet()


def _close_rendering_envs() -> None:
    """Free GL contexts before the GL backend's own exit hook (EGL errors at exit otherwise)."""
    for env in list(_RENDERING_ENVS):
        env.close()


def new_renderer(env, model: mujoco.MjModel, image_size: int) -> mujoco.Renderer:
    """A square renderer for `env`, whose `close()` frees it before the GL backend exits."""
    if not _RENDERING_ENVS:  # registered after the backend's hook, so it runs before it
        atexit.register(_close_rendering_envs)
    _RENDERING_ENVS.add(env)
    return mujoco.Renderer(model, image_size, image_size)


def orthographic_depth(depth: np.ndarray, model: mujoco.MjModel) -> np.ndarray:
    """An orthographic camera's true depth [H, W] from what `mujoco.Renderer` returns for it: the
    renderer undoes a perspective projection (reversed z), but an orthographic depth buffer holds
    depth linearly, (far - depth) / (far - near). Redo the buffer value, then map it linearly."""
    extent = model.stat.extent
    near, far = np.float32(model.vis.map.znear * extent), np.float32(model.vis.map.zfar * extent)
    c = np.float32(-0.5) * (-(far + near) / (far - near)) - np.float32(0.5)  # the renderer's coefficients
    d = np.float32(-0.5) * (-(np.float32(2) * far * near) / (far - near))
    buffer = d / depth.astype(np.float64) - c
    return far - buffer * (far - near)


def read_state(data: mujoco.MjData) -> np.ndarray:
    """A MuJoCo simulation's full state: qpos then qvel, float64."""
    return np.concatenate([data.qpos, data.qvel])


def write_state(env, data: mujoco.MjData, state: np.ndarray) -> None:
    """Set `env.model`'s simulation `data` to a full state (qpos then qvel; controls zeroed) and
    recompute what derives from it; a wrong shape is a one-line error."""
    state = np.asarray(state, dtype=np.float64)
    if state.shape != (env.state_dim,):
        raise UserError(f"{type(env).__name__} state must have shape ({env.state_dim},), got {state.shape}")
    data.qpos[:], data.qvel[:] = state[: env.model.nq], state[env.model.nq:]
    data.ctrl[:] = 0.0
    mujoco.mj_forward(env.model, data)


def import_package(module: str, requirement: str):
    """Import a suite's package, or a one-line error naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this task needs the {requirement.split('=')[0]} package: pip install {requirement}") from None


def steer(position: np.ndarray, target: np.ndarray, gain: float, max_speed: float) -> np.ndarray:
    """Normalised velocity action toward `target`: proportional, capped in norm (keeps direction)."""
    velocity = gain * (np.asarray(target) - position)
    speed = np.linalg.norm(velocity)
    return velocity / max(speed / max_speed, 1.0) / max_speed


PairRule = Callable[[np.ndarray, np.ndarray], bool]  # (start state, goal state) -> whether the pair qualifies


class TaskEnv(gym.Env):
    """What every task offers, whichever simulator runs it: `reset(seed=...)`, `step`,
    `render_goal()`, `close()`, and the class attributes below, from which commands decide what a
    task can be used for (never from its name)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    default_max_steps: ClassVar[int] = 200
    render_revision: ClassVar[int] = 0  # raised whenever the task's frames are drawn differently (see `envs.stale_frames`)
    square_symmetry: ClassVar[SquareSymmetry | None] = None  # set where the square's quarter turns and mirror images leave the task unchanged (envs/symmetry.py)
    settable_state: ClassVar[bool] = False
    """The simulator state can be read and set (`get_state`, `set_state`, `render_state`,
    `goal_distance`, `reset(options={"state": ..., "goal": ...})`): what start/goal pairs, planning
    with a world model, state probes and state-based (SB3) experts need."""
    imitation_recipe: ClassVar[dict[str, dict]] = {}
    """Per policy name (`jepa imitate --policy NAME`), the settings that measured best for this
    task, which imitation uses where no flag sets them (the fields a policy's config leaves to its
    task, `PolicyConfig.TASK_FIELDS`)."""
    pair_rules: ClassVar[dict[str, PairRule]] = {}
    """Named rules a start/goal pair of an evaluation setting may have to meet (a setting names one,
    `experiments/protocol.py`)."""
    planning_recipe: ClassVar[dict] = {}
    """What `jepa quickstart` plans this task with, as measured best (BENCHMARKS.md, Planning):
    "world_model" (`WorldModelConfig` fields: moments, proprio), "cost" and "goal_proprio"
    (plan-eval's), and "prior" (the number of expert demonstrations a moments policy learns from,
    whose chunks then guide the planner); {}: the learned latent alone."""
    image_size: int
    frame_skip: int
    pixels: bool
    state_dim: int

    def pair_kind(self, start: np.ndarray, goal: np.ndarray) -> str | None:
        """Which kind of start/goal pair this is, for results split by what a pair asks (None: one kind)."""
        return None

    def render_goal(self) -> np.ndarray:
        """The goal image of the current episode."""
        raise NotImplementedError


class GoalStateTaskEnv(TaskEnv):
    """A task whose full simulator state can be read and set and whose goal is a full state
    (`settable_state`), whatever simulator runs it: subclasses give the state (`get_state`,
    `set_state`, `random_state`, `proprio_of`, each on the episode's simulation or a `scratch` one),
    one env step (`advance`), a frame (`draw`) and the goal criterion (`goal_error` against
    `tolerance`); episodes, steps, goal images, success and the ceiling's rollouts are shared."""

    settable_state = True
    tolerance: np.ndarray = np.zeros(1)
    success_criterion: str = ""
    probe_names: tuple = ()  # variables a linear probe reads from embeddings
    position_names: tuple = ()  # the subset that locates the agent or the object
    goal_state: np.ndarray

    def get_state(self) -> np.ndarray:
        """The full simulator state [S], float64."""
        raise NotImplementedError

    def set_state(self, state: np.ndarray) -> None:
        """Set the full simulator state (a one-line error for a wrong shape)."""
        raise NotImplementedError

    def render_state(self, state: np.ndarray | None = None) -> np.ndarray:
        """Pixels of the current state, or of any given state (drawn from the scratch simulation,
        the episode left as it is); black frames when the env was made with `pixels=False`."""
        if not self.pixels:
            return np.zeros((self.image_size, self.image_size, 3), np.uint8)
        if state is None:
            return self.draw()
        self.set_state(state, self.scratch)
        return self.draw(self.scratch)

    def draw(self, sim=None) -> np.ndarray:
        """The observation camera's frame [H, W, 3] uint8 of `sim` (None: the episode's simulation)."""
        raise NotImplementedError

    def proprio_of(self, state: np.ndarray) -> np.ndarray:
        """The proprio observation of any state (without disturbing the episode)."""
        raise NotImplementedError

    def random_state(self, rng: np.random.Generator) -> np.ndarray:
        """A random valid state at rest (starts and random goals)."""
        raise NotImplementedError

    def goal_error(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Task errors [..., K] of states [..., S] against one goal [S], each compared with its tolerance."""
        raise NotImplementedError

    def probe_variables(self, states: np.ndarray) -> np.ndarray:
        """Probe targets [N, K] (in `probe_names` order) from true states [N, S]."""
        raise NotImplementedError

    def advance(self, action: np.ndarray, sim=None) -> None:
        """One env step of a clipped action [A] on `sim`: the episode's simulation (None) or the
        scratch one `get_state`, `set_state` and `rollout` also take."""
        raise NotImplementedError

    def rollout(self, actions: np.ndarray) -> np.ndarray:
        """States [S, T, state] after each of T env steps of S action sequences [S, T, A], each
        from the current state, on the scratch simulation (the episode is left as it is): the
        planner's ceiling."""
        start, states = self.get_state(), np.zeros((*actions.shape[:2], self.state_dim))
        for i, sequence in enumerate(np.clip(actions, -1.0, 1.0)):
            self.set_state(start, self.scratch)
            for t, action in enumerate(sequence):
                self.advance(action, self.scratch)
                states[i, t] = self.get_state(self.scratch)
        return states

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).clip(-1.0, 1.0)
        if action.shape != self.action_space.shape:
            raise UserError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        self.advance(action)
        info = self._info()
        return self._observation(), -info["goal_distance"], False, False, info

    def is_success(self, state: np.ndarray | None = None, goal: np.ndarray | None = None) -> bool:
        """The task's own success criterion for `state` (default: now) against `goal`."""
        return self.goal_distance(state, goal) <= 1.0

    def goal_distance(self, state: np.ndarray | None = None, goal: np.ndarray | None = None) -> float:
        """Errors divided by tolerances, max over terms: <= 1 means success."""
        return float(self.goal_distances(self.get_state() if state is None else np.asarray(state), goal))

    def goal_distances(self, states: np.ndarray, goal: np.ndarray | None = None) -> np.ndarray:
        """`goal_distance` of many states [..., S] at once -> [...]."""
        goal = self.goal_state if goal is None else goal
        return (self.goal_error(states, goal) / self.tolerance).max(-1)

    def render(self) -> np.ndarray:
        return self.render_state()

    def render_goal(self) -> np.ndarray:
        """The goal image: the goal state rendered from the observation camera."""
        return self.render_state(self.goal_state)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        start = options.get("state")
        self.set_state(self.random_state(self.np_random) if start is None else start)
        goal = options.get("goal")
        self.goal_state = self.random_state(self.np_random) if goal is None else np.asarray(goal, np.float64)
        if self.goal_state.shape != (self.state_dim,):
            raise UserError(f"goal must be a full state of shape ({self.state_dim},), got {self.goal_state.shape}")
        return self._observation(), self._info()

    def _observation(self) -> dict:
        return {"pixels": self.render_state(), "proprio": self.proprio_of(self.get_state())}

    def _info(self) -> dict:
        state = self.get_state()
        distance = self.goal_distance(state)
        return {"is_success": distance <= 1.0, "state": state, "goal_distance": distance}


class MujocoTaskEnv(GoalStateTaskEnv):
    """Base class of this project's MuJoCo tasks: subclasses give the asset, the proprio, the goal
    criterion and sampling."""

    asset: str = ""
    camera: str = "top"
    default_frame_skip: int = 5

    def __init__(self, image_size: int = 64, frame_skip: int | None = None, render_mode: str | None = "rgb_array",
                 pixels: bool = True):
        check_image_size(image_size)
        frame_skip = self.default_frame_skip if frame_skip is None else frame_skip
        if not isinstance(frame_skip, int) or frame_skip < 1:
            raise UserError(f"frame skip must be a positive integer, got {frame_skip!r}")
        self.image_size, self.frame_skip, self.render_mode = image_size, frame_skip, render_mode
        self.pixels = pixels  # False: black frames, for state-only experts and SB3 training
        self.model = self.build_model()
        self.model.vis.quality.shadowsize = 0  # shadows and multisampling off: rendering 10x cheaper
        self.model.vis.quality.offsamples = 0
        self.data = mujoco.MjData(self.model)
        self.scratch = mujoco.MjData(self.model)  # goal rendering and expert look-ahead
        self._renderer: mujoco.Renderer | None = None
        self._depth_renderer: mujoco.Renderer | None = None
        n_act = self.model.nu
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        proprio_dim = self.proprio(self.data).shape[0]
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (proprio_dim,), np.float32),
        })
        self.goal_state = self.get_state()

    # ---- task-specific hooks -------------------------------------------------------------
    def build_model(self) -> mujoco.MjModel:
        """The task's MuJoCo model (default: the MJCF asset `asset` of this package)."""
        return mujoco.MjModel.from_xml_string(resources.files("envs").joinpath("assets", self.asset).read_text())

    def proprio(self, data: mujoco.MjData) -> np.ndarray:
        """Proprioceptive reading of the agent itself (never of the objects it acts on)."""
        raise NotImplementedError

    def controls(self, action: np.ndarray) -> np.ndarray:
        """Actuator controls [..., nu] of actions [..., A] (default: scaled velocity targets)."""
        return action * self.model.actuator_ctrlrange[:, 1]

    # ---- state -------------------------------------------------------------------------
    @property
    def state_dim(self) -> int:
        return self.model.nq + self.model.nv

    def get_state(self, data: mujoco.MjData | None = None) -> np.ndarray:
        return read_state(self.data if data is None else data)

    def set_state(self, state: np.ndarray, data: mujoco.MjData | None = None) -> None:
        write_state(self, self.data if data is None else data, state)

    def sample_qpos(self, rng: np.random.Generator) -> np.ndarray:
        """A random valid configuration (used for starts and random goals)."""
        raise NotImplementedError

    def random_state(self, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([self.sample_qpos(rng), np.zeros(self.model.nv)])

    def rollout(self, actions: np.ndarray) -> np.ndarray:
        """`GoalStateTaskEnv.rollout` by `mujoco.rollout`, from the full physics state (warm start included)."""
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        initial = np.zeros(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, initial, spec)
        control = np.repeat(self.controls(actions), self.frame_skip, axis=1)  # [S, T*skip, nu] physics steps
        states, _ = mj_rollout.rollout(self.model, self.scratch, initial, control, initial_warmstart=self.data.qacc_warmstart)
        ends = states[:, self.frame_skip - 1:: self.frame_skip]  # [S, T, nstate]; [0] is the time
        return ends[..., 1: 1 + self.model.nq + self.model.nv]

    # ---- dynamics ----------------------------------------------------------------------
    def advance(self, action: np.ndarray, data: mujoco.MjData | None = None) -> None:
        data = self.data if data is None else data
        data.ctrl[:] = self.controls(action)
        mujoco.mj_step(self.model, data, nstep=self.frame_skip)

    def draw(self, data: mujoco.MjData | None = None) -> np.ndarray:
        if self._renderer is None:
            self._renderer = new_renderer(self, self.model, self.image_size)
        self._renderer.update_scene(self.data if data is None else data, camera=self.camera)
        return self._renderer.render()

    def depth_image(self, data: mujoco.MjData | None = None) -> np.ndarray:
        """The observation camera's depth [H, W] float32 of `data` (None: the episode's simulation),
        in metres along its optical axis (for orthographic cameras too); where nothing is hit, the far plane."""
        if self._depth_renderer is None:
            self._depth_renderer = new_renderer(self, self.model, self.image_size)
            self._depth_renderer.enable_depth_rendering()
        self._depth_renderer.update_scene(self.data if data is None else data, camera=self.camera)
        depth = self._depth_renderer.render()
        return (orthographic_depth(depth, self.model) if self.depth_camera()["orthographic"] else depth).astype(np.float32)

    def depth_camera(self) -> dict:
        """The observation camera's intrinsics, as `worldmodel.point_cloud.unproject` reads them."""
        camera = self.model.camera(self.camera).id
        fovy = float(self.model.cam_fovy[camera])
        orthographic = bool(self.model.cam_orthographic[camera])  # fovy: the view's height in metres, else its angle in degrees
        focal = self.image_size / fovy if orthographic else 0.5 * self.image_size / np.tan(np.radians(fovy) / 2)
        return {"orthographic": orthographic, "focal": float(focal), "centre": (self.image_size - 1) / 2,
                "far": float(self.model.vis.map.zfar * self.model.stat.extent)}

    def proprio_of(self, state: np.ndarray) -> np.ndarray:
        """The proprio observation of any state (without disturbing the episode)."""
        self.set_state(state, self.scratch)
        return self.proprio(self.scratch).astype(np.float32)

    def close(self):
        for renderer in (self._renderer, self._depth_renderer):
            if renderer is not None:
                renderer.close()
        self._renderer = self._depth_renderer = None

    def _observation(self) -> dict:
        return {"pixels": self.render_state(), "proprio": self.proprio(self.data).astype(np.float32)}
