"""Meta-World v3 tasks (Yu et al. 2019; the `metaworld` package, MuJoCo) behind this project's task
interface (`envs.base.TaskEnv`), named `metaworld:<task>-v3` wherever a task is named (collect,
imitate, policy-eval). They draw their own starts and goals and take no simulator state
(`settable_state` is False), so they serve imitation, not planning or world-model evaluation.

- Observation: `{"pixels": 64x64 from one fixed camera, "proprio": hand position and gripper
  opening [4]}`. The camera (`WORKSPACE_VIEW`) looks at the table's workspace from the front
  right, upright, about 0.9 m wide at the objects; reach and pick-place narrow it onto the
  table's centre (`TABLE_VIEW`, about 0.5 m wide), which draws their puck and goal marker 1.7
  times as large. Meta-World's own cameras see the whole room (and its corner cameras render
  upside down): at 64x64 from `corner4` the goal marker is one or two pixels and the puck three,
  too few for a policy to find.
- Every reset draws new object and goal positions from the reset seed. The goal is shown in the
  scene as Meta-World's goal marker, drawn here as a sphere of radius 3.5 cm (the package draws a
  5 mm sliver, and even a 2 cm sphere left a policy's image features nearly blind to it). A goal
  above the table also gets a thin pole down to the table and a flat disc at its foot: one view
  cannot tell how far away a floating sphere is (sites cast no shadow), and reach and pick-place
  goals float anywhere from 5 to 30 cm up. The pole and disc are drawn at render time
  (`_goal_markers`); none of it has physics. The goal image is the episode's first frame.
- The manipulated object (the geoms of the body named "obj": the puck of push and pick-place, a
  distractor in reach; tasks whose object is built otherwise keep their colours) is drawn flat
  yellow instead of Meta-World's dark red wood, which at 64x64 leaves it a few dark pixels beside
  the red arm, easily lost by a policy. Its shape and physics are unchanged: the scripted
  policy's episodes are the same, action for action.
- `--policy expert` is the package's own scripted policy (it reads the full state observation).
- Success is Meta-World's `info["success"]`. Its episodes never end on success and success can
  be lost again, so success is counted at any step; this project's episodes are 150 steps (the
  scripted policies succeed within about 80), not Meta-World's 500.
- Rendering has shadows and multisampling turned off (several times faster).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import gymnasium as gym
import mujoco
import numpy as np

from envs.base import TaskEnv, check_image_size, import_package
from infra.errors import UserError

PREFIX = "metaworld:"
CAMERA = "corner4"  # the package camera whose pose WORKSPACE_VIEW replaces


@dataclasses.dataclass(frozen=True)
class CameraPose:
    position: tuple[float, float, float]  # world frame, metres
    target: tuple[float, float, float]  # the point at the image centre
    fovy: float  # vertical field of view, degrees

    def quaternion(self) -> np.ndarray:
        """MuJoCo camera orientation [4] (w, x, y, z): looks along -z, image up towards world +z."""
        forward = np.subtract(self.target, self.position)
        back = -forward / np.linalg.norm(forward)
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.stack([right, np.cross(back, right), back], axis=1).ravel())
        return quat


WORKSPACE_VIEW = CameraPose(position=(0.6, 0.25, 0.7), target=(-0.05, 0.7, 0.2), fovy=50.0)
# The same camera narrowed onto the table's centre. The hand, object and goal of reach and
# pick-place (12 scripted episodes each) span pixels 13-50 across and 8-58 down, against 26-48 and
# 21-50 in WORKSPACE_VIEW: the puck is drawn 1.7 times as large. Push keeps WORKSPACE_VIEW: its
# puck travels further, and with TABLE_VIEW policies did worse on push (better on the other two).
TABLE_VIEW = CameraPose(position=(0.6, 0.25, 0.7), target=(-0.005, 0.755, 0.158), fovy=30.0)
TABLE_TASKS = ("reach-v3", "pick-place-v3")
TABLE_DRAWING = {"view": TABLE_VIEW, "render_revision": 2}  # class attributes of TABLE_TASKS' env classes
GOAL_MARKER_RADIUS = 0.035
GOAL_POLE_RADIUS = 0.012
GOAL_DISC_HALF_HEIGHT = 0.002
OBJECT_RGBA = (1.0, 0.85, 0.0, 1.0)  # the manipulated object ("obj" body), flat yellow
EPISODE_STEPS = 150


def _package():
    metaworld = import_package("metaworld", "metaworld==3.1.1")
    # its scripted policies warn at every step that their gains exceed the action range (they are clipped)
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
    return metaworld


class MetaWorldTask(TaskEnv):
    """One Meta-World v3 task with this project's observation and info conventions."""

    task_name = ""  # set by `metaworld_task`
    default_max_steps = EPISODE_STEPS
    view = WORKSPACE_VIEW  # TABLE_VIEW for TABLE_TASKS (`metaworld_task`)
    # 0: Meta-World's own colours; 1: the object drawn flat yellow; 2 (TABLE_TASKS only): yellow,
    # through TABLE_VIEW
    render_revision = 1
    square_symmetry = None  # a table seen from a corner: no symmetry of the square (envs/symmetry.py)
    settable_state = False  # Meta-World draws its own starts and goals
    imitation_recipe = {"moments": {"colour_moments": 8, "modes": 1}}  # the measured Meta-World recipe (BENCHMARKS.md, Imitation)

    def __init__(self, image_size: int = 64, frame_skip: int | None = None, render_mode: str | None = "rgb_array", pixels: bool = True):
        if frame_skip not in (None, 5):
            raise UserError(f"Meta-World tasks run at their own frame skip (5), got --frame-skip {frame_skip}")
        check_image_size(image_size)
        self.image_size, self.pixels, self.frame_skip, self.render_mode = image_size, pixels, 5, render_mode
        env = _package().env_dict.ALL_V3_ENVIRONMENTS[self.task_name](
            render_mode="rgb_array" if pixels else None, camera_name=CAMERA, width=image_size, height=image_size)
        env.model.vis.quality.shadowsize, env.model.vis.quality.offsamples = 0, 0
        self.goal_site = _show_workspace(env.model, self.view)
        env._partially_observable = False  # the scripted expert reads the goal from the state observation
        del env.sawyer_observation_space  # cached with the goal hidden
        env._freeze_rand_vec, env.seeded_rand_vec, env._set_task_called = False, True, True
        env.max_path_length = 10**9  # this wrapper owns episode length
        self.env, self.model = env, env.model
        mujoco.mj_forward(env.model, env.data)  # the camera pose reaches a render before the first reset
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
        self.state_dim = 39
        self.last_state = np.zeros(39)
        self.goal_state = np.zeros(3)
        self._goal_frame = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            raise UserError("Meta-World tasks draw their own starts and goals; they take no start or goal state")
        self.env.seed(int(self.np_random.integers(2**31)))
        self.last_state, _ = self.env.reset()
        # Meta-World moves the goal site after its last forward pass: without this, the first frame
        # (the goal image) drew the goal marker where the previous episode's goal was
        mujoco.mj_forward(self.env.model, self.env.data)
        self.goal_state = self.last_state[-3:].copy()
        obs = self._observation()
        self._goal_frame = obs["pixels"]
        return obs, self._info(False)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).clip(-1.0, 1.0)
        if action.shape != (4,):
            raise UserError(f"action must have shape (4,), got {action.shape}")
        self.last_state, reward, _, _, info = self.env.step(action)
        return self._observation(), float(reward), False, False, self._info(bool(info["success"]))

    def render(self) -> np.ndarray:
        if not self.pixels:
            return np.zeros((self.image_size, self.image_size, 3), np.uint8)
        # gymnasium's viewer (created on first use) takes markers for its next frame only
        viewer = self.env.mujoco_renderer._get_viewer("rgb_array")
        viewer.make_context_current()  # another env freed since may have left no GL context current (black frames)
        for marker in self._goal_markers():
            viewer.add_marker(**marker)
        return self.env.render().copy()

    def _goal_markers(self) -> list[dict]:
        """A pole from the table (z = 0) up to a floating goal and a disc at its foot (none for
        goals on the table, or tasks without a goal site). Cylinder sizes: radius, half-length."""
        if self.goal_site < 0:
            return []
        position, rgba = self.env.data.site_xpos[self.goal_site], self.model.site_rgba[self.goal_site]
        if position[2] <= GOAL_MARKER_RADIUS:  # the sphere already rests on the table
            return []
        half = position[2] / 2
        foot = position * [1, 1, 0]
        return [dict(type=mujoco.mjtGeom.mjGEOM_CYLINDER, pos=foot + [0, 0, half], size=np.array([GOAL_POLE_RADIUS, half, 0]), rgba=rgba),
                dict(type=mujoco.mjtGeom.mjGEOM_CYLINDER, pos=foot + [0, 0, GOAL_DISC_HALF_HEIGHT],
                     size=np.array([GOAL_MARKER_RADIUS, GOAL_DISC_HALF_HEIGHT, 0]), rgba=rgba)]

    def render_goal(self) -> np.ndarray:
        """The episode's first frame: the goal marker shows where things must go."""
        return self._goal_frame if self._goal_frame is not None else self.render()

    def close(self):
        self.env.close()

    def _observation(self) -> dict:
        return {"pixels": self.render(), "proprio": self.last_state[:4].astype(np.float32)}

    def _info(self, success: bool) -> dict:
        return {"is_success": success, "state": self.last_state.copy()}


def _show_workspace(model, view: CameraPose) -> int:
    """Point the rendering camera as `view` says, make the goal marker a visible sphere and the
    object flat yellow; returns the goal site's id (-1: the task has no site named "goal")."""
    obj = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "obj")
    if obj >= 0:
        drawn = model.geom_bodyid == obj
        model.geom_matid[drawn], model.geom_rgba[drawn] = -1, OBJECT_RGBA
    camera = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
    model.cam_pos[camera], model.cam_quat[camera], model.cam_fovy[camera] = view.position, view.quaternion(), view.fovy
    goal = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    if goal >= 0:
        model.site_type[goal], model.site_size[goal] = mujoco.mjtGeom.mjGEOM_SPHERE, GOAL_MARKER_RADIUS
    return goal


class MetaWorldExpert:
    """The package's scripted policy for the task, acting on the full state observation."""

    def __init__(self, env: MetaWorldTask):
        self.env = env
        from metaworld.policies import ENV_POLICY_MAP

        self.policy = ENV_POLICY_MAP[env.task_name]()

    def reset(self) -> None:
        pass

    def __call__(self) -> np.ndarray:
        return np.clip(self.policy.get_action(self.env.last_state), -1.0, 1.0)


@functools.lru_cache(maxsize=None)
def metaworld_task(name: str) -> type:
    """The env class of `metaworld:<task>-v3` (one subclass per task, so the class names the task)."""
    task = name[len(PREFIX):]
    known = _package().env_dict.ALL_V3_ENVIRONMENTS
    if task not in known:
        close = [k for k in known if task.split("-v")[0] in k][:3]
        raise UserError(f"unknown Meta-World task {task!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                              "; names look like metaworld:reach-v3"))
    drawing = TABLE_DRAWING if task in TABLE_TASKS else {}
    return type(f"MetaWorld[{task}]", (MetaWorldTask,), {"task_name": task, **drawing})
