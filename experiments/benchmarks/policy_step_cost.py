"""Training-step cost of the imitation policy's variants (`agents/chunk_policy.py`): the median wall
time of one ACT training step (forward, backward, AdamW) at batch 64 on synthetic 64x64 frames,
and its ratio to the default network's, measured side by side in one run; beside it, the time of
the collapse watch (an SVD and a sort of the goal images), which the trainer runs on logged steps
only (1 in 25 by default). With `--data DEMOS`,
also the median time to draw one batch of training windows from those demonstrations (read from
the memory map, as `jepa imitate` does), as recorded and turned by the square's symmetries: the
part of a step a GPU does not speed up.

    python -m experiments.benchmarks.policy_step_cost [--steps 10] [--device cuda] [--data DEMOS]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import numpy as np
import torch

from agents.chunk_policy import ChunkPolicy, ChunkPolicyConfig
from agents.demonstrations import draw_windows, last_actions
from envs import task_spec
from envs.dataset import EpisodeDataset
from experiments.report import markdown_table
from infra.errors import UserError
from worldmodel.trainer import resolve_metrics

DEFAULT = ChunkPolicyConfig(kind="act", square_symmetry=False, action_dim=4, proprio_dim=4)
VARIANTS = {
    "default (one vector per image)": DEFAULT,
    "--model.image-tokens 4": dataclasses.replace(DEFAULT, image_tokens=4),
    "--model.image-tokens 8 (the full grid)": dataclasses.replace(DEFAULT, image_tokens=8),
    "--model.encoder.patch 4 (16x16 keypoints)": dataclasses.replace(DEFAULT, encoder=dataclasses.replace(DEFAULT.encoder, patch=4)),
    "--model.encoder.width 64": dataclasses.replace(DEFAULT, encoder=dataclasses.replace(DEFAULT.encoder, width=64)),
    "--model.colour-moments 4": dataclasses.replace(DEFAULT, colour_moments=4),
}


def step_seconds(cfg: ChunkPolicyConfig, steps: int, batch: int = 64, device: torch.device = torch.device("cpu")) -> tuple[float, float]:
    """Median seconds of one training step and of its deferred collapse watch, after two warm-up steps."""
    torch.manual_seed(0)
    policy = ChunkPolicy(cfg).train().to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), 5e-4)
    images = lambda *shape: torch.randint(0, 256, (*shape, 64, 64, 3), dtype=torch.uint8)
    data = {"frames": images(batch, 1), "goal": images(batch), "proprio": torch.randn(batch, 4),
            "actions": torch.rand(batch, cfg.chunk, 4) * 2 - 1, "action_valid": torch.ones(batch, cfg.chunk, dtype=torch.bool)}
    data = {k: v.to(device) for k, v in data.items()}
    times, watches = [], []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss, metrics = policy(data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the device
        watch = time.perf_counter()
        resolve_metrics(metrics)  # float() waits for the device
        if i >= 2:
            times.append(watch - start)
            watches.append(time.perf_counter() - watch)
    return statistics.median(times), statistics.median(watches)


def draw_seconds(dataset: EpisodeDataset, steps: int, batch: int = 64) -> dict[str, float]:
    """Median seconds to draw one batch of the default ACT windows from the demonstrations in
    `dataset`, as recorded and turned by the square's symmetries (where the task declares them)."""
    episodes = np.arange(dataset.num_episodes)
    lasts = last_actions(dataset, episodes, trim=True)
    spec = ChunkPolicy(ChunkPolicyConfig(kind="act", square_symmetry=False, action_dim=dataset.actions.shape[1], proprio_dim=dataset.proprio.shape[1])).window_spec()
    variants = {"draw a batch of windows (as recorded)": spec}
    if task_spec(dataset.task).env_class.square_symmetry is not None:
        variants["... turned by the square's symmetries"] = dataclasses.replace(spec, symmetric=True)
    seconds = {}
    for name, variant in variants.items():
        draw, times = draw_windows(dataset, episodes, lasts, variant), []
        for i in range(steps + 2):
            start = time.perf_counter()
            draw(np.random.default_rng(i), batch)
            if i >= 2:
                times.append(time.perf_counter() - start)
        seconds[name] = statistics.median(times)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--device", default="cpu", help="where the training steps run (cpu, cuda)")
    parser.add_argument("--data", help="demonstrations (`jepa collect --policy expert`) to time the window draws on")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        parser.error(f"--device must be cpu or cuda (with a GPU that torch sees), got {args.device}")
    try:
        dataset = EpisodeDataset(args.data) if args.data else None  # a bad path fails before minutes of timing
    except UserError as error:
        sys.exit(f"policy_step_cost.py: error: {error}")
    seconds = {name: step_seconds(cfg, args.steps, device=torch.device(args.device)) for name, cfg in VARIANTS.items()}
    base = seconds[next(iter(VARIANTS))][0]
    rows = [{"variant": name, "s": f"{s:.3f}", "ratio": f"{s / base:.2f}", "watch": f"{1000 * w:.1f}"} for name, (s, w) in seconds.items()]
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, batch 64, median of {args.steps} steps")
    print(markdown_table(rows, {"variant": "ACT variant", "s": "s per training step", "ratio": "x default", "watch": "collapse watch, ms (logged steps)"}))
    if dataset is not None:
        rows = [{"what": name, "ms": f"{1000 * s:.2f}"} for name, s in draw_seconds(dataset, args.steps).items()]
        print(markdown_table(rows, {"what": f"windows from {args.data}, batch 64", "ms": "ms per batch"}))


if __name__ == "__main__":
    main()
