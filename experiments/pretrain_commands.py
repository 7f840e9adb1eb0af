"""`jepa pretrain` and `jepa probe`: self-supervised encoder pretraining and its probe."""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from envs import task_spec
from envs.dataset import EpisodeDataset, WindowSampler, split_episodes
from experiments.runs import ENCODER_STAGE, load_encoder, recorded_training
from infra.errors import UserError
from worldmodel.checkpoint import FILENAME
from worldmodel.jepa import JEPAConfig, build_jepa
from worldmodel.point_cloud import PointMaps
from worldmodel.probe import embed, fit_mlp_probe, fit_probe, frame_indices
from worldmodel.trainer import TrainConfig, Trainer

PROBE_HEADS = ("ridge", "mlp")


@dataclass
class Pretrain:
    """Pretrain an encoder with a JEPA objective on an episode dataset (no labels): of its frames, of their
    depth point maps (3d-jepa) or of their state vectors (t-jepa)."""

    data: Path
    """Dataset folder written by `jepa collect`."""
    out: Path
    """Run folder; the encoder goes to OUT/encoder (rerun the same command to resume)."""
    model: JEPAConfig = field(default_factory=JEPAConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=500, lr=2e-3))
    holdout: float = 0.2
    """Fraction of episodes (the last ones) kept out of training, for probes and evaluation."""
    json: bool = False
    """Print one JSON object (final training metrics) on stdout."""

    def __call__(self) -> dict:
        dataset = EpisodeDataset(self.data)
        size = int(dataset.attrs["image_size"])
        tabular = self.model.objective == "t-jepa"
        train_episodes, _ = split_episodes(dataset, self.holdout)
        points = PointMaps(dataset) if self.model.objective == "3d-jepa" else None
        model_cfg = dataclasses.replace(self.model, encoder=dataclasses.replace(self.model.encoder, image_size=size),
                                        action_dim=dataset.actions.shape[1] if self.model.action_conditioned and not tabular else 0,
                                        proprio_dim=dataset.proprio.shape[1] if tabular else 0,
                                        point_stats=points.fit(frame_indices(dataset, train_episodes, 2000)) if points else {})
        if tabular and not (model_cfg.proprio_dim or model_cfg.state_moments):
            raise UserError(f"{dataset.task} records no proprio: give t-jepa a state vector with --model.state-moments K (colour moments)")
        cfg = self.train
        torch.manual_seed(cfg.seed)
        model = build_jepa(model_cfg)
        batches = (self._vector_batches(dataset, train_episodes, model) if tabular
                   else self._clip_batches(dataset, train_episodes, model_cfg, points))
        train_cfg = recorded_training(cfg)
        config = {"data": str(Path(self.data).resolve()), "task": dataset.task, "render_revision": dataset.render_revision, "holdout": self.holdout,
                  "model": dataclasses.asdict(model_cfg), "train": train_cfg}
        metrics = Trainer(cfg, batches, model, self.out / ENCODER_STAGE, config, model_cfg.clip_frames).fit()
        if not self.json:
            print(f"encoder written to {self.out / ENCODER_STAGE / FILENAME}; final loss {metrics.get('loss/total', float('nan')):.4f}"
                  f"{'  (COLLAPSED)' if metrics.get('collapsed') else ''}; next: jepa probe --run {self.out} --data {self.data}")
        return metrics

    def _clip_batches(self, dataset: EpisodeDataset, episodes: np.ndarray, model_cfg: JEPAConfig, points: PointMaps | None = None):
        """batches(step, rank, world) of clips: frames [B, T, H, W, 3] `frame_skip` steps apart (with
        `points`, their point maps, float) and the action blocks between them."""
        skip, cfg = model_cfg.frame_skip, self.train
        sampler = WindowSampler(dataset, (model_cfg.clip_frames - 1) * skip + 1, episodes)

        def batches(step: int, rank: int, world: int) -> dict:
            first = sampler.draw(cfg.batch_size, np.random.default_rng([cfg.seed, step, 1]))
            per = cfg.batch_size // world
            frames, actions = sampler.load(first[rank * per: (rank + 1) * per], points)
            blocks = actions.reshape(len(actions), model_cfg.clip_frames - 1, -1)  # [B, T-1, skip * A]
            return {"frames": torch.from_numpy(frames[:, ::skip].copy()), "actions": torch.from_numpy(blocks)}

        return batches

    def _vector_batches(self, dataset: EpisodeDataset, episodes: np.ndarray, model):
        """t-jepa: fit the state vectors' statistics (and palette) on training frames, then
        batches(step, rank, world) of single frames [B, H, W, 3] and their proprio [B, P]."""
        cfg = self.train
        fit = frame_indices(dataset, episodes, 4000)
        model.vectors.fit(torch.from_numpy(dataset.read_frames(fit)), torch.from_numpy(dataset.proprio[fit]), seed=cfg.seed)
        sampler = WindowSampler(dataset, 1, episodes)  # single frames

        def batches(step: int, rank: int, world: int) -> dict:
            per = cfg.batch_size // world
            index = np.sort(sampler.draw(cfg.batch_size, np.random.default_rng([cfg.seed, step, 1]))[rank * per: (rank + 1) * per])
            return {"frames": torch.from_numpy(dataset.read_frames(index)), "proprio": torch.from_numpy(dataset.proprio[index])}

        return batches


@dataclass
class Probe:
    """Probe of a frozen encoder onto the true state (linear, or an MLP), R2 on held-out episodes, with floors.

    Every feature set the encoder offers is probed (per-token, mean-pooled, spatial keypoints, and
    the trained frame latent where the objective has one); the one that reads the positions best is
    reported (every one in the JSON), and the random-init floor is taken the same way."""

    run: Path
    """Run folder written by `jepa pretrain`."""
    data: Path
    """Dataset folder: the run's own (scored on its held-out episodes) or another one of the same image size."""
    train_frames: int = 4000
    """Training frames for the probe (sampled evenly from the training episodes)."""
    test_frames: int = 2000
    """Held-out frames it is scored on."""
    holdout: float | None = None
    """Fraction of episodes (the last ones) held out (default: the run's, so the encoder never saw them)."""
    head: str = "ridge"
    """ridge (a linear read-out) or mlp (two hidden layers of 256, stopped on a validation tail):
    whether what ridge misses is held nonlinearly or not at all."""
    mlp_steps: int = 3000
    """mlp: training steps of each probe (checked every 100)."""
    json: bool = False
    """Print {"r2", "position_r2", "position_r2_random_init", "position_r2_pixels", ...} on stdout."""

    def __call__(self) -> dict:
        if self.head not in PROBE_HEADS:
            raise UserError(f"--head must be one of {PROBE_HEADS}, got {self.head!r}")
        if self.mlp_steps < 100:
            raise UserError(f"--mlp-steps must be at least 100 (the probe is checked every 100), got {self.mlp_steps}")
        read_out = functools.partial(fit_mlp_probe, steps=self.mlp_steps) if self.head == "mlp" else fit_probe
        model, config = load_encoder(self.run)
        dataset = EpisodeDataset(self.data)
        enc_cfg = model.cfg.encoder
        if int(dataset.attrs["image_size"]) != enc_cfg.image_size:
            raise UserError(f"the encoder was trained on {enc_cfg.image_size}px frames but {self.data} has "
                            f"{dataset.attrs['image_size']}px: collect with --image-size {enc_cfg.image_size}")
        env = task_spec(dataset.task).env_class(pixels=False)
        if not getattr(env, "probe_names", ()):
            raise UserError(f"{dataset.task} defines no probe variables: probe on one of this project's own tasks")
        names, positions = env.probe_names, [env.probe_names.index(n) for n in env.position_names]
        train_eps, test_eps = split_episodes(dataset, config["holdout"] if self.holdout is None else self.holdout)
        if self.train_frames < 1 or self.test_frames < 1:
            raise UserError(f"--train-frames and --test-frames must be positive, got {self.train_frames} and {self.test_frames}")
        train_idx = frame_indices(dataset, train_eps, self.train_frames)
        test_idx = frame_indices(dataset, test_eps, self.test_frames)
        train_y, test_y = env.probe_variables(dataset.state[train_idx]), env.probe_variables(dataset.state[test_idx])

        tabular = model.cfg.objective == "t-jepa"
        points = PointMaps(dataset, model.cfg.point_stats) if model.cfg.objective == "3d-jepa" else None

        index = {"train": train_idx, "test": test_idx}
        if tabular:  # t-jepa's input, computed once: the trained and untrained encoders share its statistics
            with torch.no_grad():
                state_vectors = {split: torch.cat([model.vectors(torch.from_numpy(dataset.read_frames(part)), torch.from_numpy(dataset.proprio[part]))
                                                   for part in np.array_split(idx, max(1, len(idx) // 256))])  # [N, F]
                                 for split, idx in index.items()}

        def features(jepa, split: str) -> dict[str, np.ndarray]:
            if not tabular:
                return embed(jepa.encoder, dataset, index[split], enc_cfg.tubelet, model.cfg.frame_skip, jepa.projector, frames=points)
            with torch.no_grad():
                tokens = jepa.encoder(state_vectors[split])  # [N, F, D]
            return {"tokens": tokens.flatten(1).numpy(), "pooled": tokens.mean(1).numpy()}

        def probe(jepa) -> dict[str, np.ndarray]:
            train, test = features(jepa, "train"), features(jepa, "test")
            return {k: read_out(train[k], train_y, test[k], test_y) for k in train}

        def best(r2: dict[str, np.ndarray]) -> tuple[str, float]:
            scores = {k: float(v[positions].mean()) for k, v in r2.items()}
            kind = max(scores, key=scores.get)
            return kind, round(scores[kind], 4)

        print("probe: trained encoder", file=sys.stderr)
        trained = probe(model)
        print("probe: random-init encoder (floor)", file=sys.stderr)
        torch.manual_seed(12345)
        random_init = probe(build_jepa(model.cfg).eval())
        print("probe: raw pixels (floor)", file=sys.stderr)
        flat = lambda idx: dataset.frames[idx].reshape(len(idx), -1).astype(np.float32) / 255.0  # noqa: E731
        pixels_r2 = read_out(flat(train_idx), train_y, flat(test_idx), test_y)
        if points is not None:  # the point maps the encoder reads, probed as they are (beside the pixels)
            flat_points = lambda idx: points[idx].reshape(len(idx), -1)  # noqa: E731
            points_r2 = read_out(flat_points(train_idx), train_y, flat_points(test_idx), test_y)
        if tabular:  # the vector the encoder reads, probed as it is: what T-JEPA's tokens add to it or lose
            vector_r2 = read_out(state_vectors["train"].numpy(), train_y, state_vectors["test"].numpy(), test_y)
        kind, position_r2 = best(trained)
        result = {
            "task": dataset.task, "objective": config["model"]["objective"], "features": kind,
            "r2": dict(zip(names, np.round(trained[kind], 4).tolist())),
            "position_r2": position_r2,
            "position_r2_random_init": best(random_init)[1],
            "position_r2_pixels": round(float(pixels_r2[positions].mean()), 4),
            "r2_pixels": dict(zip(names, np.round(pixels_r2, 4).tolist())),
            **({"vector_r2": dict(zip(names, np.round(vector_r2, 4).tolist()))} if tabular else {}),
            **({"points_r2": dict(zip(names, np.round(points_r2, 4).tolist()))} if points is not None else {}),
            "position_r2_by_features": {k: round(float(v[positions].mean()), 4) for k, v in trained.items()},
            "r2_by_features": {k: dict(zip(names, np.round(v, 4).tolist())) for k, v in trained.items()}, "head": self.head,
            "train_frames": len(train_idx), "test_frames": len(test_idx),
        }
        if not self.json:
            print(f"{self.head} probe R2 on held-out {dataset.task} episodes ({len(test_idx)} frames), best features: {kind}")
            for name in names:
                print(f"  {name:14s} {result['r2'][name]:7.4f}" + (f"   (the raw state vector: {result['vector_r2'][name]:.4f})" if tabular else ""))
            by = ", ".join(f"{k} {v:.4f}" for k, v in result["position_r2_by_features"].items())
            print(f"position R2: trained {position_r2:.4f} ({by}) | random-init encoder {result['position_r2_random_init']:.4f}"
                  f" | raw pixels {result['position_r2_pixels']:.4f}")
        return result
