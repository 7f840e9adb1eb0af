"""`jepa train-wm`: an action-conditioned world model on a pretrained encoder's latents."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs.dataset import EpisodeDataset, WindowSampler, split_episodes
from experiments.runs import WORLD_MODEL_STAGE, check_dataset, load_encoder, recorded_training
from worldmodel.checkpoint import FILENAME
from worldmodel.latents import encode_frames
from worldmodel.trainer import TrainConfig, Trainer
from worldmodel.world_model import WorldModel, WorldModelConfig


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
        jepa, encoder_config = load_encoder(self.encoder)
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

        train_cfg = recorded_training(cfg)
        config = {"data": str(Path(self.data).resolve()), "task": dataset.task, "holdout": self.holdout,
                  "env_frame_skip": int(dataset.attrs["frame_skip"]), "encoder_run": str(Path(self.encoder).resolve()), "model": dataclasses.asdict(model_cfg), "train": train_cfg}
        metrics = Trainer(cfg, batches, model.train(), self.out / WORLD_MODEL_STAGE, config, frames).fit()
        if not self.json:
            print(f"world model written to {self.out / WORLD_MODEL_STAGE / FILENAME}; rollout loss "
                  f"{metrics.get('loss/rollout', float('nan')):.4f} (copy-last {metrics.get('loss/copy_last_baseline', float('nan')):.4f});"
                  f" next: jepa rollout-eval --run {self.out} --data {self.data}")
        return metrics
