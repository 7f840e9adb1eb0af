"""MuJoCo pixel tasks for JEPA world models, registered with gymnasium as `jepa/<Name>-v0`.

`TASKS` maps the command-line name of each task to its spec: the env class, its scripted expert
and its gymnasium id. `make_task("two-room", image_size=64)` builds one. Meta-World v3 tasks are
named `metaworld:<task>-v3` (`envs/metaworld_tasks.py`; imitation only: they take no start state).
The published systems' own tasks have one file per suite: `dmc:reacher-easy` (`envs/dmc_tasks.py`),
`gym-pusht:push-t` and `gym-pusht:push-t-fixed` (`envs/gym_pusht_tasks.py`), `ogbench:cube-single` (`envs/ogbench_tasks.py`).
Every env class implements `TaskEnv` (envs/base.py), whose class attributes say what a task can be
used for (`settable_state`, `pair_rules`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

from envs.base import MujocoTaskEnv, TaskEnv
from envs.cube import CubeEnv, CubeExpert
from envs.dmc_tasks import DMCReacherEnv, DMCReacherExpert
from envs.gym_pusht_tasks import GymPushTCoverageExpert, GymPushTEnv, GymPushTExpert, GymPushTFixedGoalEnv
from envs.ogbench_tasks import OGBenchCubeEnv, OGBenchCubeExpert
from envs import metaworld_tasks  # isort: skip  (after the GL backend is chosen, envs.base)
from envs.push_t import PushTEnv, PushTFixedGoalEnv
from envs.push_t_expert import PushTExpert
from envs.reacher import ReacherEnv, ReacherExpert
from envs.two_room import TwoRoomEnv, TwoRoomExpert
from infra.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    """One task: its env class, its scripted expert, and its gymnasium id."""

    env_class: type
    expert_class: type
    gym_id: str
    summary: str


TASKS = {
    "two-room": TaskSpec(TwoRoomEnv, TwoRoomExpert, "jepa/TwoRoom-v0", "point mass through a door to a goal position"),
    "reacher": TaskSpec(ReacherEnv, ReacherExpert, "jepa/Reacher-v0", "two-link arm to a goal configuration"),
    "push-t": TaskSpec(PushTEnv, PushTExpert, "jepa/PushT-v0", "push a T block to a goal pose"),
    "push-t-fixed": TaskSpec(PushTFixedGoalEnv, PushTExpert, "jepa/PushTFixedGoal-v0", "push a T block to one fixed goal pose (the Push-T imitation protocol)"),
    "cube": TaskSpec(CubeEnv, CubeExpert, "jepa/Cube-v0", "pick a cube up and place it at a goal location"),
    "dmc:reacher-easy": TaskSpec(DMCReacherEnv, DMCReacherExpert, "jepa/DMCReacherEasy-v0",
                                 "DeepMind Control's torque-driven reacher to a goal configuration (LeWM's task; needs dm-control)"),
    "gym-pusht:push-t": TaskSpec(GymPushTEnv, GymPushTExpert, "jepa/GymPushT-v0",
                                 "the pymunk Push-T of Diffusion Policy and LeRobot to a goal state (DINO-WM's, PLDM's and LeWM's task; needs gym-pusht)"),
    "gym-pusht:push-t-fixed": TaskSpec(GymPushTFixedGoalEnv, GymPushTCoverageExpert, "jepa/GymPushTFixedGoal-v0",
                                       "the pymunk Push-T to its fixed goal region by its own coverage test (Diffusion Policy's, LeRobot's and ACT-JEPA's imitation task; needs gym-pusht)"),
    "ogbench:cube-single": TaskSpec(OGBenchCubeEnv, OGBenchCubeExpert, "jepa/OGBenchCubeSingle-v0",
                                    "OGBench's UR5e arm moving a cube to a goal state (DINO-WM's and LeWM's cube; needs ogbench)"),
}

for _spec in TASKS.values():
    if _spec.gym_id not in gym.registry:
        gym.register(_spec.gym_id, entry_point=_spec.env_class, max_episode_steps=_spec.env_class.default_max_steps)


def task_spec(name: str) -> TaskSpec:
    """The spec of a task by command-line name, with a clear error for unknown names."""
    if name.startswith(metaworld_tasks.PREFIX):
        return TaskSpec(metaworld_tasks.metaworld_task(name), metaworld_tasks.MetaWorldExpert, name, "Meta-World v3 task (imitation)")
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)} (see `jepa tasks`)")
    return TASKS[name]


def stale_frames(task: str, revision: int | None, what: str) -> str | None:
    """A one-line warning when `what` ("the dataset D holds", "the policy in R learned from") names
    frames drawn at render revision `revision` (None: not recorded, before revisions were) while
    this version draws `task` at another one."""
    current = task_spec(task).env_class.render_revision
    if revision == current or (revision is None and current == 0):
        return None
    drawn = "before render revisions were recorded (they may differ)" if revision is None else f"at render revision {revision}"
    return (f"WARNING: {what} {task} frames drawn {drawn}; this jepa-worlds draws them at revision {current}, so a "
            f"policy may see other frames than it learned from: collect the demonstrations again (`jepa collect`)")


def make_task(name: str, **kwargs) -> TaskEnv:
    """Build a task env by command-line name (no TimeLimit wrapper: callers own episode length)."""
    return task_spec(name).env_class(**kwargs)


__all__ = ["TASKS", "TaskSpec", "TaskEnv", "MujocoTaskEnv", "UserError", "make_task", "stale_frames", "task_spec"]
