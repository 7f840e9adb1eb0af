"""`jepa policy-eval`: run a learned policy (`jepa imitate`) on fresh episodes of its task under the
imitation protocol, and report its success with a Wilson interval beside the random-action floor
and the demonstrator on the same episodes."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.policy import PolicyConfig
from envs import task_spec
from envs.collect import CollectSpec, make_policy
from experiments.protocol import actor_success, eval_reset_seeds, parse_seeds, rate, run_lockstep
from experiments.runs import POLICY_EVAL_STAGE, demonstrator_spec, load_policy
from experiments.video import write_video
from infra.errors import UserError
from infra.files import write_json
from infra.progress import progress


def closest_median(closest: list[float]) -> float | None:
    """Median over episodes of the smallest goal distance each reached, in tolerances (1 is success:
    how near the misses came), or None for tasks that report no goal distance (Meta-World)."""
    finite = [c for c in closest if math.isfinite(c)]
    return round(float(np.median(finite)), 4) if finite and len(finite) == len(closest) else None


def eval_result_name(task: str, mode: str, seeds: list[int], episodes: int | str, steps: int | str) -> str:
    """File name of a policy-eval result in RUN/policy_eval (glob patterns may stand for any part)."""
    return f"{task}_{mode}_seeds{'-'.join(map(str, seeds))}_x{episodes}_steps{steps}.json"


@dataclass
class PolicyEval:
    """Run a learned policy on fresh episodes of its task and report success with its interval,
    beside the random-action floor and the demonstrator (the policy that recorded the
    demonstrations) on the same episodes."""

    run: Path
    """Run folder with a policy (`jepa imitate --out RUN`)."""
    task: str | None = None
    """Task (default: the one the policy learned; another one is an error)."""
    episodes: int = 50
    """Episodes per seed."""
    seeds: str = "0,1,2"
    """Comma-separated seeds; each draws different starts and goals."""
    steps: int = 0
    """Step budget per episode (0: the task's episode length); success is counted at any step."""
    execute: int | None = None
    """Actions executed per chunk (default: the policy's own)."""
    ensemble: float | None = None
    """Temporal-ensembling coefficient (default: the policy's own; > 0 queries every step)."""
    parallel: int = 25
    """Episodes run side by side (one batched policy call per step)."""
    baselines: bool = True
    """Also run random actions and the demonstrator on the same episodes."""
    videos: bool = True
    """Write each seed's first episode as mp4 (observation | goal)."""
    json: bool = False
    """Print {"success_rate", "ci95", "episodes", "seeds", "floor", "ceiling", ...}."""

    def __call__(self) -> dict:
        policy, config = load_policy(self.run)
        task = config["task"] if self.task is None else self.task
        if task != config["task"]:
            raise UserError(f"the policy in {self.run} learned {config['task']}, not {task}: imitate {task} demonstrations")
        seeds = parse_seeds(self.seeds)
        if min(self.episodes, self.parallel) < 1 or self.steps < 0:
            raise UserError("--episodes and --parallel must be positive and --steps not negative")
        policy.with_execution(self.execute, self.ensemble)
        spec = task_spec(task)
        # runs from before the demonstrator was recorded all learned from the scripted expert
        demonstrator = demonstrator_spec(task, config.get("demonstrator", "expert"), frame_skip=config["env_frame_skip"]) if self.baselines else None
        budget = self.steps or spec.env_class.default_max_steps
        kwargs = {"image_size": policy.cfg.image_size, "frame_skip": config["env_frame_skip"]}
        out = Path(self.run) / POLICY_EVAL_STAGE
        out.mkdir(parents=True, exist_ok=True)
        mode = policy.cfg.execution_mode
        outcome, shown = {"agent": [], "floor": [], "ceiling": [], "closest": []}, None
        with contextlib.ExitStack() as stack:
            envs = [spec.env_class(**kwargs) for _ in range(min(self.parallel, self.episodes))]
            blind = [spec.env_class(pixels=False, **kwargs) for _ in envs] if self.baselines else []  # random and expert need no pixels
            for env in envs + blind:
                stack.callback(env.close)
            bar = stack.enter_context(progress(total=len(seeds) * self.episodes, desc=f"policy-eval {task}", unit="episode"))
            for seed in seeds:
                resets = eval_reset_seeds(seed, self.episodes)
                for lo in range(0, self.episodes, len(envs)):
                    group, frames = resets[lo: lo + len(envs)], []
                    record = (lambda obs: frames.append(np.concatenate([obs["pixels"][0], obs["goal"][0]], 1))) if self.videos and lo == 0 else None
                    policy.reset()
                    success, closest = run_lockstep(envs[: len(group)], group, budget, lambda obs, _: policy.select_action(obs).numpy(), record)
                    outcome["agent"] += success.tolist()
                    outcome["closest"] += closest.tolist()
                    if frames:
                        shown = np.stack(frames)
                        write_video(out / f"{task}_{config['model']['kind']}_{mode}_seed{seed}.mp4", shown, fps=10, scale=2)
                    if self.baselines:  # one generator per episode: the same draws whatever --parallel is
                        for key, source, tag in (("floor", CollectSpec(task, "random"), 7), ("ceiling", demonstrator, 8)):
                            outcome[key] += actor_success(blind, group, budget, lambda i, env: make_policy(
                                source, env, np.random.default_rng([seed, lo + i, tag]))).tolist()
                    bar.update(len(group))
                    bar.set_postfix(success=f"{np.mean(outcome['agent']):.2f}", refresh=False)
        result = self._result(task, seeds, outcome, config, budget, policy.cfg)
        write_json(out / eval_result_name(task, mode, seeds, self.episodes, budget), result)
        self._log(out, result, shown)
        if not self.json:
            pct = lambda value: "n/a" if value is None else f"{value:.0%}"  # noqa: E731
            near = f" | closest approach, median: {result['closest_median']:.2f} tolerances" if result["closest_median"] is not None else ""
            print(f"{task} {config['model']['kind']}: success {pct(result['success_rate'])} [{pct(result['ci95'][0])}, {pct(result['ci95'][1])}] "
                  f"over {result['n']} episodes (success at any of {budget} steps){near} | random floor {pct(result['floor'])} | "
                  f"demonstrator {pct(result['ceiling'])}")
        return result

    @staticmethod
    def _log(out: Path, result: dict, frames: np.ndarray | None) -> None:
        """Scalars, and the last seed's first episode as a strip of every 10th frame (observation | goal)."""
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tb")) as writer:
            tag = f"{result['task']}_{result['policy']}"
            for key in ("success_rate", "floor", "ceiling"):
                if result[key] is not None:
                    writer.add_scalar(f"eval/{tag}/{key}", result[key], 0)
            if frames is not None:
                writer.add_image(f"eval/{tag}/observation_goal", np.concatenate(list(frames[::10]), 0), dataformats="HWC")

    def _result(self, task, seeds, outcome, config, budget, cfg: PolicyConfig) -> dict:
        success, ci = rate(outcome["agent"])
        floor, floor_ci = rate(outcome["floor"])
        ceiling, ceiling_ci = rate(outcome["ceiling"])
        return {"task": task, "policy": cfg.kind, "success_rate": success, "ci95": ci,
                "floor": floor, "floor_ci95": floor_ci, "ceiling": ceiling, "ceiling_ci95": ceiling_ci,
                "episodes": self.episodes, "seeds": seeds, "n": len(outcome["agent"]), "steps": budget,
                "execute": cfg.execute, "ensemble": cfg.ensemble,
                "demonstrations": config["demonstrations"], "closest_median": closest_median(outcome["closest"])}
