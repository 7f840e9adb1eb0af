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
from worldmodel.goal_features import goal_mask
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
        jepa, encoder_config = load_encoder(self.encoder, frames="train-wm", state_vectors=True)
        dataset = EpisodeDataset(self.data)
        check_dataset(dataset, encoder_config, jepa.cfg.encoder.image_size, "train-wm")
        model_cfg = dataclasses.replace(self.model, action_dim=dataset.actions.shape[1], encoder=dataclasses.asdict(jepa.cfg),
                                        proprio_dim=dataset.proprio.shape[1] if self.model.proprio else 0)
        torch.manual_seed(self.train.seed)
        model = WorldModel(model_cfg)
        model.encoder.load_state_dict(jepa.encoder.state_dict())
        if model.projector is not None:
            model.projector.load_state_dict(jepa.projector.state_dict())
        if model.state_vectors is not None:  # t-jepa: its input's palette and statistics
            model.state_vectors.load_state_dict(jepa.vectors.state_dict())
        train_episodes, _ = split_episodes(dataset, self.holdout)
        skip, frames = model_cfg.frame_skip, model_cfg.clip_frames
        sampler = WindowSampler(dataset, (frames - 1) * skip + 1, train_episodes)
        in_train = np.concatenate([np.arange(dataset.episode_starts[e], dataset.episode_starts[e + 1]) for e in train_episodes])
        latents = fit_state(model.eval(), dataset, in_train, self.train.seed)  # [F, N, D]
        summary = choose_cost_weights(model, dataset, train_episodes)
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
            print(summary)
            print(f"world model written to {self.out / WORLD_MODEL_STAGE / FILENAME}; rollout loss "
                  f"{metrics.get('loss/rollout', float('nan')):.4f} (copy-last {metrics.get('loss/copy_last_baseline', float('nan')):.4f});"
                  f" next: jepa rollout-eval --run {self.out} --data {self.data}")
        return metrics


def fit_state(model: WorldModel, dataset: EpisodeDataset, in_train: np.ndarray, seed: int) -> torch.Tensor:
    """Fit what the state's channels need from the training frames (the colour moments' palette,
    the proprio read-out for goal images, the per-channel standardisation) and return every
    frame's standardised state [F, N, D]."""
    if model.moments is not None:
        chosen = np.sort(np.random.default_rng(seed).choice(in_train, min(len(in_train), 4000), replace=False))
        model.moments.fit(torch.from_numpy(dataset.read_frames(chosen)), seed=seed)
    raw = encode_frames(model, dataset.frames, dataset.proprio, desc="encode frames")  # [F, N, D]
    if model.state_vectors is not None:  # t-jepa: read from the frames' colour moments
        chosen = np.sort(np.random.default_rng(seed).choice(in_train, min(len(in_train), 20_000), replace=False))
        with torch.no_grad():
            inputs = torch.cat([model.readout_inputs(torch.from_numpy(dataset.read_frames(part))[:, None])[:, 0]
                                for part in np.array_split(chosen, max(1, len(chosen) // 512))])
        model.fit_proprio_readout(inputs, torch.from_numpy(dataset.proprio[chosen]))
    elif model.cfg.proprio:
        image = model.parts["proprio"].start
        model.fit_proprio_readout(raw[in_train, 0, :image], torch.from_numpy(dataset.proprio[in_train]))
    model.set_normalisation(raw[in_train])
    return (raw - model.z_mean) / model.z_std


def choose_cost_weights(model: WorldModel, dataset: EpisodeDataset, episodes: np.ndarray) -> str:
    """Weigh in the planning cost the state channels whose goal-image value follows where training
    episodes first reach their goal (`goal_features.goal_mask`; a goal image's proprio is read
    from it); returns a one-line summary."""
    reached = [(e, dataset.episode_starts[e] + int(np.argmax(dataset.is_success[dataset.episode(e)])))
               for e in episodes if dataset.is_success[dataset.episode(e)].any()]
    if len(reached) < 10:
        return f"cost weights: {len(reached)} training episodes reach their goal (10 needed to choose channels): every channel weighed"
    goals = model.encode(torch.from_numpy(dataset.goal_frames[[e for e, _ in reached]])[:, None])[:, 0, 0]  # [E, D]
    ends = [f for _, f in reached]
    ends = model.encode(torch.from_numpy(dataset.frames[ends])[:, None], torch.from_numpy(dataset.proprio[ends])[:, None])[:, 0, 0]
    model.cost_weight.copy_(goal_mask(goals, ends))
    counts = ", ".join(f"{name} {int(model.cost_weight[part].sum())}/{part.stop - part.start}" for name, part in model.parts.items())
    return f"cost weights (`--mpc.cost goal`): channels whose goal value follows where {len(reached)} training episodes end: {counts}"
