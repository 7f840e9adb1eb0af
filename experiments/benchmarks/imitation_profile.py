"""Where a `jepa imitate` run's time goes, on the CPU or a GPU: a short run (into a temporary
folder, ACT by default) and its training steps/s, then a shorter one under torch.profiler and the
operators that took the most time on the host and, on CUDA, on the device. Steps/s are end to
end (the run's training loop, checkpoints included); the trainer's `perf/data_fraction` (the
share of the wall spent drawing batches) comes with it.

    python -m experiments.benchmarks.imitation_profile --data DEMOS [--device cuda] [--steps 300] [-- IMITATE OPTIONS]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from envs.dataset import EpisodeDataset
from experiments.cli import main as jepa
from infra.errors import UserError


def imitate(data: str, device: str, steps: int, extra: list[str], out: Path) -> dict:
    """Train a policy for `steps` steps into `out`; its final metrics (or exit on a `jepa` error)."""
    argv = ["imitate", "--data", data, "--out", str(out), "--policy", "act", "--train.steps", str(steps),
            "--train.device", device, "--train.checkpoint-every", str(steps), *extra]
    with contextlib.redirect_stdout(io.StringIO()):  # its closing line; errors go to stderr
        code = jepa(argv)
    if code != 0:
        sys.exit(f"imitation_profile.py: error: jepa {' '.join(argv)} failed (above)")
    return json.loads((out / "policy" / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="demonstrations (`jepa collect --policy expert`)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=300, help="steps of the timed run (the profiled one runs a sixth of them)")
    parser.add_argument("--rows", type=int, default=15, help="operators listed per table")
    parser.add_argument("imitate", nargs="*", help="further `jepa imitate` options, after --")
    args = parser.parse_args()
    if args.steps < 30:
        parser.error(f"--steps must be at least 30, got {args.steps}")
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        parser.error(f"--device must be cpu or cuda (with a GPU that torch sees), got {args.device}")
    try:
        EpisodeDataset(args.data)  # a bad path fails here, in one line
    except UserError as error:
        sys.exit(f"imitation_profile.py: error: {error}")
    with tempfile.TemporaryDirectory() as folder:
        metrics = imitate(args.data, args.device, args.steps, args.imitate, Path(folder) / "timed")
        print(json.dumps({"device": args.device, "steps": args.steps, "wall_s": metrics["wall_s_this_session"],
                          "steps_per_s": round(args.steps / max(metrics["wall_s_this_session"], 0.1), 1),
                          "data_fraction_last_log": round(metrics["perf/data_fraction"], 3)}))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        with profile(activities=activities) as profiler:
            imitate(args.data, args.device, args.steps // 6, args.imitate, Path(folder) / "profiled")
    averages = profiler.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if args.device == "cuda":
        print(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
