"""Demonstrators trained by reinforcement learning with stable-baselines3 (SAC, Haarnoja et al. 2018; TD3,
Fujimoto et al. 2018; PPO, Schulman et al. 2017) on the true simulator state, for tasks where no
scripted expert is good. A demonstrator may read the true state; the policies imitated from its
demonstrations see only pixels and proprio.

Saved as one safetensors checkpoint (the SB3 policy's weights, the config in its metadata) plus
a readable JSON copy of the config: loading (`experiments/runs.load_expert`) rebuilds the SB3
policy and loads the weights, so SB3's pickled zip is never written or opened.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from envs import make_task
from infra.errors import UserError
from infra.files import write_json
from worldmodel.checkpoint import save_checkpoint

WEIGHTS, CONFIG = "policy.safetensors", "expert.json"  # the JSON is a readable copy of the checkpoint's config


def expert_observation(env) -> np.ndarray:
    """What the expert sees: the state, the goal configuration, and cos/sin of their difference
    (angles compare without a wrap-around) [S + 3 nq]."""
    nq = env.model.nq
    state, goal = env.get_state(), env.goal_state[:nq]
    difference = state[:nq] - goal
    return np.concatenate([state, goal, np.cos(difference), np.sin(difference)]).astype(np.float32)


class StateTaskEnv(gym.Env):
    """A task as SB3 trains on it: state observations, reward -goal_distance (errors over
    tolerances), the episode ends on success or after the task's episode length."""

    def __init__(self, task: str, frame_skip: int | None = None):
        self.env = make_task(task, pixels=False, frame_skip=frame_skip)
        self.action_space = self.env.action_space
        dim = expert_observation(self.env).shape[0]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.limit, self.steps = self.env.default_max_steps, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        _, info = self.env.reset(seed=seed, options=options)
        self.steps = 0
        return expert_observation(self.env), {"is_success": info["is_success"]}

    def step(self, action):
        _, reward, _, _, info = self.env.step(action)
        self.steps += 1
        return expert_observation(self.env), reward, bool(info["is_success"]), self.steps >= self.limit, {"is_success": info["is_success"]}


def algorithms() -> dict:
    from stable_baselines3 import PPO, SAC, TD3

    return {"sac": SAC, "td3": TD3, "ppo": PPO}


def build_model(algo: str, env: gym.Env, net: tuple[int, ...], seed: int = 0, **kwargs):
    """An SB3 model of algorithm `algo` with an MLP of hidden sizes `net`."""
    if algo not in algorithms():
        raise UserError(f"--algo must be one of {', '.join(algorithms())}, got {algo!r}")
    return algorithms()[algo]("MlpPolicy", env, policy_kwargs={"net_arch": list(net)}, seed=seed, device="cpu", **kwargs)


def save_expert(directory: Path, model, config: dict) -> None:
    """The policy's weights, with the config in the file's metadata, as one safetensors
    checkpoint written atomically; the config also as readable JSON beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(directory / WEIGHTS, model.policy, None, config["steps"], config)
    write_json(directory / CONFIG, config)


class SB3Expert:
    """A trained SB3 policy (`policy`, with the `config` its run recorded; from `run`) acting in a
    task env, called like the scripted experts: `expert()`."""

    def __init__(self, env, policy, config: dict, run: str | Path):
        self.env, self.policy = env, policy
        if config["task_class"] != type(env).__name__ or config["env_frame_skip"] != env.frame_skip:
            raise UserError(f"the SB3 expert in {run} was trained on {config['task']} with frame skip {config['env_frame_skip']}, "
                            f"not on {type(env).__name__} with frame skip {env.frame_skip}")

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def __call__(self) -> np.ndarray:
        action, _ = self.policy.predict(expert_observation(self.env), deterministic=True)
        return np.asarray(action, np.float64)
