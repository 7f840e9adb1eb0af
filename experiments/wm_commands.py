"""`jepa train-wm`: an action-conditioned world model on a pretrained encoder's latents."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs.dataset import EpisodeDataset, WindowSampler, split_episodes
from envs.metaworld_tasks import PREFIX as METAWORLD
from experiments.pretrain_commands import NOT_RESUME_RELEVANT, encoder_checkpoint
from infra.errors import UserError
from infra.progress import progress
from worldmodel.checkpoint import FILENAME, dataclass_from_dict, load_checkpoint, read_metadata
from worldmodel.jepa import load_jepa
from worldmodel.trainer import TrainConfig, Trainer
from worldmodel.world_model import WorldModel, WorldModelConfig

WORLD_MODEL_STAGE = "world_model"


def world_model_checkpoint(run: Path) -> Path:
    """The world-model checkpoint of a run folder, or a one-line error naming the command that makes it."""
    path = Path(run) / WORLD_MODEL_STAGE / FILENAME
    if not path.exists():
        raise UserError(f"{run} has no world model: run `jepa train-wm --data DATA --encoder {run} --out {run}` first")
    return path


def load_world_model(run: Path) -> tuple[WorldModel, dict]:
    """A trained world model of a run folder, in eval mode, and its run config."""
    path = world_model_checkpoint(run)
    config = read_metadata(path)["config"]
    model = WorldModel(dataclass_from_dict(WorldModelConfig, config["model"]))
    load_checkpoint(path, model)
    return model.eval(), config


def env_frame_skip(config: dict) -> int | None:
    """Physics steps per env action of the data a world model was trained on (None for runs that
    predate recording it: the task's default, which every such run used)."""
    return config["env_frame_skip"] if "env_frame_skip" in config else None


def check_dataset(dataset: EpisodeDataset, config: dict, image_size: int, command: str) -> None:
    """One-line errors when a dataset does not match the task, image size or physics frame skip a model was trained on."""
    if dataset.task.startswith(METAWORLD):
        raise UserError(f"world models here are evaluated with simulator states; {dataset.task} is for imitation (jepa imitate)")
    if dataset.task != config["task"]:
        raise UserError(f"the model was trained on {config['task']} but {dataset.path} holds {dataset.task}: "
                        f"pass a {config['task']} dataset to `jepa {command}`")
    if int(dataset.attrs["image_size"]) != image_size:
        raise UserError(f"the model was trained on {image_size}px frames but {dataset.path} has {dataset.attrs['image_size']}px: "
                        f"collect with --image-size {image_size}")
    skip = env_frame_skip(config)
    if skip is not None and int(dataset.attrs["frame_skip"]) != skip:
        raise UserError(f"the model was trained on data with --frame-skip {skip} but {dataset.path} has {dataset.attrs['frame_skip']}: "
                        f"collect with --frame-skip {skip}")


@torch.no_grad()
def encode_frames(model: WorldModel, frames: np.ndarray, batch: int = 512, desc: str = "encode") -> torch.Tensor:
    """Unstandardised latents [F, N, D] of frames [F, H, W, 3] (a memory map is read in order)."""
    out = []
    for lo in progress(range(0, len(frames), batch), desc=desc, unit="batch", leave=False):
        out.append(model.raw_latent(torch.from_numpy(np.array(frames[lo: lo + batch]))[:, None])[:, 0])
    return torch.cat(out)


def standardised_latents(model: WorldModel, frames: np.ndarray, desc: str = "encode") -> torch.Tensor:
    """Standardised latents [F, N, D] of frames [F, H, W, 3] (as `model.encode` gives, in batches)."""
    return (encode_frames(model, frames, desc=desc) - model.z_mean) / model.z_std


class Retrieval:
    """Nearest training frame of a latent: how imagined futures are shown (no decoder is trained)."""

    def __init__(self, model: WorldModel, dataset: EpisodeDataset, index: np.ndarray):
        self.frames, self.index = dataset.frames, index
        self.latents = standardised_latents(model, dataset.frames[index], "encode retrieval frames")  # [K, N, D]

    def __call__(self, z: torch.Tensor) -> np.ndarray:
        """Frames [..., H, W, 3] nearest to latents [..., N, D]."""
        flat = z.reshape(-1, z.shape[-2] * z.shape[-1])
        nearest = torch.cdist(flat, self.latents.flatten(1)).argmin(1).numpy()
        return self.frames[self.index[nearest]].reshape(*z.shape[:-2], *self.frames.shape[1:])


@dataclass
class TrainWM:
    """Train an action-conditioned world model (predictor in latent space) on a pretrained encoder."""

    data: Path
    """Dataset folder written by `jepa collect`."""
    encoder: Path
    """Run folder holding the pretrained encoder (`jepa pretrain --out RUN`)."""
    out: Path
    """Run folder; the world model goes to OUT/world_model (rerun the same command to resume)."""
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=128, lr=1e-3, checkpoint_every=1000))
    holdout: float = 0.2
    """Fraction of episodes (the last ones) kept out of training, for evaluation."""
    json: bool = False
    """Print one JSON object (final training metrics) on stdout."""

    def __call__(self) -> dict:
        jepa, encoder_config = load_jepa(encoder_checkpoint(self.encoder))
        dataset = EpisodeDataset(self.data)
        check_dataset(dataset, encoder_config, jepa.cfg.encoder.image_size, "train-wm")
        model_cfg = dataclasses.replace(self.model, action_dim=dataset.actions.shape[1],
                                        encoder=dataclasses.asdict(jepa.cfg))
        torch.manual_seed(self.train.seed)
        model = WorldModel(model_cfg)
        model.encoder.load_state_dict(jepa.encoder.state_dict())
        if model.projector is not None:
            model.projector.load_state_dict(jepa.projector.state_dict())
        train_episodes, _ = split_episodes(dataset, self.holdout)
        skip, frames = model_cfg.frame_skip, model_cfg.clip_frames
        sampler = WindowSampler(dataset, (frames - 1) * skip + 1, train_episodes)
        raw = encode_frames(model.eval(), dataset.frames, desc="encode frames")  # [F, N, D]
        in_train = np.concatenate([np.arange(dataset.episode_starts[e], dataset.episode_starts[e + 1]) for e in train_episodes])
        model.set_normalisation(raw[in_train])
        latents = (raw - model.z_mean) / model.z_std
        cfg = self.train

        def batches(step: int, rank: int, world: int) -> dict:
            first = sampler.draw(cfg.batch_size, np.random.default_rng([cfg.seed, step, 1]))
            first = first[rank * (len(first) // world): (rank + 1) * (len(first) // world)]
            index = first[:, None] + np.arange((frames - 1) * skip)  # [B, (T-1)*skip]
            actions = torch.from_numpy(dataset.actions[index].reshape(len(first), frames - 1, -1))  # [B, T-1, skip*A]
            taken = first[:, None] + skip * np.arange(frames)  # [B, T]
            if model_cfg.finetune:
                return {"frames": torch.from_numpy(dataset.frames[taken.ravel()].reshape(*taken.shape, *dataset.frames.shape[1:])),
                        "actions": actions}
            return {"latents": latents[torch.from_numpy(taken)], "actions": actions}

        train_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_RESUME_RELEVANT}
        config = {"data": str(Path(self.data).resolve()), "task": dataset.task, "holdout": self.holdout,
                  "env_frame_skip": int(dataset.attrs["frame_skip"]), "encoder_run": str(Path(self.encoder).resolve()), "model": dataclasses.asdict(model_cfg), "train": train_cfg}
        metrics = Trainer(cfg, batches, model.train(), self.out / WORLD_MODEL_STAGE, config, frames).fit()
        if not self.json:
            print(f"world model written to {self.out / WORLD_MODEL_STAGE / FILENAME}; rollout loss "
                  f"{metrics.get('loss/rollout', float('nan')):.4f} (copy-last {metrics.get('loss/copy_last_baseline', float('nan')):.4f});"
                  f" next: jepa rollout-eval --run {self.out} --data {self.data}")
        return metrics
