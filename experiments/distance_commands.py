"""`jepa train-distance`: a learned goal distance (model steps to a goal, `worldmodel/goal_distance.py`)
in a trained world model's latent space, for planning costs without the local minima of the plain
latent distance."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs.dataset import EpisodeDataset, WindowSampler, split_episodes
from experiments.runs import DISTANCE_STAGE, check_dataset, check_latent_space, latent_space_id, load_world_model, recorded_training
from worldmodel.checkpoint import FILENAME, read_metadata
from worldmodel.goal_distance import GoalDistance, GoalDistanceConfig
from worldmodel.latents import standardised_latents
from worldmodel.trainer import TrainConfig, Trainer


def transition_goals(ends: np.ndarray, first: np.ndarray, skip: int, cfg: GoalDistanceConfig,
                     pool: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Goals for transitions first -> first + skip: (goal frame indices [B], reached [B] (the goal is
    first + skip)). Trajectory goals lie k >= 1 model steps ahead in the same episode, k geometric
    with the discount (cut at the episode's end `ends` [B], exclusive); the rest are drawn from `pool`."""
    steps = rng.geometric(1 - cfg.discount, len(first))
    steps = np.minimum(steps, (ends - 1 - first) // skip)
    goals = np.where(rng.random(len(first)) < cfg.trajectory_goals, first + skip * steps, pool[rng.integers(0, len(pool), len(first))])
    return goals, goals == first + skip


def distance_training(steps: int = 4000) -> TrainConfig:
    """The default optimisation of `jepa train-distance` (4,000 steps: 31-42 s on 2 CPU cores)."""
    return TrainConfig(steps=steps, batch_size=512, lr=3e-4, checkpoint_every=1000)


@dataclass
class TrainDistance:
    """Learn a goal distance (model steps to a goal, HILP) in a world model's latent space; plan-eval
    adds it to the latent cost."""

    run: Path
    """Run folder with a world model (`jepa train-wm`); the distance goes to RUN/goal_distance."""
    data: Path | None = None
    """Dataset (default: the one the world model was trained on; its held-out episodes stay out)."""
    model: GoalDistanceConfig = field(default_factory=GoalDistanceConfig)
    train: TrainConfig = field(default_factory=distance_training)
    json: bool = False
    """Print one JSON object (final training metrics) on stdout."""

    def __call__(self) -> dict:
        world_model, wm_config = load_world_model(self.run)
        data = Path(wm_config["data"]) if self.data is None else Path(self.data)
        dataset = EpisodeDataset(data)
        check_dataset(dataset, wm_config, world_model.image_size, "train-distance")
        skip = world_model.cfg.frame_skip
        episodes, _ = split_episodes(dataset, wm_config["holdout"])
        bounds = dataset.episode_starts
        first = WindowSampler(dataset, skip + 1, episodes).starts  # transition starts: first -> first + skip
        ends = bounds[np.searchsorted(bounds, first, side="right")]  # [T] the end (exclusive) of each one's episode
        stage = Path(self.run) / DISTANCE_STAGE
        if (stage / FILENAME).exists():
            check_latent_space(read_metadata(stage / FILENAME)["config"], stage / FILENAME, self.run, world_model)
        pool = np.concatenate([np.arange(bounds[e], bounds[e + 1]) for e in episodes])
        latents = standardised_latents(world_model, dataset.frames, dataset.proprio)  # [F, N, D]
        cfg = self.train

        def batches(step: int, rank: int, world: int) -> dict:
            rng = np.random.default_rng([cfg.seed, step, 2])
            pick = rng.integers(0, len(first), cfg.batch_size)
            goals, reached = transition_goals(ends[pick], first[pick], skip, self.model, pool, rng)
            part = slice(rank * (cfg.batch_size // world), (rank + 1) * (cfg.batch_size // world))
            starts = first[pick][part]
            return {"z": latents[starts], "z_next": latents[starts + skip], "goal": latents[goals[part]],
                    "reached": torch.from_numpy(reached[part])}

        torch.manual_seed(cfg.seed)
        distance = GoalDistance(self.model, latents[0].numel())
        train_cfg = recorded_training(cfg)
        config = {"world_model_run": str(Path(self.run).resolve()), "data": str(data.resolve()), "task": dataset.task,
                  "latent_size": latents[0].numel(), "latent_space": latent_space_id(world_model), "model": dataclasses.asdict(self.model), "train": train_cfg}
        metrics = Trainer(cfg, batches, distance.train(), stage, config).fit()
        if not self.json:
            print(f"goal distance written to {stage / FILENAME}; mean steps to a training goal "
                  f"{metrics.get('train/mean_steps', float('nan')):.1f}; next: jepa plan-eval --run {self.run}")
        return metrics
