"""Training-step cost of the imitation policy's variants (`agents/policy.py`): the median wall
time of one ACT training step (forward, backward, AdamW) at batch 64 on synthetic 64x64 frames,
and its ratio to the default network's, measured side by side in one run.

    python experiments/benchmarks/policy_step_cost.py [--steps 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from agents.policy import ChunkPolicy, PolicyConfig
from experiments.report import markdown_table

DEFAULT = PolicyConfig(kind="act", action_dim=4, proprio_dim=4)
VARIANTS = {
    "default (one vector per image)": DEFAULT,
    "--model.image-tokens 4": dataclasses.replace(DEFAULT, image_tokens=4),
    "--model.image-tokens 8 (the full grid)": dataclasses.replace(DEFAULT, image_tokens=8),
    "--model.encoder.patch 4 (16x16 keypoints)": dataclasses.replace(DEFAULT, encoder=dataclasses.replace(DEFAULT.encoder, patch=4)),
    "--model.encoder.width 64": dataclasses.replace(DEFAULT, encoder=dataclasses.replace(DEFAULT.encoder, width=64)),
}


def step_seconds(cfg: PolicyConfig, steps: int, batch: int = 64) -> float:
    """Median seconds of one training step after two warm-up steps."""
    torch.manual_seed(0)
    policy = ChunkPolicy(cfg).train()
    optimizer = torch.optim.AdamW(policy.parameters(), 5e-4)
    images = lambda *shape: torch.randint(0, 256, (*shape, 64, 64, 3), dtype=torch.uint8)
    data = {"frames": images(batch, 1), "goal": images(batch), "proprio": torch.randn(batch, 4),
            "actions": torch.rand(batch, cfg.chunk, 4) * 2 - 1, "action_valid": torch.ones(batch, cfg.chunk, dtype=torch.bool)}
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss, _ = policy(data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    seconds = {name: step_seconds(cfg, args.steps) for name, cfg in VARIANTS.items()}
    base = seconds[next(iter(VARIANTS))]
    rows = [{"variant": name, "s": f"{s:.3f}", "ratio": f"{s / base:.2f}"} for name, s in seconds.items()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64, median of {args.steps} steps")
    print(markdown_table(rows, {"variant": "ACT variant", "s": "s per training step", "ratio": "x default"}))


if __name__ == "__main__":
    main()
