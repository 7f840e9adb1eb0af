"""What `jepa imitate --candidates K` keeps among runs of one recipe, and what that is worth.

`--candidates K --train.seed S` (without `--val-episodes`) trains seeds S..S+K-1 and keeps the
one with the lowest total loss on fixed windows, drawn with seed S, of its own demonstrations.
Training is deterministic on the CPU, so K runs trained one seed at a time (`jepa imitate ...
--train.seed S`) hold the same weights. For such runs,
each evaluated by `jepa policy-eval` at the execution it was trained with (its results under
`RUN/policy_eval/`, one evaluation seed per file or several), this prints:

- each run: its training seed, its own-demonstration total (`heldout_losses.py`'s own mode) and
  its success per evaluation file;
- per K: the kept run's success, over every evaluation episode pooled, averaged over every set of
  K runs (the expected figure of `--candidates K` over these seeds; K = 1 is the mean over runs).
  Every set is ranked on the windows of the lowest training seed given, where the command would
  draw them with its own first seed;
- the command itself when the K lowest training seeds are consecutive: the run it keeps, with its
  pooled success and the Wilson 95% interval.

    python -m experiments.benchmarks.candidate_choice --run runs/im14/push_clean_act_s0 ... [--k 3] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

from experiments.benchmarks.heldout_losses import own_losses
from experiments.imitate_commands import lowest_total
from experiments.policy_eval_commands import eval_result_name
from experiments.protocol import wilson
from experiments.runs import POLICY_EVAL_STAGE, load_policy
from infra.errors import UserError
from worldmodel.checkpoint import dataclass_from_dict
from worldmodel.trainer import TrainConfig

RECIPE = ("task", "data", "demonstrations", "val_episodes", "trim", "encoder_run")  # besides the model and the training config less its seed


def evaluations(run: Path, task: str, mode: str) -> dict[tuple[int, ...], dict]:
    """{evaluation seeds of a file: {"successes", "n", "episodes", "steps"}} of the run's policy-eval
    results at execution `mode` (results at other executions are left out)."""
    found: dict[tuple[int, ...], dict] = {}
    for path in sorted((run / POLICY_EVAL_STAGE).glob(eval_result_name(task, mode, ["*"], "*", "*"))):
        try:
            result = json.loads(path.read_text())
            seeds, entry = tuple(result["seeds"]), {"successes": round(result["success_rate"] * result["n"]), "n": result["n"],
                                                    "episodes": result["episodes"], "steps": result["steps"]}
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise UserError(f"{path} is not a policy-eval result ({error.__class__.__name__}): rerun `jepa policy-eval --run {run}`") from None
        if overlap := set(seeds) & {s for known in found for s in known}:
            raise UserError(f"{run} has two evaluations of seed {min(overlap)} at {mode} ({path.name} and another): keep one")
        found[seeds] = entry
    if not found:
        raise UserError(f"{run} has no policy-eval results at {mode}: run `jepa policy-eval --run {run}`")
    return found


def choose(runs: list[Path], k_max: int) -> dict:
    """{"runs": [{"run", "seed", "own_total", "success": {"0-1": rate, ...}}], "window_seed", "expected":
    {K: pooled success of the kept run averaged over every set of K runs}, "command": {"seeds",
    "kept_seed", "kept_run", "success_rate", "ci95", "episodes"} or None}."""
    if len(runs) < 2 or k_max < 1:
        raise UserError(f"give two or more runs of one recipe (got {len(runs)}) and --k of 1 or more (got {k_max})")
    loaded = [load_policy(run) for run in runs]  # scored on the windows of the demonstrations they learned from
    recipes = [[config.get(key) for key in RECIPE] + [config.get("successful_only", True), dataclasses.asdict(policy.cfg),
               dataclasses.replace(dataclass_from_dict(TrainConfig, config["train"]), seed=0)]
               for policy, config in loaded]  # as loaded: fields added since a run was trained take their defaults
    for run, recipe in zip(runs[1:], recipes[1:]):
        if recipe != recipes[0]:
            raise UserError(f"{run} and {runs[0]} differ in more than the training seed: compare runs of one recipe")
    if any(config["val_episodes"] for _, config in loaded):
        raise UserError("these runs held demonstrations out (--val-episodes), which `--candidates` ranks them on: this benchmark ranks runs "
                        "trained without them")
    seeds = [config["train"]["seed"] for _, config in loaded]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"two runs share a training seed ({seeds}): give each seed once")
    results = [evaluations(run, config["task"], policy.cfg.execution_mode) for run, (policy, config) in zip(runs, loaded)]
    budgets = {(entry["episodes"], entry["steps"]) for result in results for entry in result.values()}
    covered = [sorted(s for known in result for s in known) for result in results]
    if len(budgets) > 1 or any(c != covered[0] for c in covered):
        raise UserError(f"the runs' evaluations differ (evaluation seeds {covered}; episodes per seed and steps {sorted(budgets)}): "
                        "evaluate each on the same seeds with the same budget")
    window_seed = min(seeds)
    totals = {seed: own_losses(run, window_seed, pair)["total"] for seed, run, pair in zip(seeds, runs, loaded)}
    pooled = {seed: (sum(e["successes"] for e in result.values()), sum(e["n"] for e in result.values())) for seed, result in zip(seeds, results)}

    def kept_rate(subset: tuple[int, ...]) -> float:
        successes, n = pooled[lowest_total({seed: totals[seed] for seed in subset})]
        return successes / n

    expected = {}
    for k in range(1, min(k_max, len(runs)) + 1):
        sets = list(itertools.combinations(sorted(seeds), k))
        expected[k] = sum(map(kept_rate, sets)) / len(sets)
    lowest, command = sorted(seeds)[: min(k_max, len(runs))], None
    if lowest == list(range(lowest[0], lowest[0] + len(lowest))):  # what `--candidates len(lowest) --train.seed lowest[0]` trains
        kept = lowest_total({seed: totals[seed] for seed in lowest})
        successes, n = pooled[kept]
        command = {"seeds": lowest, "kept_seed": kept, "kept_run": str(runs[seeds.index(kept)]), "success_rate": round(successes / n, 4),
                   "ci95": list(wilson(successes, n)), "episodes": n}
    name = lambda known: "-".join(map(str, known))  # noqa: E731
    return {"runs": [{"run": str(run), "seed": seed, "own_total": round(totals[seed], 6),
                      "success": {name(known): round(e["successes"] / e["n"], 4) for known, e in sorted(result.items())}}
                     for run, seed, result in zip(runs, seeds, results)],
            "window_seed": window_seed, "expected": {k: round(v, 4) for k, v in expected.items()}, "command": command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, nargs="+", required=True, help="`jepa imitate --out RUN` folders of one recipe, one per training seed")
    parser.add_argument("--k", type=int, default=3, help="the largest K of --candidates to report")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    try:
        result = choose(args.run, args.k)
    except UserError as error:
        sys.exit(f"candidate_choice.py: error: {error}")
    if args.json:
        print(json.dumps(result))
        return
    for run in result["runs"]:
        per_file = ", ".join(f"evaluation seeds {known}: {100 * rate:.0f}%" for known, rate in run["success"].items())
        print(f"training seed {run['seed']}: own total {run['own_total']:.4g}; {per_file}  ({run['run']})")
    print(f"kept run's success (pooled), averaged over every set of K runs ranked on the windows of seed {result['window_seed']}: "
          + ", ".join(f"K = {k}: {100 * v:.1f}%" for k, v in result["expected"].items()))
    if (command := result["command"]) is None:
        print("no single --candidates command trains the lowest training seeds given (they are not consecutive)")
    else:
        print(f"--candidates {len(command['seeds'])} --train.seed {command['seeds'][0]} keeps seed {command['kept_seed']}: "
              f"{100 * command['success_rate']:.1f}% [{100 * command['ci95'][0]:.1f}, {100 * command['ci95'][1]:.1f}] over {command['episodes']} episodes")


if __name__ == "__main__":
    main()
