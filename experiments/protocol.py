"""The evaluation protocols, used by every command that reports a success rate: planning
toward goal states (LeWM / stable-worldmodel style, below) and imitation (`eval_reset_seeds`,
`run_lockstep`: fresh episodes of the task, seeded apart from any dataset, success at any step).

Start/goal pairs come from expert episodes that no dataset contains (seeded apart from
`jepa collect`): for pair i of seed s, an expert episode is run and a start step drawn; the goal
is the simulator state `goal_offset` steps later. Pairs whose start already meets the goal are
redrawn, and so are those that fail the task's pair rule a setting names (two-room's cross-room:
start and goal in different rooms, `TaskEnv.pair_rules`). The
agent then has `eval_budget` env steps; success is the task's own criterion at any step.

Reported beside the agent: the random-action floor on the same pairs, and the ceiling, the same
planner and budget with the true simulator as its model (cost: the task's goal distance), on
the first pairs of each seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch

from agents.planner import horizon_cost
from envs import task_spec
from infra.errors import UserError

EVAL_TAG = 0x6A657061  # keeps evaluation episodes apart from any collected dataset's seeds


@dataclass(frozen=True)
class Setting:
    """One named start/goal setting of a task: goal offset and step budget (env steps), the task's
    pair rule its pairs must meet (a name in the env class's `pair_rules`; None: any pair), and the
    planning horizon (model steps), final-step cost weight and learned goal-distance weight used
    unless the user sets them."""

    goal_offset: int
    eval_budget: int
    pair_rule: str | None = None
    horizon: int = 5
    final_weight: float = 0.0
    distance_weight: float = 0.0


SETTINGS = {  # task -> setting name -> Setting
    # two-room: the plain latent distance has minima against the wall; the learned goal distance
    # (`jepa train-distance`) counts steps through the door instead
    "two-room": {"default": Setting(25, 50, distance_weight=1.0), "cross-room": Setting(75, 100, pair_rule="cross-room", distance_weight=1.0)},
    "reacher": {"default": Setting(25, 50)},
    "push-t": {"default": Setting(25, 50)},
    "cube": {"default": Setting(50, 100)},
    # the published protocol (LeWM's config/eval/{reacher,pusht,cube}.yaml): goal 25 steps ahead, a 50-step budget
    "dmc:reacher-easy": {"default": Setting(25, 50)},
    "gym-pusht:push-t": {"default": Setting(25, 50)},
    "ogbench:cube-single": {"default": Setting(25, 50)},
}


def setting_of(task: str, name: str) -> Setting:
    """The named setting of a task, or a one-line error listing the ones it has."""
    if name not in SETTINGS.get(task, {}):
        raise UserError(f"{task} has no setting {name!r}; it has {', '.join(SETTINGS.get(task, {}))}")
    return SETTINGS[task][name]


def parse_seeds(seeds: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2], or a one-line error."""
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0 or len(set(values)) < len(values):
        raise UserError(f"--seeds must be distinct non-negative integers separated by commas, such as 0,1,2; got {seeds!r}")
    return values


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def rate(outcomes: list) -> tuple[float | None, list | None]:
    """(success rate, [Wilson 95% low, high]) of boolean outcomes, or (None, None) for none."""
    if not len(outcomes):
        return None, None
    return round(float(np.mean(outcomes)), 4), list(wilson(int(np.sum(outcomes)), len(outcomes)))


def draw_pairs(task: str, setting: Setting, seed: int, count: int, frame_skip: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` (start state, goal state) pairs of one seed (see the module docstring); `frame_skip`
    is the env's physics steps per action (None: the task's default)."""
    spec = task_spec(task)
    env = spec.env_class(pixels=False, frame_skip=frame_skip)
    expert = spec.expert_class(env)
    rule = env.pair_rules[setting.pair_rule] if setting.pair_rule is not None else None
    pairs = []
    for i in range(count):
        rng = np.random.default_rng([EVAL_TAG, seed, i])
        for _ in range(100):
            env.reset(seed=int(rng.integers(2**31)))
            expert.reset()
            states = [env.get_state()]
            for _ in range(max(env.default_max_steps, setting.goal_offset)):
                env.step(expert())
                states.append(env.get_state())
            t = int(rng.integers(0, len(states) - setting.goal_offset))
            start, goal = states[t], states[t + setting.goal_offset]
            if env.goal_distance(start, goal) <= 1.0:
                continue
            if rule is not None and not rule(start, goal):
                continue
            pairs.append((start, goal))
            break
        else:
            raise UserError(f"could not draw a {task} pair for seed {seed}, pair {i}")
    env.close()
    return pairs


class SimulatorImagination:
    """The true simulator as the planner's model (the ceiling): candidate action blocks are rolled
    out from the current true state (`GoalStateTaskEnv.rollout`) and scored by the task's goal
    distance after every block, combined over the horizon as the latent cost is (`horizon_cost`)."""

    def __init__(self, env, goal: np.ndarray, frame_skip: int, final_weight: float = 0.0, final_only: bool = False):
        self.env, self.goal, self.frame_skip = env, goal, frame_skip
        self.final_weight, self.final_only = final_weight, final_only

    def observe(self, obs: dict, info: dict, executed) -> None:
        pass  # the rollouts start from the env's own state

    def cost(self, blocks: torch.Tensor) -> torch.Tensor:
        a = self.env.action_space.shape[0]
        actions = blocks[0].detach().numpy().astype(np.float64)  # [S, H, skip * A]
        s, h = actions.shape[:2]
        states = self.env.rollout(actions.reshape(s, h * self.frame_skip, a))  # [S, H*skip, state]
        distance = self.env.goal_distances(states[:, self.frame_skip - 1:: self.frame_skip], self.goal)  # [S, H]
        return horizon_cost(torch.from_numpy(distance), self.final_weight, self.final_only)[None].float()


def run_episode(env, start: np.ndarray, goal: np.ndarray, budget: int, act: Callable[[dict, dict], np.ndarray],
                on_step: Callable[[dict, np.ndarray], None] | None = None) -> tuple[bool, float, int]:
    """(success at any step, final goal distance, steps taken) of one controlled episode."""
    obs, info = env.reset(options={"state": start, "goal": goal})
    for step in range(budget):
        action = act(obs, info)
        if on_step is not None:
            on_step(obs, action)
        obs, _, _, _, info = env.step(action)
        if info["is_success"]:
            return True, info["goal_distance"], step + 1
    return False, info["goal_distance"], budget


def eval_reset_seeds(seed: int, count: int) -> list[int]:
    """Reset seeds of the `count` imitation-evaluation episodes of one seed (random start and goal
    from the task's own sampler; seeded apart from any collected dataset)."""
    return [int(np.random.default_rng([EVAL_TAG, seed, i, 1]).integers(2**31)) for i in range(count)]


class Lockstep(NamedTuple):
    """Outcome of `run_lockstep`, one entry per episode."""

    success: np.ndarray  # bool [n]: the task's criterion met at any step
    closest: np.ndarray  # [n]: the smallest goal distance reached, in tolerances (1 is success; NaN: the task reports none)


def run_lockstep(envs: list, resets: list[int], budget: int, act: Callable[[dict, list], np.ndarray],
                 on_step: Callable[[dict], None] | None = None) -> Lockstep:
    """Run one episode per env side by side (one batched `act(obs, envs) -> actions [n, A]` call
    per step, obs batched: pixels, proprio, goal) for up to `budget` steps; an env stops once it
    succeeds. Returns each episode's success and closest approach (`Lockstep`)."""
    n = len(envs)
    observations = [env.reset(seed=s)[0] for env, s in zip(envs, resets, strict=True)]
    goals = np.stack([env.render_goal() for env in envs])
    success, closest = np.zeros(n, bool), np.full(n, np.inf)
    for t in range(budget):
        obs = {"pixels": np.stack([o["pixels"] for o in observations]), "proprio": np.stack([o["proprio"] for o in observations]),
               "goal": goals}
        if on_step is not None:
            on_step(obs)
        actions = np.asarray(act(obs, envs))
        for i in np.flatnonzero(~success):
            observations[i], _, _, _, info = envs[i].step(actions[i])
            success[i] = info["is_success"]
            closest[i] = np.fmin(closest[i], info.get("goal_distance", np.nan))
        if success.all():
            break
    return Lockstep(success, np.where(np.isinf(closest), np.nan, closest))


def actor_success(envs: list, resets: list[int], budget: int, make_actor: Callable[[int, object], Callable[[], np.ndarray]]) -> np.ndarray:
    """Success at any step [n] of one actor per episode (`make_actor(i, env) -> () -> action`:
    random actions, scripted or SB3 experts, which read their env rather than the observation),
    on the first len(resets) envs."""
    envs = envs[: len(resets)]
    actors = [make_actor(i, env) for i, env in enumerate(envs)]
    return run_lockstep(envs, resets, budget, lambda *_: np.stack([actor() for actor in actors])).success
