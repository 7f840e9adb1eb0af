"""The one training loop of the project, wired by injection (config, batches, model, run folder).

- AdamW, linear warmup then cosine decay (the rate is a function of the step: nothing to save),
  gradient clipping, bf16 autocast on request (on CUDA and CPU), optional `torch.compile`.
- Runs unchanged under `torchrun` with DistributedDataParallel (gloo on CPU, nccl on GPU).
- Exact resume: the model's randomness (masks, projections) at step k comes from a generator
  seeded by (seed, k), the `batches` callable must likewise be a function of the step, and the
  checkpoint holds weights and optimizer state, so a run killed at any point and started again
  ends with the same weights as an uninterrupted one.
- TensorBoard (`loss/`, `train/`, `collapse/`, `perf/` (frames/s, and the share of the wall spent
  drawing batches), and `val/` when a `validate` callable scores held-out data every `val_every`
  steps), a progress bar with ETA, and a loud warning when the representation collapses (and a
  line when it recovers; the run's `collapsed` is its state at the end); a non-finite loss stops
  the run and leaves the last checkpoint intact.

The model is any module whose `forward(batch, generator)` returns `(loss, metrics)` and which may
have `after_step(step, total_steps)` (e.g. an EMA update). A metric is a scalar tensor, or a
zero-argument callable returning a dict of them: a diagnostic too costly for every step (the
collapse watch's SVD, a sort, a gather across ranks), called on logged steps only, on every rank.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from infra.errors import UserError
from infra.files import write_json
from infra.progress import progress
from worldmodel.checkpoint import FILENAME, load_checkpoint, read_metadata, save_checkpoint

# A watched set of vectors (`collapse/...` metrics, see worldmodel.jepa.spread_metrics) has
# collapsed when its effective rank falls below 1.5 or its spread below a floor: 1% of the vectors'
# RMS where the model reports that (the policies' one vector per image: healthy 0.3-0.6, a collapsed
# goal encoder 1e-4), else an absolute std of 1e-3 (the world model's token grids, whose static
# background tokens would lower a relative figure without any collapse). Healthy policy runs may
# dip below the floor in their first few hundred steps and recover, so the verdict is the last
# known state at the end; entering collapse and leaving it (above twice the floor) are reported.
COLLAPSE_RELATIVE_STD, COLLAPSE_STD, COLLAPSE_RANK = 0.01, 1e-3, 1.5


def watch_collapse(metrics: dict, step: int, collapsing: set[str]) -> None:
    """Update `collapsing` (the watched prefixes now collapsed: collapse, collapse/goal, ...) from
    one log's metrics, writing a line whenever a prefix enters or leaves collapse."""
    for prefix in sorted({key.rpartition("/")[0] for key in metrics if key.startswith("collapse/")}):
        rank = metrics.get(f"{prefix}/effective_rank", math.inf)
        if f"{prefix}/relative_std" in metrics:
            spread, floor, unit = metrics[f"{prefix}/relative_std"], COLLAPSE_RELATIVE_STD, "of the vectors' RMS"
        else:
            spread, floor, unit = metrics.get(f"{prefix}/std_mean", math.inf), COLLAPSE_STD, "(embedding std)"
        figures = f"spread {spread:.2e} {unit}, effective rank {rank:.2f}"
        if prefix not in collapsing and not (spread >= floor and rank >= COLLAPSE_RANK):  # NaN counts as collapsed
            collapsing.add(prefix)
            tqdm.write(f"WARNING: the representation is collapsing at step {step} ({prefix}): {figures}", file=sys.stderr)
        elif prefix in collapsing and spread >= 2 * floor and rank >= COLLAPSE_RANK:
            collapsing.discard(prefix)
            tqdm.write(f"the representation recovered at step {step} ({prefix}): {figures}", file=sys.stderr)


def resolve_metrics(metrics: dict) -> dict[str, float]:
    """A step's metrics as floats, each callable (a deferred diagnostic) called and its dict merged in
    (a callable's key only names it; the names it returns must not clash with the step's others)."""
    resolved = {}
    for key, value in metrics.items():
        resolved |= resolve_metrics(value()) if callable(value) else {key: float(value)}
    return resolved


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 64
    """Global batch size (split evenly across DDP ranks)."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to norms and biases)."""
    warmup: int = 50
    """Linear warmup steps."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    seed: int = 0
    """Seed of the initialisation, the batches and the masks."""
    log_every: int = 25
    """Steps between TensorBoard points."""
    checkpoint_every: int = 200
    """Steps between checkpoints (one is always written at the end)."""
    val_every: int = 250
    """Steps between scores on held-out data (always at the end too); only `jepa imitate --val-episodes` scores any."""
    device: str = "cpu"
    """Torch device, e.g. cpu or cuda (under torchrun: cuda:LOCAL_RANK is used)."""
    bf16: bool = False
    """bf16 autocast (CUDA, or CPUs with bf16 support)."""
    compile: bool = False
    """torch.compile the model (slow to start; measured no faster on 2 CPU cores)."""
    threads: int = 0
    """torch CPU threads per process (0: torch's default)."""

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.log_every, self.checkpoint_every, self.val_every) < 1 or self.threads < 0:
            raise UserError("steps, batch size, log-every, checkpoint-every and val-every must be positive and threads not negative")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--train.device {self.device}: no CUDA device is available here; use cpu")

    def lr_at(self, step: int) -> float:
        """Warmup then cosine to min_lr_ratio * lr."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(self.steps - self.warmup, 1)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of the model's randomness (masks, projections) at step `step`."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4)  # any change alters every run's masks, and so every figure


def distributed(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising the process group under torchrun (even for
    one process, so a one-GPU torchrun exercises the DDP path): nccl for CUDA, gloo for CPU."""
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
    return int(os.environ.get("RANK", "0")), world, local


UNRECORDED = {"render_revision": None}  # facts an old run did not record: unknown, not the current value


def with_new_fields(saved: dict, current: dict) -> dict:
    """A saved run config completed with the options it predates, taken from the current config, so
    upgrading does not strand old runs. Such a run ran with each new option's old behaviour, which
    the option's default keeps: resume it with those options at their defaults. A fact about its
    data it did not record (UNRECORDED) is unknown instead, so data re-collected since at the same
    path is refused, not silently taken for what the run learned from."""
    merged = dict(saved)
    for key, value in current.items():
        if key not in saved:
            merged[key] = UNRECORDED.get(key, value)
        elif isinstance(value, dict) and isinstance(saved[key], dict):
            merged[key] = with_new_fields(saved[key], value)
    return merged


class TrainingDiverged(UserError):
    """The loss became non-finite."""


class Trainer:
    """Fits `model` on `batches(step, rank, world) -> dict of tensors`, logging into `run_dir`;
    `validate(model) -> {name: value}`, if given, scores the model (in eval mode, without gradients)
    on held-out data: logged as `val/name` and returned with the final metrics."""

    def __init__(self, cfg: TrainConfig, batches: Callable, model: torch.nn.Module, run_dir: Path, config: dict,
                 frames_per_sample: int = 1, validate: Callable[[torch.nn.Module], dict] | None = None):
        self.cfg, self.batches, self.model, self.run_dir, self.validate = cfg, batches, model, Path(run_dir), validate
        self.config = json.loads(json.dumps(config))  # as it will read back from a checkpoint
        self.frames_per_sample = frames_per_sample
        self.rank, self.world, local = distributed(cfg.device)
        if cfg.batch_size % self.world:
            raise UserError(f"batch size {cfg.batch_size} must divide evenly over {self.world} processes")
        self.device = torch.device(f"cuda:{local}" if cfg.device.startswith("cuda") and dist.is_initialized() else cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.checkpoint = self.run_dir / FILENAME

    def _optimizer(self) -> torch.optim.Optimizer:
        decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() > 1]
        other = [p for n, p in self.model.named_parameters() if p.requires_grad and p.dim() <= 1]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                  {"params": other, "weight_decay": 0.0}], lr=self.cfg.lr)

    def _resume(self, optimizer) -> int:
        if not self.checkpoint.exists():
            return 0
        saved = with_new_fields(read_metadata(self.checkpoint)["config"], self.config)
        if saved != self.config:
            changed = sorted(k for k in set(saved) | set(self.config) if saved.get(k) != self.config.get(k))
            raise UserError(f"{self.run_dir} holds a run with another config (differs in {', '.join(changed)}): "
                            "rerun with the same options to resume, or choose a new --out")
        return load_checkpoint(self.checkpoint, self.model, optimizer)

    def fit(self) -> dict:
        """Train to `cfg.steps` (resuming from the run folder's checkpoint); returns final metrics."""
        cfg, main = self.cfg, self.rank == 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model.to(self.device)
        optimizer = self._optimizer()
        start = self._resume(optimizer)
        if main:  # human-readable copy of the config the checkpoint carries in its metadata
            write_json(self.run_dir / "config.json", self.config)
        if start >= cfg.steps:
            if dist.is_initialized():
                dist.destroy_process_group()
            return json.loads((self.run_dir / "metrics.json").read_text()) if (self.run_dir / "metrics.json").exists() else {}
        metrics = self._train(optimizer, start)
        if dist.is_initialized():
            # _train's DDP wrapper holds the group from C++: freed after destroy_process_group, its last
            # reference would run the group's destructor with the GIL held, which deadlocks against a
            # gloo worker thread freeing a work (pytorch/pytorch#56297; it hung a CI run). Gone before
            # (collected here too if a cycle, e.g. torch.compile's, kept it), the group's last
            # reference goes from Python, whose binding releases the GIL.
            gc.collect()
            dist.barrier()  # rank 0 may still be writing the last checkpoint: leave together
            dist.destroy_process_group()
        if main:
            write_json(self.run_dir / "metrics.json", metrics)
        return metrics

    def _train(self, optimizer: torch.optim.Optimizer, start: int) -> dict:
        """The training loop from step `start` to `cfg.steps`; returns the final metrics."""
        cfg, main = self.cfg, self.rank == 0
        net = self.model
        if dist.is_initialized():
            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"))
        bar = progress(total=cfg.steps, initial=start, desc="train", unit="step", disable=not main)
        metrics, validation, collapsing, tick, began, logged = {}, {}, set(), time.perf_counter(), time.perf_counter(), start
        pin, data_s = self.device.type == "cuda", 0.0  # pinned host memory: the copy to the GPU overlaps its work
        for step in range(start, cfg.steps):
            drawn = time.perf_counter()
            batch = {k: (v.pin_memory() if pin else v).to(self.device, non_blocking=True) for k, v in self.batches(step, self.rank, self.world).items()}
            data_s += time.perf_counter() - drawn
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(step)
            with autocast:
                loss, step_metrics = net(batch, step_generator(cfg.seed, step))
            reduced = loss.detach().float().clone()
            if self.world > 1:
                dist.all_reduce(reduced)
                reduced /= self.world
            if not torch.isfinite(reduced):
                bar.close()
                kept = f"the checkpoint at step {read_metadata(self.checkpoint)['step']} is intact" if self.checkpoint.exists() else "no checkpoint was written"
                raise TrainingDiverged(f"loss became {reduced.item()} at step {step}; {kept}; lower --train.lr or raise --train.warmup")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                step_metrics["train/grad_norm"] = grad_norm
            optimizer.step()
            if hasattr(self.model, "after_step"):
                self.model.after_step(step + 1, cfg.steps)
            bar.update(1)
            log_now = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
            if log_now:  # on every rank: a deferred diagnostic may gather across them
                step_metrics = resolve_metrics(step_metrics)
            if main and log_now:
                now = time.perf_counter()
                metrics = {"loss/total": reduced.item(), "train/lr": cfg.lr_at(step),
                           "perf/frames_per_s": (step + 1 - logged) * cfg.batch_size * self.frames_per_sample / (now - tick),
                           "perf/data_fraction": data_s / (now - tick)}  # of the wall, drawing batches (and pinning them for a GPU)
                metrics |= step_metrics
                tick, logged, data_s = now, step + 1, 0.0
                for key, value in metrics.items():
                    writer.add_scalar(key, value, step + 1)
                bar.set_postfix(loss=f"{metrics['loss/total']:.4f}", refresh=False)
                watch_collapse(metrics, step + 1, collapsing)
            if main and self.validate is not None and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
                validation = self._validate(autocast)
                for key, value in validation.items():
                    writer.add_scalar(key, value, step + 1)
            if main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                save_checkpoint(self.checkpoint, self.model, optimizer, step + 1, self.config)
            del step_metrics  # its deferred diagnostics hold this step's activations: not through the next forward
        bar.close()
        if writer is not None:
            writer.close()
        if collapsing:
            print(f"WARNING: training ended with the representation collapsed ({', '.join(sorted(collapsing))})", file=sys.stderr)
        return metrics | validation | {"steps": cfg.steps, "wall_s_this_session": round(time.perf_counter() - began, 1),
                                       "collapsed": bool(collapsing)}

    def _validate(self, autocast) -> dict:
        """`val/name` -> value of `validate` on the model in eval mode (its mode and the global random
        state restored after: a run trains the same with or without validation)."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), autocast, torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            scores = self.validate(self.model)
        self.model.train(was_training)
        return {f"val/{name}": float(value) for name, value in scores.items()}
