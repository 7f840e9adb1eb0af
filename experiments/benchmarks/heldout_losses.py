"""Score trained policies on demonstrations none of them learned from: the mean of each loss of
`jepa imitate` (action L1, waypoint L1, goal-waypoint L1, ...) on the same fixed windows of a
second collection (`experiments/imitate_commands.held_out_scorer`, what `jepa imitate
--val-episodes` logs during training). Where two runs of one recipe fit their demonstrations
alike and differ here, one memorised them.

    jepa collect --task metaworld:push-v3 --policy noisy-expert --episodes 30 --seed 1 --out VAL
    python experiments/benchmarks/heldout_losses.py --data VAL --run R1 R2 ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from envs.dataset import EpisodeDataset  # noqa: E402
from envs.errors import UserError  # noqa: E402
from experiments.imitate_commands import POLICY_STAGE, demonstration_episodes, held_out_scorer, load_policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="held-out demonstrations (`jepa collect` with a seed the runs' data did not use)")
    parser.add_argument("--run", type=Path, nargs="+", required=True, help="`jepa imitate --out RUN` folders of the data's task")
    args = parser.parse_args()
    try:
        dataset = EpisodeDataset(args.data)
        episodes = demonstration_episodes(dataset)[0]
        for run in args.run:
            policy, config = load_policy(run)
            if config["task"] != dataset.task:
                raise UserError(f"{run} learned {config['task']}, the held-out demonstrations are {dataset.task}")
            if Path(config["data"]).resolve() == args.data.resolve():
                raise UserError(f"{run} learned from {args.data}: score it on another collection")
            if not (run / POLICY_STAGE / "metrics.json").exists():
                raise UserError(f"{run} has not finished training: rerun its `jepa imitate` command")
            losses = held_out_scorer(dataset, episodes, policy.cfg, config["trim"], seed=0)(policy)
            trained = json.loads((run / POLICY_STAGE / "metrics.json").read_text())
            print(json.dumps({"run": str(run), "held_out": {k: round(v, 4) for k, v in losses.items()},
                              "training_last_batch": {k.removeprefix("loss/"): round(v, 4) for k, v in trained.items() if k.startswith("loss/")}}))
    except UserError as error:
        sys.exit(f"heldout_losses.py: error: {error}")


if __name__ == "__main__":
    main()
