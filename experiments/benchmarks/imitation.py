"""The imitation table of BENCHMARKS.md for one task: record demonstrations, train the policies
on them (ACT-JEPA, ACT-style and BC by default, with the same network, steps and batch), and
evaluate each on the same fresh episodes (success with its Wilson interval, random floor,
demonstrator). With several `--demo-seeds`, each policy is trained on each demonstration set
(one collection seed each) and the table gives each set's success, their median, and the
interval pooled over every set's episodes: how much of a figure belongs to the policy and how
much to the set. Demonstrations, finished trainings and evaluations already in OUT (the same
seeds and episodes) are reused, so an interrupted run continues.

    python -m experiments.benchmarks.imitation --task cube --out runs/im/cube [--demos 100] [--seeds 0,1,2]
    python -m experiments.benchmarks.imitation --task push-t --out runs/im/pt_sets --policies moments --demo-seeds 1,2,3
    python -m experiments.benchmarks.imitation --task metaworld:reach-v3 --demos 50 --seeds 0 --demonstrator noisy-expert
    python -m experiments.benchmarks.imitation --task metaworld:push-v3 --demos 50 --seeds 0 --demonstrator noisy-expert --waypoints 24 40 --goal-waypoints -1 --goal-encoder
    python -m experiments.benchmarks.imitation --task push-t --out runs/im/pt
    (--candidates K trains K training seeds and keeps the best, or with the moments policy's default --vote acts by their vote)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from envs.dataset import EpisodeDataset
from experiments.data_commands import Collect
from experiments.imitate_commands import COMMANDS, Imitate
from experiments.policy_eval_commands import PolicyEval, eval_result_name
from experiments.protocol import parse_seeds, wilson
from experiments.report import markdown_table
from infra.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--demos", type=int, default=100, help="expert demonstrations")
    parser.add_argument("--demonstrator", default="expert", help="collect policy: expert, or noisy-expert (the expert's "
                        "corrections from perturbed states, as in DART)")
    parser.add_argument("--policies", default="act-jepa,act,bc")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per seed")
    parser.add_argument("--seeds", default="0,1,2", help="evaluation seeds")
    parser.add_argument("--no-baselines", action="store_true", help="skip the random floor and the demonstrator (once measured: "
                        "the demonstrator re-runs the scripted expert on every run's episodes)")
    parser.add_argument("--demo-seeds", default="0", help="collection seeds, one demonstration set each (OUT/demos_sS)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: imitate's default)")
    parser.add_argument("--waypoints", type=int, nargs="+", default=(), help="imitate's --model.waypoints for every policy "
                        "(steps of each demonstration whose proprio the frame vector predicts; -1: its last frame)")
    parser.add_argument("--goal-waypoints", type=int, nargs="+", default=(), help="imitate's --model.goal-waypoints for every "
                        "policy (the same, predicted from the goal image's vector)")
    parser.add_argument("--goal-encoder", action="store_true", help="imitate's --model.goal-encoder: the goal image's own encoder")
    parser.add_argument("--no-square-symmetry", action="store_true", help="imitate's --model.no-square-symmetry: windows as recorded, "
                        "not turned by the square's symmetries where the task declares them (push-t)")
    parser.add_argument("--waypoint-weight", type=float, default=None, help="imitate's --model.waypoint-weight (default: imitate's default)")
    parser.add_argument("--val-episodes", type=int, default=0, help="imitate's --val-episodes: the last N demonstrations held out and scored")
    parser.add_argument("--candidates", type=int, default=None, help="imitate's --candidates: train K training seeds and keep the one with the "
                        "lowest loss (on the held-out demonstrations with --val-episodes, else on those it learned from), or their vote "
                        "where imitate votes; default: imitate's (3, voted, for moments; 1 for the others)")
    args = parser.parse_args()
    try:
        table(args)
    except UserError as error:
        sys.exit(f"imitation.py: error: {error}")


def imitation(args: argparse.Namespace, policy: str, demo_seed: int) -> Imitate:
    """The `jepa imitate` of one policy of the table on one demonstration set, its options checked now (before any collection)."""
    if policy not in COMMANDS:
        raise UserError(f"policy must be one of {', '.join(COMMANDS)}, got {policy!r}")
    imitate = dataclasses.replace(COMMANDS[policy], data=args.out / f"demos_s{demo_seed}", out=args.out / f"{policy}_s{demo_seed}", json=True,
                                  val_episodes=args.val_episodes, **({} if args.candidates is None else {"candidates": args.candidates}))
    waypoints = {"waypoints": tuple(args.waypoints), "goal_waypoints": tuple(args.goal_waypoints), "goal_encoder": args.goal_encoder}
    waypoints |= {"waypoint_weight": args.waypoint_weight} if args.waypoint_weight is not None else {}
    if policy == "moments" and (args.waypoints or args.goal_waypoints or args.goal_encoder or args.waypoint_weight is not None):
        raise UserError("the moments policy has no image encoder: drop --waypoints, --goal-waypoints, --goal-encoder and --waypoint-weight")
    imitate.model = dataclasses.replace(imitate.model, square_symmetry=not args.no_square_symmetry, **({} if policy == "moments" else waypoints))
    if args.steps is not None:
        imitate.train = dataclasses.replace(imitate.train, steps=args.steps)
    return imitate


def demonstrations(args: argparse.Namespace, demo_seed: int) -> None:
    """Collect the demonstration set of `demo_seed` into OUT/demos_sS, unless it is there."""
    data = args.out / f"demos_s{demo_seed}"
    if not (data / "episodes.h5").exists():
        Collect(task=args.task, policy=args.demonstrator, episodes=args.demos, out=data, seed=demo_seed,
                workers=2 if args.task.startswith("metaworld:") else 1)()
    dataset = EpisodeDataset(data)
    held = (dataset.task, dataset.num_episodes, dataset.attrs["policy"], int(dataset.attrs["seed"]))
    if held != (args.task, args.demos, args.demonstrator, demo_seed):
        raise UserError(f"{data} holds {held[1]} {held[0]} demonstrations by {held[2]} (seed {held[3]}), not {args.demos} {args.task} by "
                        f"{args.demonstrator} (seed {demo_seed}): choose another --out")


def evaluation(imitate: Imitate, args: argparse.Namespace, seeds: list[int]) -> dict:
    """The policy-eval result of a trained run on the table's evaluation episodes (reused when there)."""
    done = sorted((imitate.out / "policy_eval").glob(eval_result_name(args.task, "execute*", seeds, args.episodes, "*")))
    return json.loads(done[0].read_text()) if done else PolicyEval(run=imitate.out, episodes=args.episodes, seeds=args.seeds, baselines=not args.no_baselines,
                                                                            json=True)()


def table(args: argparse.Namespace) -> None:
    seeds, demo_seeds, policies = parse_seeds(args.seeds), parse_seeds(args.demo_seeds), args.policies.split(",")
    for policy in policies:
        imitation(args, policy, demo_seeds[0])
    pct = lambda rate: f"{rate:.1%}"  # noqa: E731
    rows = []
    for policy in policies:
        results, kept, wall = [], [], 0.0
        for demo_seed in demo_seeds:
            demonstrations(args, demo_seed)
            imitate = imitation(args, policy, demo_seed)
            start = time.perf_counter()
            metrics = imitate()
            kept.append("vote" if "voters" in metrics else str(metrics.get("selected_seed", imitate.train.seed)))
            wall += time.perf_counter() - start
            results.append(evaluation(imitate, args, seeds))
        successes, episodes = sum(round(r["success_rate"] * r["n"]) for r in results), sum(r["n"] for r in results)
        low, high = wilson(successes, episodes)
        rows.append({"policy": policy, "sets": ", ".join(pct(r["success_rate"]) for r in results),
                     "kept": ", ".join(kept) + (f" (of {imitate.candidates})" if imitate.candidates > 1 else ""),
                     "median": pct(statistics.median(r["success_rate"] for r in results)),
                     "pooled": f"{pct(successes / episodes)} [{pct(low)}, {pct(high)}]",
                     **{column: "n/a" if any(r[key] is None for r in results) else pct(statistics.mean(r[key] for r in results))
                        for column, key in (("floor", "floor"), ("demonstrator", "ceiling"))},
                     "wall": f"{wall:.0f} s"})
    print(f"{args.task}, {args.demos} demonstrations ({args.demonstrator}) per set, collection seeds {args.demo_seeds}, "
          f"{len(seeds)} x {args.episodes} evaluation episodes per run"
          + (f", waypoints {' '.join(map(str, args.waypoints))}" if args.waypoints else "")
          + (f", goal waypoints {' '.join(map(str, args.goal_waypoints))}" if args.goal_waypoints else "") + (", goal encoder" if args.goal_encoder else "")
          + (", as recorded (no symmetry turns)" if args.no_square_symmetry else "") + (f", waypoint weight {args.waypoint_weight:g}" if args.waypoint_weight is not None else "")
          + (f", {args.val_episodes} held out" if args.val_episodes else ""))
    print(markdown_table(rows, {"policy": "policy", "sets": "success per demonstration set", "kept": "training seed per set (or their vote)", "median": "median over sets",
                                "pooled": "pooled (Wilson 95%)", "floor": "random floor", "demonstrator": "demonstrator",
                                "wall": "training wall (this session)"}))


if __name__ == "__main__":
    main()
