"""What a task's colour moments can say, by palette size: frames of random states (the task's own
sampler) are drawn, `ColourMoments` of K colours is fitted on the first ones, and a ridge probe
(`probe.fit_probe`) of the task's probe variables from the standardised moments is scored by R2
on the rest. It tells whether K colours give each object a colour of its own (gym-pusht: with 4-6
the slate block and the blue agent share one, and the block's angle does not read). The
simulator state is read for this check only.

    python -m experiments.benchmarks.moments_probe --task gym-pusht:push-t [--colours 4 6 8] [--frames 1500]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from envs import make_task
from experiments.report import markdown_table
from infra.errors import UserError
from worldmodel.encoders import ColourMoments
from worldmodel.probe import fit_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="a task whose state can be set (`jepa tasks`)")
    parser.add_argument("--colours", type=int, nargs="+", default=[4, 6, 8], help="palette sizes to compare")
    parser.add_argument("--frames", type=int, default=1500, help="random states drawn; two thirds fit, one third scores")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        env = make_task(args.task, image_size=args.image_size)
        if not env.settable_state:
            raise UserError(f"{args.task} takes no start state: the probe draws frames of random states")
    except UserError as exc:
        sys.exit(f"moments_probe: error: {exc}")
    rng = np.random.default_rng(args.seed)
    states = np.stack([env.random_state(rng) for _ in range(args.frames)])
    frames = torch.from_numpy(np.stack([env.render_state(s) for s in states]))  # [N, H, W, 3]
    variables, fit = env.probe_variables(states), args.frames * 2 // 3
    rows = []
    for k in args.colours:
        moments = ColourMoments(k, args.image_size)
        moments.fit(frames[:fit])
        features = moments.standardise(moments.features(frames)).double().numpy()  # [N, K * 10]
        r2 = fit_probe(features[:fit], variables[:fit], features[fit:], variables[fit:])
        rows.append({"colours": str(k), **{n: f"{v:.2f}" for n, v in zip(env.probe_names, r2)}})
    env.close()
    print(f"{args.task}: R2 of a ridge probe from colour moments, {args.frames - fit} frames of random states "
          f"(fitted on {fit})")
    print(markdown_table(rows, {"colours": "colours", **{n: n for n in env.probe_names}}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
