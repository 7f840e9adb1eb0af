"""Pretraining throughput and its fraction of the machine's dense matmul rate.

For each encoder config: frames/s of a full JEPA training step (forward, backward, AdamW) at
batch 64 on synthetic frames, the step's FLOPs counted by torch's FlopCounterMode, and the
achieved FLOP/s divided by a `torch.matmul` FLOP/s measured in the same run (same dtype, same
threads). Medians over --steps timed steps after warm-up; beside them, the time of the collapse
watch (an SVD of the frames' token grids), which the trainer runs on logged steps only (1 in 25 by
default).

    python -m experiments.benchmarks.train_throughput [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.report import markdown_table
from worldmodel.encoders import EncoderConfig
from worldmodel.jepa import JEPA, JEPAConfig
from worldmodel.trainer import resolve_metrics, step_generator

CONFIGS = {
    "conv (default, vicreg)": JEPAConfig(),
    "conv vjepa": JEPAConfig(objective="vjepa"),
    "vit-mini p8 vjepa": JEPAConfig(objective="vjepa", encoder=EncoderConfig(kind="vit", size="mini", patch=8)),
    "vit-tiny p8 vjepa": JEPAConfig(objective="vjepa", encoder=EncoderConfig(kind="vit", size="tiny", patch=8)),
    "vit-tiny p16 vjepa": JEPAConfig(objective="vjepa", encoder=EncoderConfig(kind="vit", size="tiny", patch=16)),
}


def matmul_rate(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Dense matmul FLOP/s (median of repeats)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def measure(cfg: JEPAConfig, device: str, bf16: bool, steps: int, batch: int = 64) -> dict:
    cfg = JEPAConfig(**{**cfg.__dict__, "action_dim": 2})
    model = JEPA(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = {"frames": torch.randint(0, 255, (batch, cfg.clip_frames, 64, 64, 3), dtype=torch.uint8, device=device),
            "actions": torch.rand(batch, cfg.clip_frames - 1, 2 * cfg.frame_skip, device=device)}
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    def step(i: int) -> dict:
        with autocast:
            loss, metrics = model(data, step_generator(0, i))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_step(i, 1000)
        return metrics

    counter = FlopCounterMode(display=False)
    with counter:
        step(0)
    flops = counter.get_total_flops()
    times, watches = [], []
    for i in range(1, steps + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        metrics = step(i)
        if device == "cuda":
            torch.cuda.synchronize()
        watch = time.perf_counter()
        resolve_metrics(metrics)  # float() waits for the device
        if i >= 3:
            times.append(watch - t)
            watches.append(time.perf_counter() - watch)
    seconds = statistics.median(times)
    return {"frames_per_s": batch * cfg.clip_frames / seconds, "gflop_per_step": flops / 1e9, "flop_per_s": flops / seconds,
            "watch_ms": 1000 * statistics.median(watches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    for bf16 in (False, True):
        peak = matmul_rate(args.device, torch.bfloat16 if bf16 else torch.float32)
        for name, cfg in CONFIGS.items():
            r = measure(cfg, args.device, bf16, args.steps)
            rows.append({"config": name, "dtype": "bf16" if bf16 else "fp32", "frames_per_s": round(r["frames_per_s"]),
                         "gflop_per_step": round(r["gflop_per_step"], 2), "achieved_gflop_s": round(r["flop_per_s"] / 1e9, 1),
                         "matmul_gflop_s": round(peak / 1e9, 1), "fraction": round(r["flop_per_s"] / peak, 3), "watch_ms": round(r["watch_ms"], 1)})
    print(f"# device {args.device}, torch threads {torch.get_num_threads()}, batch 64, 64x64, median of {args.steps} steps")
    print(markdown_table(rows, {"config": "config", "dtype": "dtype", "frames_per_s": "frames/s", "gflop_per_step": "GFLOP/step",
                                "achieved_gflop_s": "achieved GFLOP/s", "matmul_gflop_s": "matmul GFLOP/s", "fraction": "fraction",
                                "watch_ms": "collapse watch, ms (logged steps)"}))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
