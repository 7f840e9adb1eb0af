"""A world model's latents of whole frame stores: batched encoding (a dataset's memory-mapped
frames, in order), and retrieval of the real frame nearest to a latent, which is how imagined
futures are shown (no decoder is trained)."""

from __future__ import annotations

import numpy as np
import torch

from envs.dataset import EpisodeDataset
from infra.progress import progress
from worldmodel.world_model import WorldModel


@torch.no_grad()
def encode_frames(model: WorldModel, frames: np.ndarray, proprio: np.ndarray | None = None, batch: int = 512,
                  desc: str = "encode") -> torch.Tensor:
    """Unstandardised states [F, N, D] of frames [F, H, W, 3] and their proprio [F, P] (None: read
    from the images where the state holds proprio); a memory map is read in order."""
    out = []
    for lo in progress(range(0, len(frames), batch), desc=desc, unit="batch", leave=False):
        p = None if proprio is None else torch.from_numpy(np.asarray(proprio[lo: lo + batch], np.float32))[:, None]
        out.append(model.raw_latent(torch.from_numpy(np.array(frames[lo: lo + batch]))[:, None], p)[:, 0])
    return torch.cat(out)


def standardised_latents(model: WorldModel, frames: np.ndarray, proprio: np.ndarray | None = None, desc: str = "encode") -> torch.Tensor:
    """Standardised states [F, N, D] of frames [F, H, W, 3] (as `model.encode` gives, in batches)."""
    return (encode_frames(model, frames, proprio, desc=desc) - model.z_mean) / model.z_std


class Retrieval:
    """Nearest frame of a library (the dataset's frames at `index`) to a latent."""

    def __init__(self, model: WorldModel, dataset: EpisodeDataset, index: np.ndarray):
        self.frames, self.index = dataset.frames, index
        self.latents = standardised_latents(model, dataset.frames[index], dataset.proprio[index], "encode retrieval frames")  # [K, N, D]

    def __call__(self, z: torch.Tensor) -> np.ndarray:
        """Frames [..., H, W, 3] nearest to latents [..., N, D]."""
        flat = z.reshape(-1, z.shape[-2] * z.shape[-1])
        nearest = torch.cdist(flat, self.latents.flatten(1)).argmin(1).numpy()
        return self.frames[self.index[nearest]].reshape(*z.shape[:-2], *self.frames.shape[1:])
