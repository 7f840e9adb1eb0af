"""`jepa train-expert`: a state-based stable-baselines3 expert (`agents/sb3_expert.py`) whose
demonstrations `jepa collect --policy sb3:RUN` records, with its success rate measured on the
evaluation episodes that `jepa policy-eval` uses."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from agents.sb3_expert import WEIGHTS, StateTaskEnv, build_model, save_expert
from envs import make_task, task_spec
from experiments.protocol import actor_success, eval_reset_seeds, parse_seeds, rate
from experiments.runs import EXPERT_STAGE, expert_config, load_expert, sb3_expert
from infra.errors import UserError
from infra.files import write_json
from infra.progress import progress


def expert_success(run: Path, task: str, frame_skip: int | None, seeds: list[int], episodes: int) -> dict:
    """Success at any step of the run's SB3 expert on the policy-eval episodes of `seeds`."""
    successes = []
    with contextlib.ExitStack() as stack:
        envs = [make_task(task, pixels=False, frame_skip=frame_skip) for _ in range(episodes)]
        for env in envs:
            stack.callback(env.close)
        for seed in seeds:
            successes += actor_success(envs, eval_reset_seeds(seed, episodes), envs[0].default_max_steps,
                                       lambda _, env: sb3_expert(env, run)).tolist()
    success, ci = rate(successes)
    return {"success_rate": success, "ci95": ci, "episodes": episodes, "seeds": seeds}


@dataclass
class TrainExpert:
    """Train a state-based SB3 expert on a task (true simulator state in, actions out)."""

    out: Path
    """Run folder; the expert goes to OUT/expert (policy.safetensors, expert.json, tb/)."""
    task: str = "reacher"
    """Task to solve."""
    algo: str = "sac"
    """sac, td3 or ppo."""
    steps: int = 30_000
    """Environment steps of training."""
    net: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the actor and critic MLPs."""
    frame_skip: int | None = None
    """Physics steps per action (None: the task's default)."""
    seed: int = 0
    """Seed of the initialisation and the exploration."""
    eval_episodes: int = 50
    """Evaluation episodes per seed after training (the episodes `jepa policy-eval` runs)."""
    eval_seeds: str = "0,1,2"
    """Comma-separated evaluation seeds."""
    json: bool = False
    """Print {"success_rate", "ci95", "episodes", "seeds", ...}."""

    def __call__(self) -> dict:
        if not task_spec(self.task).env_class.settable_state:
            raise UserError("SB3 experts train on this project's tasks (they read the simulator state); "
                            "Meta-World tasks come with scripted experts: --policy expert")
        seeds = parse_seeds(self.eval_seeds)
        if min(self.steps, self.eval_episodes) < 1 or not self.net or min(self.net) < 1:
            raise UserError("--steps, --eval-episodes and every --net size must be positive")
        directory = self.out / EXPERT_STAGE
        env = StateTaskEnv(self.task, self.frame_skip)
        try:
            config = {"task": self.task, "task_class": type(env.env).__name__, "algo": self.algo, "steps": self.steps, "net": list(self.net),
                      "seed": self.seed, "env_frame_skip": env.env.frame_skip}
            saved = expert_config(self.out) if (directory / WEIGHTS).exists() else None
            if saved is not None and saved != config:  # never overwrite an expert trained otherwise
                changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise UserError(f"{directory} holds an expert trained otherwise (differs in {', '.join(changed)}): choose a new --out")
            if saved is None:  # else: the same expert exists, only the (cheap) evaluation reruns
                self._train(env, directory, config)
        finally:
            env.env.close()
        result = expert_success(self.out, self.task, self.frame_skip, seeds, self.eval_episodes) | {"algo": self.algo, "steps": self.steps}
        write_json(directory / "eval.json", result)
        if not self.json:
            print(f"{self.algo} expert on {self.task} written to {directory}: success {result['success_rate']:.0%} "
                  f"[{result['ci95'][0]:.0%}, {result['ci95'][1]:.0%}] over {len(result['seeds']) * result['episodes']} episodes; "
                  f"next: jepa collect --task {self.task} --policy sb3:{self.out}")
        return result

    def _train(self, env: StateTaskEnv, directory: Path, config: dict) -> None:
        """SB3 training with a progress bar and TensorBoard logs; the weights go to `directory`."""
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.monitor import Monitor

        class Progress(BaseCallback):
            def _on_training_start(self):
                self.bar = progress(total=self.locals["total_timesteps"], desc="train-expert", unit="step")

            def _on_step(self):
                self.bar.update(1)
                return True

            def _on_training_end(self):
                self.bar.close()

        model = build_model(self.algo, Monitor(env), self.net, self.seed, tensorboard_log=str(directory / "tb"), verbose=0)
        model.learn(self.steps, callback=Progress())
        save_expert(directory, model, config)
        load_expert.cache_clear()  # a retrained run must not be served from the cache
