"""`jepa quickstart`: the main job in one command. On a machine with no data and no GPU it collects
episodes, pretrains the encoder, trains the world model and its learned goal distance, checks its
rollouts, plans toward goal images under the evaluation protocol, and writes a run folder with a
report. Each stage is the same code as its own command; a rerun reuses the data and the trained
encoder, world model and goal distance (the evaluations run again). It evaluates every setting of
the task (TwoRoom: default and cross-room)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agents.mpc import MPCConfig, with_preset
from envs import TASKS
from envs.dataset import FILENAME as DATASET_FILE
from envs.dataset import EpisodeDataset
from experiments.data_commands import Collect
from experiments.distance_commands import TrainDistance
from experiments.imitate_commands import ImitateMoments
from experiments.plan_commands import PlanEval
from experiments.pretrain_commands import Pretrain
from experiments.protocol import SETTINGS, parse_seeds
from experiments.report import plan_summary
from experiments.rollout_eval import RolloutEval
from experiments.runs import PLAN_RECIPE
from experiments.wm_commands import TrainWM
from infra.errors import UserError
from infra.files import write_json, write_text
from worldmodel.trainer import TrainConfig
from worldmodel.world_model import WorldModelConfig

# where the ceiling's rollouts step the simulator in Python (`GoalStateTaskEnv.rollout`): about 15 s
# (gym-pusht) and nearly 3 minutes (OGBench, its IK controller) per ceiling episode with the default planner
CEILING_PAIRS = {"gym-pusht:push-t": 3, "ogbench:cube-single": 1}
EPISODES = {"two-room": 200, "reacher": 200, "push-t": 200, "cube": 200, "dmc:reacher-easy": 200, "gym-pusht:push-t": 200,
            "ogbench:cube-single": 200}  # episodes collected per task (policy "mixed")


@dataclass
class Quickstart:
    """Collect, pretrain, train the world model, plan, and report: the whole pipeline on one task."""

    task: str = "two-room"
    """Task: two-room, reacher, push-t, cube, or one of the published systems' own: dmc:reacher-easy,
    gym-pusht:push-t, ogbench:cube-single."""
    out: Path = Path("runs/quickstart")
    """Run folder (data/, encoder/, world_model/, plan_eval/, report.md, metrics.json)."""
    episodes: int = 0
    """Episodes to collect, half noisy-expert and half wandering (0: the task's default, see EPISODES)."""
    pretrain_steps: int = 500
    """Encoder pretraining steps."""
    wm_steps: int = 3000
    """World-model training steps."""
    distance_steps: int = 4000
    """Goal-distance training steps (`jepa train-distance`, for tasks whose settings plan with it:
    TwoRoom; 0: plan with the latent distance alone)."""
    prior_steps: int = 0
    """Training steps of the prior's policy, where the recipe has one (0: the moments policy's default)."""
    planner: str = "cem"
    """cem, mppi or grad."""
    preset: str | None = None
    """A published planner instead (`jepa plan-eval --preset`): lewm."""
    pairs: int = 50
    """Start/goal pairs per seed, for every setting of the task."""
    ceiling_pairs: int | None = None
    """Pairs per seed the simulator ceiling runs on (None: 10, fewer where the simulator steps in
    Python, see CEILING_PAIRS)."""
    seeds: str = "0,1,2"
    """Comma-separated evaluation seeds."""
    workers: int = 2
    """Collection worker processes."""
    recipe: bool = True
    """Plan with the task's measured recipe (`TaskEnv.planning_recipe`: the world-model state, the
    cost, a policy prior); off: the learned latent alone, every channel weighed."""
    json: bool = False
    """End with the plan-eval JSON of the default setting, plus wall_s, stage_wall_s and settings (every setting's JSON)."""

    def __call__(self) -> dict:
        if self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        parse_seeds(self.seeds)  # bad evaluation and training options fail now, not after the training stages
        if self.pairs < 1:
            raise UserError(f"--pairs must be positive, got {self.pairs}")
        if self.ceiling_pairs is not None and self.ceiling_pairs < 0:
            raise UserError(f"--ceiling-pairs must be 0 or more, got {self.ceiling_pairs}")
        mpc = MPCConfig(planner=self.planner, distance_weight=None if self.distance_steps else 0.0)
        with_preset(mpc, self.preset)  # an unknown preset fails now, not after the training stages
        ceiling_pairs = CEILING_PAIRS.get(self.task, 10) if self.ceiling_pairs is None else self.ceiling_pairs
        distance = TrainDistance(run=self.out, json=True)  # its default training, for --distance-steps steps
        distance = dataclasses.replace(distance, train=dataclasses.replace(distance.train, steps=self.distance_steps)) if self.distance_steps else None
        began, data = time.perf_counter(), self.out / "data"
        if (data / DATASET_FILE).exists() and EpisodeDataset(data).task != self.task:
            raise UserError(f"{data} holds {EpisodeDataset(data).task} episodes, not {self.task}: choose another --out")
        timings = {}

        def stage(name: str, run):
            print(f"== {name}", file=sys.stderr)
            tick = time.perf_counter()
            value = run()
            timings[name] = round(time.perf_counter() - tick, 1)
            return value

        if not (data / DATASET_FILE).exists():
            stage("collect", Collect(task=self.task, policy="mixed", episodes=self.episodes or EPISODES[self.task], out=data,
                                       workers=self.workers, json=True))
        recipe = TASKS[self.task].env_class.planning_recipe if self.recipe else {}
        stage("pretrain", Pretrain(data=data, out=self.out, train=TrainConfig(steps=self.pretrain_steps, lr=2e-3), json=True))
        stage("train-wm", TrainWM(data=data, encoder=self.out, out=self.out, model=WorldModelConfig(**recipe.get("world_model", {})),
                                  train=TrainConfig(steps=self.wm_steps, batch_size=128, checkpoint_every=1000), json=True))
        if recipe.get("prior"):
            demos = self.out / "demos"
            if not (demos / DATASET_FILE).exists():
                stage("collect demonstrations", Collect(task=self.task, policy="expert", episodes=recipe["prior"], out=demos,
                                                        workers=self.workers, json=True))
            imitate = ImitateMoments(data=demos, out=self.out, json=True, candidates=1)  # one run, a third of the vote's training time
            if self.prior_steps:
                imitate.train = dataclasses.replace(imitate.train, steps=self.prior_steps)
            stage("imitate", imitate)
        write_json(self.out / PLAN_RECIPE, {"cost": recipe.get("cost", "all"), "goal_proprio": recipe.get("goal_proprio", "image"),
                                            "prior": bool(recipe.get("prior"))})
        if distance is not None and any(setting.distance_weight for setting in SETTINGS[self.task].values()):
            stage("train-distance", distance)
        rollout = stage("rollout-eval", RolloutEval(run=self.out, data=data, json=True))
        results = {name: stage(f"plan-eval {name}", PlanEval(run=self.out, setting=name, pairs=self.pairs, seeds=self.seeds,
                                                             mpc=mpc, preset=self.preset, ceiling_pairs=ceiling_pairs, json=True))
                   for name in SETTINGS[self.task]}
        total = round(time.perf_counter() - began, 1)
        write_report(self.out, self.task, results, rollout, timings, total)
        if not self.json:
            print(f"\njepa quickstart {self.task}: {total:.0f} s (stages: {timings})")
            for result in results.values():
                print(plan_summary(result))
            print(f"report: {self.out / 'report.md'}")
        return results["default"] | {"wall_s": total, "stage_wall_s": timings, "settings": results}


def write_report(out: Path, task: str, results: dict, rollout: dict, timings: dict, total: float) -> None:
    """report.md with a results table and plot (success with intervals; rollout error by horizon), and metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(results)
    for offset, (key, label) in enumerate([("floor", "random floor"), ("success_rate", "world model + planner"), ("ceiling", "simulator ceiling")]):
        values = [results[n][key] or 0.0 for n in names]
        lows = [v - ((results[n]["ci95"] if key == "success_rate" else results[n][f"{key}_ci95"]) or [v, v])[0] for n, v in zip(names, values)]
        highs = [((results[n]["ci95"] if key == "success_rate" else results[n][f"{key}_ci95"]) or [v, v])[1] - v for n, v in zip(names, values)]
        left.bar([i + 0.27 * (offset - 1) for i in range(len(names))], values, 0.25, yerr=[lows, highs], capsize=3, label=label)
    left.set_xticks(range(len(names)), names)
    left.set_ylim(0, 1.05)
    left.set_ylabel("success (Wilson 95%)")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    left.set_title(f"{task}: planning toward a goal image")
    for key, label in [("latent_error", "world model"), ("copy_last_error", "copy last frame"), ("shuffled_action_error", "shuffled actions")]:
        right.plot(rollout["env_steps"], rollout[key], marker="o", label=label)
    right.set_xlabel("env steps ahead")
    right.set_ylabel("latent error (standardised MSE)")
    right.legend(fontsize=7)
    right.set_title("open-loop rollouts, held-out episodes")
    fig.tight_layout()
    fig.savefig(out / ".report.tmp.png", dpi=110)
    os.replace(out / ".report.tmp.png", out / "report.png")
    plt.close(fig)
    pct = lambda v: "n/a" if v is None else f"{v:.0%}"  # noqa: E731
    rows = "\n".join(f"| {n} | {pct(r['success_rate'])} [{pct(r['ci95'][0])}, {pct(r['ci95'][1])}] | {pct(r['floor'])} | "
                     f"{pct(r['ceiling'])} ({r['ceiling_episodes']} ep.) | {1000 * r['plan_time_s_median']:.1f} / {1000 * r['plan_time_s_p90']:.1f} |"
                     for n, r in results.items())
    k = rollout["env_steps"].index(25) if 25 in rollout["env_steps"] else -1
    text = f"""# jepa quickstart: {task}

Total {total:.0f} s on this machine; stages (s): {timings}.

| setting | success (95% CI) | random floor | simulator ceiling | plan ms (median / p90) |
|---|---|---|---|---|
{rows}

Recipe: state {' + '.join(results['default']['state'])}, cost on {results['default']['cost']} channels, goal proprio
{results['default']['goal_proprio'] or 'n/a'}, policy prior {'yes (the prior alone: ' + pct(results['default']['policy_alone']) + ')' if results['default']['prior'] else 'no'}.

Episodes: {results['default']['episodes']} per setting ({results['default']['pairs']} pairs x seeds {results['default']['seeds']}), planner {results['default']['planner']}.

Open-loop rollout at {rollout['env_steps'][k]} env steps: latent error {rollout['latent_error'][k]:.4f} (copy-last {rollout['copy_last_error'][k]:.4f},
shuffled actions {rollout['shuffled_action_error'][k]:.4f}); probe-decoded position error {rollout['position_error'][k]:.4f}
against a success tolerance of {rollout['success_tolerance']:g}.

![results](report.png)

Videos: `plan_eval/*.mp4` (observation | goal | imagined end of the current plan, nearest training frame),
`world_model/rollout.mp4` (real top, imagined bottom). TensorBoard: `tensorboard --logdir {out}`.
"""
    write_text(out / "report.md", text)
    write_json(out / "metrics.json", {"task": task, "plan_eval": results, "rollout_eval": rollout, "stage_wall_s": timings, "wall_s": total})
