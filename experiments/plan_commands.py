"""`jepa plan-eval`: goal-image planning with a trained world model, under the evaluation
protocol of `experiments/protocol.py` (success with a Wilson interval, floor and ceiling)."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.mpc import MPC, LatentImagination, MPCConfig, PolicyPrior, with_preset
from envs import task_spec
from envs.dataset import EpisodeDataset, split_episodes
from experiments.protocol import SimulatorImagination, draw_pairs, parse_seeds, rate, run_episode, setting_of
from experiments.report import plan_summary
from experiments.runs import (PLAN_STAGE, env_frame_skip, has_goal_distance, load_goal_distance, load_plan_recipe, load_policy,
                              load_world_model)
from experiments.video import write_video
from infra.errors import UserError
from infra.files import write_json
from infra.progress import progress
from worldmodel.latents import Retrieval
from worldmodel.probe import frame_indices


@dataclass
class PlanEval:
    """Plan toward goal images with the run's world model (MPC) and report success with its interval,
    the random-action floor and the true-simulator ceiling."""

    run: Path
    """Run folder with a world model (`jepa train-wm` or `jepa quickstart`)."""
    task: str | None = None
    """Task (default: the one the world model was trained on; another one is an error)."""
    setting: str = "default"
    """Named start/goal setting (protocol table in BENCHMARKS.md): default, or cross-room for two-room."""
    pairs: int = 50
    """Start/goal pairs per seed."""
    seeds: str = "0,1,2"
    """Comma-separated seeds; each draws different pairs."""
    mpc: MPCConfig = field(default_factory=MPCConfig)
    preset: str | None = None
    """A published planner in place of the --mpc flags it sets: lewm (LeWM's CEM 300 x 30, top 30,
    horizon 5 blocks of 5 actions, the final step's cost alone, 5 blocks executed per plan)."""
    prior: Path | None = None
    """Run folder holding a policy (`jepa imitate`) of the same task and image size whose action
    hypotheses begin the planner's candidates at each replanning (default: the run's own policy
    where its recipe names one, see `jepa quickstart`)."""
    recipe_prior: bool = True
    """Use the prior the run's recipe names (--no-recipe-prior: plan without it)."""
    goal_proprio: str | None = None
    """For a state that holds proprio: image (the goal's proprio read from the goal image) or
    observed (the goal observation's proprio given with its image, DINO-WM's protocol); default:
    the run's recipe, else image."""
    floor: bool = True
    """Also run random actions on the same pairs."""
    ceiling_pairs: int = 10
    """Pairs per seed on which the same planner runs with the true simulator as its model (0: none;
    none for grad, as MuJoCo gives no gradients)."""
    videos: int = 1
    """Episodes per seed written as mp4 (observation | goal | imagined end of the current plan)."""
    save: bool = True
    """Write RUN/plan_eval/<task>_<setting>_<planner>.json and TensorBoard scalars (off: print only)."""
    json: bool = False
    """Print {"success_rate", "ci95", "floor", "ceiling", "plan_time_s_median", "plan_time_s_p90", "pairs", "seeds", ...}."""

    def __call__(self) -> dict:
        model, config = load_world_model(self.run)
        task = config["task"] if self.task is None else self.task
        if task != config["task"]:
            raise UserError(f"the world model in {self.run} was trained on {config['task']}, not {task}: train one on {task} data")
        setting, seeds = setting_of(task, self.setting), parse_seeds(self.seeds)
        if self.pairs < 1:
            raise UserError(f"--pairs must be positive, got {self.pairs}")
        if self.ceiling_pairs < 0:
            raise UserError(f"--ceiling-pairs must be 0 or more, got {self.ceiling_pairs}")
        mpc_cfg, goal_proprio, prior = self._options(setting, model)
        policy = self._prior_policy(prior, task, model.image_size) if prior is not None else None
        physics_skip = env_frame_skip(config)
        goal_distance = load_goal_distance(self.run, model) if mpc_cfg.distance_weight and has_goal_distance(self.run) else None
        if goal_distance is None and mpc_cfg.distance_weight:
            print(f"note: {task} {self.setting} plans best with a learned goal distance, which {self.run} lacks: "
                  f"run `jepa train-distance --run {self.run}`", file=sys.stderr)
        env = task_spec(task).env_class(image_size=model.image_size, frame_skip=physics_skip)
        skip, a = model.cfg.frame_skip, env.action_space.shape[0]
        retrieval = None
        if self.videos and Path(config["data"]).exists():
            dataset = EpisodeDataset(config["data"])
            retrieval = Retrieval(model, dataset, frame_indices(dataset, split_episodes(dataset, config["holdout"])[0], 4000))
        out = Path(self.run) / PLAN_STAGE
        out.mkdir(parents=True, exist_ok=True)
        outcome = {"agent": [], "floor": [], "ceiling": [], "policy": []}
        distances, agent_times, ceiling_times, kinds, shown, prior_kept = [], [], [], [], None, 0
        bar = progress(total=len(seeds) * self.pairs, desc=f"plan-eval {task} {self.setting}", unit="pair")
        for seed in seeds:
            for i, (start, goal) in enumerate(draw_pairs(task, setting, seed, self.pairs, physics_skip)):
                mpc = MPC(mpc_cfg, a, skip, seed=seed * 100_003 + i)
                goal_pixels = env.render_state(goal)
                mpc.reset(LatentImagination(model, goal_pixels, mpc_cfg, goal_distance, env.proprio_of(goal) if goal_proprio == "observed" else None),
                          PolicyPrior(policy, goal_pixels) if policy is not None else None)
                frames = [] if retrieval is not None and i < self.videos else None
                record = (lambda obs, _: frames.append(self._panel(obs, env, goal, mpc, retrieval))) if frames is not None else None
                success, distance, _ = run_episode(env, start, goal, setting.eval_budget, mpc.act, record)
                outcome["agent"].append(success)
                prior_kept += mpc.prior_kept
                kinds.append(env.pair_kind(start, goal))
                distances.append(distance)
                agent_times += mpc.plan_times
                if frames:
                    shown = shown if shown is not None else np.stack(frames)
                    write_video(out / f"{task}_{self.setting}_{self.planner_name}_seed{seed}_pair{i}.mp4", np.stack(frames), fps=10, scale=2)
                if policy is not None:  # the prior's policy alone, on the same pair
                    alone = PolicyPrior(policy, goal_pixels)
                    outcome["policy"].append(run_episode(env, start, goal, setting.eval_budget, alone.act)[0])
                if self.floor:
                    rng = np.random.default_rng([seed, i, 7])
                    outcome["floor"].append(run_episode(env, start, goal, setting.eval_budget, lambda *_: rng.uniform(-1, 1, a))[0])
                if i < self.ceiling_pairs and mpc_cfg.planner != "grad":  # the simulator has no gradients
                    oracle = MPC(mpc_cfg, a, skip, seed=seed * 100_003 + i)
                    oracle.reset(SimulatorImagination(env, goal, skip, mpc_cfg.final_weight, mpc_cfg.final_only))
                    outcome["ceiling"].append(run_episode(env, start, goal, setting.eval_budget, oracle.act)[0])
                    ceiling_times += oracle.plan_times
                bar.update(1)
                bar.set_postfix(success=f"{np.mean(outcome['agent']):.2f}", refresh=False)
        bar.close()
        env.close()
        result = self._result(task, seeds, outcome, distances, agent_times, ceiling_times) | success_by_kind(outcome["agent"], kinds) | {
            "horizon": mpc_cfg.horizon, "execute": mpc_cfg.execute, "final_weight": mpc_cfg.final_weight,
            "final_only": mpc_cfg.final_only, "cost": mpc_cfg.cost,
            "goal_proprio": goal_proprio if model.cfg.proprio else None, "state": list(model.parts),
            "prior": str(prior) if prior is not None else None,
            "prior_kept": round(prior_kept / max(len(agent_times), 1), 4) if prior is not None else None,
            **dict(zip(("policy_alone", "policy_alone_ci95"), rate(outcome["policy"]))),
            "goal_distance_weight": mpc_cfg.distance_weight if goal_distance is not None else 0.0}
        if self.save:
            write_json(out / f"{task}_{self.setting}_{self.planner_name}.json", result)
            self._log(out, result, shown)
        if not self.json:
            print(plan_summary(result))
        return result

    @property
    def planner_name(self) -> str:
        """The planner as results and file names give it: cem, mppi, grad, or cem-lewm for a preset."""
        return with_preset(self.mpc, self.preset).planner + (f"-{self.preset}" if self.preset else "")

    def _options(self, setting, model) -> tuple[MPCConfig, str, Path | None]:
        """(the MPC config, the goal-proprio mode, the prior's run): each flag given wins, then the
        run's recorded recipe (`jepa quickstart`), then the setting's and the defaults."""
        recipe = load_plan_recipe(self.run)
        mpc = with_preset(self.mpc, self.preset)
        mpc_cfg = dataclasses.replace(mpc, cost=mpc.cost or recipe.get("cost", "all"),
                                      **{name: getattr(setting, name) if getattr(mpc, name) is None else getattr(mpc, name)
                                         for name in ("horizon", "final_weight", "distance_weight")})
        goal_proprio = self.goal_proprio or recipe.get("goal_proprio", "image")
        if goal_proprio not in ("image", "observed"):
            raise UserError(f"--goal-proprio must be image or observed, got {goal_proprio!r}")
        if goal_proprio == "observed" and not model.cfg.proprio:
            raise UserError(f"--goal-proprio observed needs a world model whose state holds proprio; {self.run} has none (train-wm --model.proprio)")
        prior = self.prior or (Path(self.run) if recipe.get("prior") and self.recipe_prior else None)
        return mpc_cfg, goal_proprio, prior

    @staticmethod
    def _prior_policy(prior: Path, task: str, image_size: int):
        """The prior's policy, or a one-line error when it cannot guide this planner."""
        policy, config = load_policy(prior)
        if config["task"] != task or policy.cfg.image_size != image_size:
            raise UserError(f"the policy in {prior} acts on {config['task']} at {policy.cfg.image_size}x{policy.cfg.image_size}, "
                            f"this world model plans {task} at {image_size}x{image_size}: train one with `jepa imitate` on {task} demonstrations")
        return policy

    def _result(self, task, seeds, outcome, distances, agent_times, ceiling_times) -> dict:
        success, ci = rate(outcome["agent"])
        floor, floor_ci = rate(outcome["floor"])
        ceiling, ceiling_ci = rate(outcome["ceiling"])
        times = np.array(agent_times)
        return {
            "task": task, "setting": self.setting, "planner": self.planner_name,
            "success_rate": success, "ci95": ci, "floor": floor, "floor_ci95": floor_ci,
            "ceiling": ceiling, "ceiling_ci95": ceiling_ci, "ceiling_episodes": len(outcome["ceiling"]),
            "mean_final_distance": round(float(np.mean(distances)), 4),
            "plan_time_s_median": round(float(np.median(times)), 5), "plan_time_s_p90": round(float(np.percentile(times, 90)), 5),
            "ceiling_plan_time_s_median": round(float(np.median(ceiling_times)), 5) if ceiling_times else None,
            "pairs": self.pairs, "seeds": seeds, "episodes": len(outcome["agent"]),
        }

    @staticmethod
    def _panel(obs: dict, env, goal: np.ndarray, mpc: MPC, retrieval: Retrieval) -> np.ndarray:
        """observation | goal | training frame nearest the current plan's imagined last latent."""
        imagined = np.zeros_like(obs["pixels"])
        if mpc.last_plan is not None:
            imagined = retrieval(mpc.imagination.predicted(mpc.last_plan)[-1:])[0]
        return np.concatenate([obs["pixels"], env.render_state(goal), imagined], 1)

    @staticmethod
    def _log(out: Path, result: dict, frames: np.ndarray | None) -> None:
        """Scalars, and the first episode's video as a strip of every 10th frame (TensorBoard's
        own video writer needs moviepy 1.0.3; the mp4 files are beside it)."""
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tb")) as writer:
            tag = f"{result['task']}_{result['setting']}_{result['planner']}"
            for key in ("success_rate", "floor", "ceiling", "plan_time_s_median", "mean_final_distance"):
                if result[key] is not None:
                    writer.add_scalar(f"eval/{tag}/{key}", result[key], 0)
            if frames is not None:
                writer.add_image(f"eval/{tag}/observation_goal_imagined", np.concatenate(list(frames[::10]), 0), dataformats="HWC")


def success_by_kind(outcomes: list[bool], kinds: list[str | None]) -> dict:
    """{"success_by_start": {kind: {"success_rate", "ci95", "episodes"}}} for tasks whose pairs
    come in kinds (`TaskEnv.pair_kind`: Cube's held or to-be-grasped cube, PushT's turn), else {}."""
    if all(kind is None for kind in kinds):
        return {}
    split = {}
    for kind in sorted(set(kinds)):
        chosen = [o for o, k in zip(outcomes, kinds) if k == kind]
        success, ci = rate(chosen)
        split[kind] = {"success_rate": success, "ci95": ci, "episodes": len(chosen)}
    return {"success_by_start": split}
