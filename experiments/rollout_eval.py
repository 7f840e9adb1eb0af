"""`jepa rollout-eval`: how far a world model's open-loop imagination can be trusted.

On held-out episodes, the recorded action blocks are rolled out from each start's latent history
for horizons 1..H. Reported per horizon: the latent error (mean squared error in standardised
latent units), the copy-last-frame baseline (predict no change), the error with the actions
shuffled across samples (a model that ignores actions scores the same as with the true ones),
and the true-state position error read from predicted latents by a ridge probe fitted on
training frames (`worldmodel.probe.fit_ridge`; with the probe's own error on real latents, its floor). A video strip shows
real frames against the training frames nearest to each predicted latent.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs import task_spec
from envs.dataset import EpisodeDataset, split_episodes
from experiments.report import markdown_table
from experiments.runs import WORLD_MODEL_STAGE, check_dataset, load_world_model
from experiments.video import upscale, write_video
from infra.errors import UserError
from infra.files import write_json
from worldmodel.latents import Retrieval
from worldmodel.probe import fit_ridge, frame_indices, predict


def position_probe(latents: torch.Tensor, positions: np.ndarray):
    """A function reading positions [..., K] from latents [..., N, D]: the ridge probe fitted from
    latents [F, N, D] to positions [F, K]."""
    width = latents[0].numel()
    solution = fit_ridge(latents.flatten(1).double().numpy(), positions)
    return lambda z: predict(solution, z.flatten(-2).reshape(-1, width).double().numpy()).reshape(*z.shape[:-2], -1)


@dataclass
class RolloutEval:
    """Open-loop rollouts of recorded actions on held-out episodes: latent and position error per horizon."""

    run: Path
    """Run folder with a world model (`jepa train-wm --out RUN`)."""
    data: Path
    """Dataset of the same task and image size (the run's own: its held-out episodes are used)."""
    horizon: int = 25
    """Longest horizon in env steps (rounded up to whole action blocks)."""
    samples: int = 512
    """Start points drawn from the held-out episodes (fixed seed)."""
    seed: int = 0
    """Seed of the start points and of the action shuffle."""
    videos: int = 4
    """Rollouts shown in the video strip (0: none)."""
    json: bool = False
    """Print {"env_steps", "latent_error", "copy_last_error", "shuffled_action_error", "position_error", "success_tolerance", ...}."""

    def __call__(self) -> dict:
        model, config = load_world_model(self.run)
        dataset = EpisodeDataset(self.data)
        check_dataset(dataset, config, model.image_size, "rollout-eval")
        env = task_spec(dataset.task).env_class(pixels=False)
        skip, history = model.cfg.frame_skip, model.cfg.predictor.history
        blocks = math.ceil(self.horizon / skip)
        train_eps, test_eps = split_episodes(dataset, config["holdout"])
        span = (history - 1 + blocks) * skip  # env steps from the first history frame to the last target
        starts = np.concatenate([np.arange(dataset.episode_starts[e], dataset.episode_starts[e + 1] - span) for e in test_eps])
        if len(starts) == 0 or self.samples < 1 or blocks < 1:
            raise UserError(f"no held-out episode of {self.data} is long enough for {history} history frames and {self.horizon} "
                            "env steps, or --samples / --horizon is not positive: lower --horizon")
        rng = np.random.default_rng(self.seed)
        starts = np.sort(rng.choice(starts, min(self.samples, len(starts)), replace=False))
        frames = starts[:, None] + skip * np.arange(history + blocks)  # [S, Th+H] frame indices
        actions = torch.from_numpy(dataset.actions[starts[:, None] + np.arange(span)].reshape(len(starts), history - 1 + blocks, -1))
        positions = [env.probe_names.index(n) for n in env.position_names]
        true_pos = env.probe_variables(dataset.state[frames.ravel()])[:, positions].reshape(*frames.shape, -1)

        with torch.no_grad():
            z = model.encode(torch.from_numpy(dataset.frames[frames.ravel()]).reshape(*frames.shape, *dataset.frames.shape[1:]),
                             torch.from_numpy(dataset.proprio[frames.ravel()]).reshape(*frames.shape, -1))
            hist, target = z[:, :history], z[:, history:]  # [S, Th, N, D], [S, H, N, D]
            predicted = model.rollout(hist, actions)
            shuffled = model.rollout(hist, actions[torch.from_numpy(rng.permutation(len(starts)))])
        library = Retrieval(model, dataset, frame_indices(dataset, train_eps, 4000))
        probe = position_probe(library.latents, env.probe_variables(dataset.state[library.index])[:, positions])
        error = lambda a: ((a - target) ** 2).mean((0, 2, 3)).tolist()  # noqa: E731  per horizon
        distance = lambda p: np.linalg.norm(p - true_pos[:, history:], axis=-1).mean(0).tolist()  # noqa: E731
        result = {
            "task": dataset.task, "env_steps": [skip * (k + 1) for k in range(blocks)], "samples": len(starts),
            "latent_error": error(predicted), "copy_last_error": error(hist[:, -1:].expand_as(target)),
            "shuffled_action_error": error(shuffled),
            "position_error": distance(probe(predicted)), "copy_last_position_error": distance(probe(hist[:, -1:]).repeat(blocks, 1)),
            "probe_position_error": distance(probe(target)),
            "success_tolerance": float(env.tolerance[0]),
        }
        out = Path(self.run) / WORLD_MODEL_STAGE
        write_json(out / "rollout_eval.json", result)
        if self.videos:
            self._video(out, dataset, frames[: self.videos, history:], predicted[: self.videos], library)
        if not self.json:
            columns = {"env_steps": "env steps", "latent_error": "latent err", "copy_last_error": "copy-last",
                       "shuffled_action_error": "shuffled actions", "position_error": "position err",
                       "copy_last_position_error": "copy-last pos", "probe_position_error": "probe floor"}
            rows = [{key: result[key][k] if key == "env_steps" else f"{result[key][k]:.4f}" for key in columns} for k in range(blocks)]
            print(f"open-loop rollouts on {len(starts)} held-out {dataset.task} starts (success tolerance {result['success_tolerance']}):")
            print(markdown_table(rows, columns))
            if self.videos:
                print(f"video strip: {out / 'rollout.mp4'}", file=sys.stderr)
        return result

    def _video(self, out: Path, dataset: EpisodeDataset, real_idx: np.ndarray, predicted: torch.Tensor, retrieval: Retrieval) -> None:
        """Real frames (top) against the training frames nearest each predicted latent (bottom), one clip per start."""
        from torch.utils.tensorboard import SummaryWriter

        real = dataset.frames[real_idx.ravel()].reshape(*real_idx.shape, *dataset.frames.shape[1:])
        imagined = retrieval(predicted)  # [V, H, h, w, 3]
        pairs = np.concatenate([real, imagined], 2)  # [V, H, 2*h, w, 3]
        clip = np.concatenate(list(pairs), 2)  # [H, 2*h, V*w, 3]: the starts side by side
        write_video(out / "rollout.mp4", clip, fps=2)
        strip = upscale(np.concatenate(list(pairs[0]), 1), 2)  # [2*h, H*w, 3]: first start, horizons left to right
        with SummaryWriter(str(out / "tb")) as writer:
            writer.add_image("eval/rollout_real_top_imagined_bottom", strip, dataformats="HWC")
