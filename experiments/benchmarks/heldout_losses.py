"""Score trained policies' losses on fixed windows of demonstrations: held out, or their own.

The mean of each loss of `jepa imitate` (action L1, waypoint L1, goal-waypoint L1, ...) on the
same fixed windows of a second collection, which none of the runs learned from (`agents/demonstrations.Demonstrations.scorer`, what `jepa imitate
--val-episodes` logs during training). Where two runs of one recipe fit their demonstrations
alike and differ here, one memorised them. Without --data, each run is scored on the
demonstrations it learned from (windows drawn with --seed): what `jepa imitate --candidates K`
ranks its training seeds by when no demonstrations are held out.

    jepa collect --task metaworld:push-v3 --policy noisy-expert --episodes 30 --seed 1 --out VAL
    python -m experiments.benchmarks.heldout_losses --data VAL --run R1 R2 ...
    python -m experiments.benchmarks.heldout_losses --run R1 R2 ... --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agents.demonstrations import Demonstrations
from envs.dataset import EpisodeDataset
from experiments.runs import POLICY_STAGE, load_policy
from infra.errors import UserError


def require_finished(run: Path) -> None:
    """A one-line error unless `run` holds a finished policy."""
    if not (run / POLICY_STAGE / "metrics.json").exists():
        raise UserError(f"{run} has not finished training: rerun its `jepa imitate` command")


def own_losses(run: Path, seed: int, loaded: tuple | None = None) -> dict[str, float]:
    """A finished run's losses on fixed windows (drawn with `seed`) of the demonstrations it learned
    from; `loaded`: its (policy, config) if already loaded."""
    policy, config = loaded or load_policy(run)
    dataset = EpisodeDataset(config["data"])
    demos = Demonstrations(dataset, config.get("successful_only", True), config["val_episodes"], config["trim"])
    if len(demos.episodes) != config["demonstrations"]:
        raise UserError(f"{run} learned from {config['demonstrations']} demonstrations of {config['data']}, which now holds {len(demos.episodes)} such")
    require_finished(run)
    return demos.scorer(policy.windows_on(demos), seed, held_out=False)(policy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="held-out demonstrations (`jepa collect` with a seed the runs' data did not use); "
                        "without it, each run's own demonstrations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scored windows (`--candidates` uses its first training seed)")
    parser.add_argument("--run", type=Path, nargs="+", required=True, help="`jepa imitate --out RUN` folders (of the --data's task)")
    args = parser.parse_args()
    try:
        held_out = EpisodeDataset(args.data) if args.data is not None else None
        for run in args.run:
            if held_out is None:  # the demonstrations it learned from
                losses = own_losses(run, args.seed)
            else:
                policy, config = load_policy(run)
                if config["task"] != held_out.task:
                    raise UserError(f"{run} learned {config['task']}, the held-out demonstrations are {held_out.task}")
                if Path(config["data"]).resolve() == args.data.resolve():
                    raise UserError(f"{run} learned from {args.data}: score it on another collection")
                require_finished(run)
                demos = Demonstrations(held_out, trim=config["trim"])
                losses = demos.scorer(policy.windows_on(demos), args.seed, held_out=False)(policy)
            trained = json.loads((run / POLICY_STAGE / "metrics.json").read_text())
            print(json.dumps({"run": str(run), "held_out" if held_out is not None else "own": {k: round(v, 6) for k, v in losses.items()},
                              "training_last_batch": {k.removeprefix("loss/"): round(v, 4) for k, v in trained.items() if k.startswith("loss/")}}))
    except UserError as error:
        sys.exit(f"heldout_losses.py: error: {error}")


if __name__ == "__main__":
    main()
