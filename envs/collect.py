"""Data collection: run a policy in a task for whole episodes, in parallel worker processes.

Each episode's randomness (start, goal, policy noise) comes from `SeedSequence([seed, index])`,
so a dataset is the same whatever the number of workers. Workers are spawned (not forked: a
forked child of a process holding a GL context hangs) and each keeps one env for its lifetime.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from envs import make_task, task_spec
from envs.dataset import Episode
from infra.errors import UserError

POLICIES = ("random", "wander", "expert", "noisy-expert", "mixed")
SB3_PREFIX = "sb3:"  # sb3:RUN, the expert `jepa train-expert --out RUN` trained


@dataclass(frozen=True)
class CollectSpec:
    """What to collect: task, env options, policy and episode length."""

    task: str
    policy: str = "expert"
    steps: int = 0  # actions per episode; 0: the task's default
    image_size: int = 64
    frame_skip: int | None = None
    seed: int = 0
    noise: float = 0.3  # noisy-expert: std of the Gaussian added to the expert's action
    random_prob: float = 0.1  # noisy-expert: chance per step of a uniform random action
    max_hold: int = 10  # wander: a random action is held for 1 to max_hold steps
    pixels: bool = True
    depth: bool = False  # also record the observation camera's depth image (MuJoCo tasks)
    env_kwargs: dict = field(default_factory=dict)
    factory: Callable | None = None  # sb3:RUN: builds the demonstrator, `factory(env)() -> action` (picklable)

    def __post_init__(self):
        task_spec(self.task)
        if self.policy not in POLICIES and not self.policy.startswith(SB3_PREFIX):
            raise UserError(f"unknown policy {self.policy!r}: choose one of {', '.join(POLICIES)}, or sb3:RUN")
        if self.policy.startswith(SB3_PREFIX) and self.factory is None:
            raise UserError(f"{self.policy}: an SB3 expert is built by the command layer (experiments.runs.demonstrator_spec)")
        if self.steps < 0:
            raise UserError(f"steps must be positive (or 0 for the task's default), got {self.steps}")

    @property
    def episode_steps(self) -> int:
        return self.steps or task_spec(self.task).env_class.default_max_steps


def make_policy(spec: CollectSpec, env, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """The action source for one episode (experts read the env's true state)."""
    low, high = env.action_space.low, env.action_space.high
    policy = spec.policy
    if spec.factory is not None:
        return spec.factory(env)
    if policy == "mixed":  # half the episodes noisy-expert, half wandering: goal-directed data plus the
        policy = "noisy-expert" if rng.random() < 0.5 else "wander"  # collisions an expert never makes
    if policy == "random":
        return lambda: rng.uniform(-1.0, 1.0, low.shape)  # the action space is [-1, 1]^A
    if policy == "wander":
        held = {"action": None, "left": 0}

        def wander() -> np.ndarray:
            if held["left"] == 0:
                held["action"], held["left"] = rng.uniform(low, high), int(rng.integers(1, spec.max_hold + 1))
            held["left"] -= 1
            return held["action"]

        return wander
    expert = task_spec(spec.task).expert_class(env)
    if policy == "expert":
        return expert

    def noisy() -> np.ndarray:
        action = expert()  # always called: experts with phases must see every step
        if rng.random() < spec.random_prob:
            return rng.uniform(low, high)
        return np.clip(action + rng.normal(0.0, spec.noise, action.shape), low, high)

    return noisy


def episode_seeds(seed: int, index: int) -> tuple[int, np.random.SeedSequence]:
    """(env reset seed, policy seed sequence) of episode `index` of a collection seeded with `seed`."""
    env_seed, policy_seed = np.random.SeedSequence([seed, index]).spawn(2)
    return int(env_seed.generate_state(1)[0]), policy_seed


def record_episode(spec: CollectSpec, env, index: int) -> Episode:
    """Roll out episode `index` of a collection (`spec.episode_steps` actions) and record it: T + 1 frames."""
    reset_seed, policy_seed = episode_seeds(spec.seed, index)
    obs, info = env.reset(seed=reset_seed)
    policy = make_policy(spec, env, np.random.default_rng(policy_seed))
    steps = spec.episode_steps
    frames = np.empty((steps + 1, *obs["pixels"].shape), np.uint8)
    actions = np.zeros((steps + 1, *env.action_space.shape), np.float32)
    proprio = np.empty((steps + 1, *obs["proprio"].shape), np.float32)
    state = np.empty((steps + 1, env.state_dim))
    reward, success = np.zeros(steps + 1, np.float32), np.zeros(steps + 1, bool)
    depth = np.empty((steps + 1, *obs["pixels"].shape[:2]), np.float32) if spec.depth else None
    frames[0], proprio[0], state[0], success[0] = obs["pixels"], obs["proprio"], info["state"], info["is_success"]
    if spec.depth:
        depth[0] = env.depth_image()
    for t in range(1, steps + 1):
        actions[t - 1] = policy()
        obs, reward[t], _, _, info = env.step(actions[t - 1])
        frames[t], proprio[t], state[t], success[t] = obs["pixels"], obs["proprio"], info["state"], info["is_success"]
        if spec.depth:
            depth[t] = env.depth_image()
    return Episode(frames, actions, proprio, state, reward, success, env.goal_state.copy(), env.render_goal(), depth)


_worker_env = None


def _init_worker(spec: CollectSpec) -> None:
    global _worker_env
    _worker_env = make_task(spec.task, **_env_kwargs(spec))


def _worker_episode(args) -> Episode:
    spec, index = args
    return record_episode(spec, _worker_env, index)


def _env_kwargs(spec: CollectSpec) -> dict:
    return {"image_size": spec.image_size, "frame_skip": spec.frame_skip, "pixels": spec.pixels, **spec.env_kwargs}


def collect(spec: CollectSpec, episodes: int, workers: int = 1) -> Iterator[Episode]:
    """Iterator over `episodes` episodes in index order, run by `workers` processes (1: in this
    one). Arguments are checked here, before any episode runs."""
    if episodes < 1 or workers < 1:
        raise UserError(f"episodes and workers must be at least 1, got {episodes} and {workers}")
    return _episodes(spec, episodes, workers)


def _episodes(spec: CollectSpec, episodes: int, workers: int) -> Iterator[Episode]:
    if workers == 1:
        env = make_task(spec.task, **_env_kwargs(spec))
        try:
            for index in range(episodes):
                yield record_episode(spec, env, index)
        finally:
            env.close()
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
        yield from pool.imap(_worker_episode, [(spec, i) for i in range(episodes)])
