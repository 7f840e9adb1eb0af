"""The pretraining objectives side by side (V-JEPA's EMA teacher, DMT-JEPA, SIGReg, VICReg,
MC-JEPA): same data, same steps, probe R2 per state variable on held-out episodes and collapse
statistics, with the random-init and raw-pixel floors, through the real `jepa` commands.

    python -m experiments.benchmarks.pretrain_objectives [--task two-room] [--episodes 100] [--steps 500]
    python -m experiments.benchmarks.pretrain_objectives --data runs/ptm --objectives vicreg,mc-jepa --out runs/variants
    python -m experiments.benchmarks.pretrain_objectives --data runs/ptm_depth --objectives 3d-jepa,t-jepa --pretrain-args "--model.state-moments 4"

Collects a noisy-expert dataset (seed 0) unless --data is given, pretrains each objective with
the default config into OUT/bench_<task>_<objective>_<steps> (a finished run is reused), and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import torch

from envs.dataset import EpisodeDataset
from experiments.cli import main as cli
from experiments.data_commands import Collect
from experiments.pretrain_commands import Probe
from experiments.report import markdown_table


def run_json(argv: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli([*argv, "--json"]) == 0, argv
    return json.loads(out.getvalue().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="two-room")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--objectives", default="vicreg,sigreg,vjepa")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs"), help="folder of the runs (OUT/bench_<task>_<objective>_<steps>)")
    parser.add_argument("--pretrain-args", default="", help="more `jepa pretrain` arguments for every objective, e.g. "
                        "'--model.state-moments 4' (t-jepa's colour moments; the image objectives ignore it)")
    args = parser.parse_args()
    data = args.data or Path(f"runs/bench_{args.task}_data")
    if args.data is None and not (data / "episodes.h5").exists():
        Collect(task=args.task, policy="noisy-expert", episodes=args.episodes, out=data, json=True)()
    task, rows = EpisodeDataset(data).task, []
    for objective in args.objectives.split(","):
        run = args.out / f"bench_{task.replace(':', '_')}_{objective}_{args.steps}"
        start = time.perf_counter()
        metrics = run_json(["pretrain", "--data", str(data), "--out", str(run), "--objective", objective,
                            "--train.steps", str(args.steps), *args.pretrain_args.split()])
        wall = time.perf_counter() - start
        probe = Probe(run=run, data=data, json=True)()
        rows.append({"objective": objective, "steps": args.steps, "wall_s": round(wall), "position_r2": probe["position_r2"],
                     "features": probe["features"], "random_init": probe["position_r2_random_init"], "pixels": probe["position_r2_pixels"],
                     "std_mean": round(metrics["collapse/std_mean"], 4), "effective_rank": round(metrics["collapse/effective_rank"], 1),
                     "collapsed": metrics["collapsed"], "r2": probe["r2"], "input_r2": probe.get("vector_r2") or probe.get("points_r2")})
    print(f"# {task}, {data}, {args.steps} steps each, batch 64, {torch.get_num_threads()} CPU threads")
    for r in rows:
        r["r2_features"] = f"{r['position_r2']} ({r['features']})"
        r["variables"] = ", ".join(f"{name} {value:.2f}" for name, value in r["r2"].items())
        r["inputs"] = ", ".join(f"{name} {value:.2f}" for name, value in r["input_r2"].items()) if r["input_r2"] else "(pixels)"
    print(markdown_table(rows, {"objective": "objective", "steps": "steps", "wall_s": "wall s", "r2_features": "position R2 (features)",
                                "variables": "R2 per variable (the same features)",
                                "inputs": "its input read as it is (t-jepa: the state vector; 3d-jepa: the point maps)",
                                "random_init": "random-init floor", "pixels": "pixel floor", "std_mean": "token std",
                                "effective_rank": "effective rank", "collapsed": "collapsed"}))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
