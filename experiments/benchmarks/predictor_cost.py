"""Cost of one batched world-model rollout step, the unit of a planner's budget.

For each predictor variant (latent kind, action conditioning, width, history), a batch of S
samples is rolled out H steps, as a planner does; reported: milliseconds per 1,000 sample-steps
(median of repeats), the FLOPs per sample-step (torch's flop counter), and the same-run ratio
against a plain fp32 matmul doing the same FLOPs (1.0 would mean the predictor runs at matmul speed).

    python -m experiments.benchmarks.predictor_cost [--samples 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.report import markdown_table
from worldmodel.jepa import JEPAConfig
from worldmodel.predictor import PredictorConfig
from worldmodel.world_model import WorldModel, WorldModelConfig

VARIANTS = [  # (latent, action mode, width, depth, history)
    ("frame", "adaln", 128, 2, 1), ("frame", "adaln", 64, 2, 1), ("frame", "token", 128, 2, 1),
    ("frame", "both", 128, 2, 1), ("frame", "adaln", 128, 2, 3), ("tokens", "adaln", 128, 2, 1),
]


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for latent, mode, width, depth, history in VARIANTS:
        cfg = WorldModelConfig(latent=latent, action_dim=2, encoder=dataclasses.asdict(JEPAConfig()),
                               predictor=PredictorConfig(width=width, depth=depth, history=history, action_mode=mode))
        model = WorldModel(cfg).eval().requires_grad_(False)
        n, d = model.latent_shape
        z = torch.randn(args.samples, history, n, d)
        actions = torch.rand(args.samples, history - 1 + args.horizon, 10) * 2 - 1
        step = lambda: model.rollout(z, actions)  # noqa: E731
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops() / (args.samples * args.horizon)
        seconds = median_time(step, args.repeats)
        # a plain matmul with the same FLOPs: [S*H, width] @ [width, k], k chosen to match
        rows_m = args.samples * args.horizon
        k = max(1, int(flops * rows_m / (2 * rows_m * width)))
        a, b = torch.randn(rows_m, width), torch.randn(width, k)
        matmul = median_time(lambda: a @ b, args.repeats)
        rows.append({"variant": f"{latent} ({n}x{d}), {mode}, width {width}, depth {depth}, history {history}",
                     "ms_per_1k": f"{1000 * seconds / (args.samples * args.horizon) * 1000:.3f}",
                     "mflop": f"{flops / 1e6:.3f}", "ratio": f"{matmul / seconds:.3f}"})
    print(f"{args.samples} samples x horizon {args.horizon}, {args.threads} threads, torch {torch.__version__}")
    print(markdown_table(rows, {"variant": "predictor", "ms_per_1k": "ms per 1,000 sample-steps",
                                "mflop": "MFLOP per sample-step", "ratio": "speed / same-FLOP matmul"}))


if __name__ == "__main__":
    main()
