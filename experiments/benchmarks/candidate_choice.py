"""What `jepa imitate --candidates K` keeps among runs of one recipe, and what that is worth.

`--candidates K --train.seed S` trains seeds S..S+K-1 and keeps the one with the lowest loss on
fixed windows (drawn with seed S) of its own demonstrations. Training is deterministic on the CPU,
so K runs trained one seed at a time (`jepa imitate ... --train.seed S`) hold the same weights
(BENCHMARKS.md, Meta-World session 19). For such runs, each evaluated by `jepa policy-eval` (the
results it writes under `RUN/policy_eval/`, one file per evaluation seed or several seeds per
file), this prints:

- each run: its training seed, its own-demonstration total (`heldout_losses.py`'s own mode, the
  windows of the lowest training seed) and its success per evaluation seed;
- per K: the kept run's success averaged over every set of K runs (the expected figure of
  `--candidates K` over these seeds), next to the mean over runs (K = 1);
- the command itself for the K lowest training seeds: the run it keeps, with its success over
  every evaluation episode pooled and the Wilson 95% interval.

    python experiments/benchmarks/candidate_choice.py --run runs/im14/push_clean_act_s0 ... [--k 3] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from envs.errors import UserError  # noqa: E402
from experiments.benchmarks.heldout_losses import own_losses  # noqa: E402
from experiments.imitate_commands import load_policy  # noqa: E402
from experiments.protocol import wilson  # noqa: E402


RECIPE = ("task", "data", "demonstrations", "val_episodes", "trim", "encoder_run")  # with the model and `train` less its seed


def successes(run: Path, model: dict) -> dict[int, tuple[float, float]]:
    """{evaluation seed: (successes, episodes)} from the run's `policy_eval/*.json`, at the
    execution its config (`model`) names: chunks executed, or ensembled."""
    found: dict[int, tuple[float, float]] = {}
    for path in sorted((run / "policy_eval").glob("*.json")):
        result = json.loads(path.read_text())
        if result["execute"] != model["execute"] or result["ensemble"] != model["ensemble"]:
            continue  # another execution of the same policy
        seeds = result["seeds"]
        if set(seeds) & set(found):
            raise UserError(f"{run} has two evaluations of seed {min(set(seeds) & set(found))} ({path.name} and another): keep one")
        for seed in seeds:  # a file of several seeds: its episodes counted under each (pooled figures stay exact)
            found[seed] = (round(result["success_rate"] * result["n"]) / len(seeds), result["n"] / len(seeds))
    if not found:
        raise UserError(f"{run} has no policy-eval results: run `jepa policy-eval --run {run}`")
    return found


def choose(runs: list[Path], k_max: int) -> dict:
    """The figures of the module docstring, as a dict."""
    if len(runs) < 2 or k_max < 1:
        raise UserError(f"give two or more runs of one recipe (got {len(runs)}) and --k of 1 or more (got {k_max})")
    loaded = [load_policy(run) for run in runs]
    configs = [config for _, config in loaded]
    recipes = [[c.get(key) for key in RECIPE] + [dataclasses.asdict(policy.cfg), {k: v for k, v in c["train"].items() if k != "seed"}]
               for policy, c in loaded]  # the model as loaded: fields added since a run was trained take their defaults
    for run, recipe in zip(runs[1:], recipes[1:]):
        if recipe != recipes[0]:
            raise UserError(f"{run} and {runs[0]} differ in more than the training seed: compare runs of one recipe")
    seeds = [c["train"]["seed"] for c in configs]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"two runs share a training seed ({seeds}): give each seed once")
    evaluations = [successes(run, config["model"]) for run, config in zip(runs, configs)]
    if any(e.keys() != evaluations[0].keys() for e in evaluations):
        raise UserError("the runs were evaluated on different seeds: evaluate each on the same ones")
    window_seed = min(seeds)
    totals = [own_losses(run, window_seed)["total"] for run in runs]
    pooled = [(sum(s for s, _ in e.values()), sum(n for _, n in e.values())) for e in evaluations]
    rate = lambda i: pooled[i][0] / pooled[i][1]
    kept = lambda subset: min(subset, key=lambda i: totals[i])
    expected = {}
    for k in range(1, min(k_max, len(runs)) + 1):
        subsets = list(itertools.combinations(range(len(runs)), k))
        expected[k] = sum(rate(kept(s)) for s in subsets) / len(subsets)
    lowest = sorted(range(len(runs)), key=lambda i: seeds[i])[: min(k_max, len(runs))]
    i = kept(lowest)
    successes_kept, episodes_kept = round(pooled[i][0]), round(pooled[i][1])
    return {"runs": [{"run": str(run), "seed": seed, "own_total": round(total, 6), "success": {s: round(c / n, 4) for s, (c, n) in sorted(e.items())}}
                     for run, seed, total, e in zip(runs, seeds, totals, evaluations)],
            "window_seed": window_seed, "expected": {k: round(v, 4) for k, v in expected.items()},
            "command": {"seeds": sorted(seeds[j] for j in lowest), "kept_seed": seeds[i], "kept_run": str(runs[i]),
                        "success_rate": round(successes_kept / episodes_kept, 4), "ci95": list(wilson(successes_kept, episodes_kept)), "episodes": episodes_kept}}


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
        per_seed = ", ".join(f"seed {s}: {100 * v:.0f}%" for s, v in run["success"].items())
        print(f"training seed {run['seed']}: own total {run['own_total']:.4g}; success {per_seed}  ({run['run']})")
    print("kept run's success averaged over every set of K runs: " + ", ".join(f"K = {k}: {100 * v:.1f}%" for k, v in result["expected"].items()))
    command = result["command"]
    print(f"--candidates {len(command['seeds'])} --train.seed {command['seeds'][0]} (seeds {command['seeds']}, windows of seed {result['window_seed']}) "
          f"keeps seed {command['kept_seed']}: {100 * command['success_rate']:.1f}% [{100 * command['ci95'][0]:.1f}, {100 * command['ci95'][1]:.1f}] "
          f"over {command['episodes']} episodes")


if __name__ == "__main__":
    main()
