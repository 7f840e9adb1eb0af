"""Probes: how well a frozen representation reads out the true simulator state.

A ridge regression is fitted from embeddings of training-episode frames to the task's probe
variables, its penalty chosen on a validation slice of the training episodes, and scored by R2
per variable on held-out episodes (the usual linear-evaluation protocol of I-JEPA / V-JEPA,
applied to state regression as in DINO-WM's and PLDM's probes). An MLP probe (`fit_mlp_probe`)
tells a variable the features do not hold from one they hold nonlinearly.
"""

from __future__ import annotations

import numpy as np
import torch

from envs.dataset import EpisodeDataset
from worldmodel.encoders import grid_coords, keypoints

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def frame_indices(dataset: EpisodeDataset, episodes: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """About `count` frame indices spread evenly over the given episodes, fixed by the seed."""
    frames = np.concatenate([np.arange(dataset.episode_starts[e], dataset.episode_starts[e + 1]) for e in episodes])
    if len(frames) <= count:
        return frames
    return np.sort(np.random.default_rng(seed).choice(frames, count, replace=False))


def clips(dataset: EpisodeDataset, index: np.ndarray, length: int, stride: int = 1, frames=None) -> np.ndarray:
    """Frames [N, length, H, W, 3], `stride` apart, ending at each index, clamped to the start of its
    episode, read from `frames` (anything indexed like the dataset's frames; default: them)."""
    episode = np.searchsorted(dataset.episode_starts, index, side="right") - 1
    offsets = index[:, None] - stride * np.arange(length - 1, -1, -1)
    offsets = np.maximum(offsets, dataset.episode_starts[episode][:, None])
    return (dataset.frames if frames is None else frames)[offsets]


@torch.no_grad()
def embed(encoder: torch.nn.Module, dataset: EpisodeDataset, index: np.ndarray, tubelet: int, stride: int = 1,
          projector: torch.nn.Module | None = None, batch: int = 256, frames=None) -> dict[str, np.ndarray]:
    """Embeddings of the frames at `index`: "tokens" [N, tokens * D], "pooled" [N, D] (mean),
    "keypoints" [N, 2D] (parameter-free spatial soft-argmax of each channel), and with a projector
    "latent" [N, P] (the compact frame latent that the objective trained). `frames`: what the
    encoder reads in place of the dataset's frames (3d-jepa: its `PointMaps`)."""
    encoder.eval()
    out: dict[str, list] = {"tokens": [], "pooled": [], "keypoints": [], "latent": []}
    for lo in range(0, len(index), batch):
        z = encoder(torch.from_numpy(clips(dataset, index[lo: lo + batch], tubelet, stride, frames)))[:, -1]  # [B, N, D]
        out["pooled"].append(z.mean(1).float().numpy())
        out["keypoints"].append(keypoints(z, grid_coords(int(round(z.shape[1] ** 0.5)))).float().numpy())
        out["tokens"].append(z.flatten(1).float().numpy())
        if projector is not None:
            out["latent"].append(projector(z).float().numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def r2_score(y: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """R2 per column."""
    residual = ((y - prediction) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - residual / np.maximum(total, 1e-12)


def ridge_weights(x: np.ndarray, y: np.ndarray, alphas) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Ridge solutions (feature mean, weights, target mean) for each penalty, from one
    eigen-decomposition of the smaller Gram matrix; inputs standardised, penalty scaled by N."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xs = ((x - mean) / scale).astype(np.float64)
    yc = y - y.mean(0)
    n, f = xs.shape
    if f <= n:
        s2, v = np.linalg.eigh(xs.T @ xs)
        proj = v.T @ (xs.T @ yc)
        solve = lambda a: v @ (proj / (s2 + a * n)[:, None])  # noqa: E731
    else:
        s2, u = np.linalg.eigh(xs @ xs.T)
        proj = u.T @ yc
        solve = lambda a: xs.T @ (u @ (proj / (s2 + a * n)[:, None]))  # noqa: E731
    return [(mean, solve(a) / scale[:, None], y.mean(0)) for a in alphas]


def predict(solution: tuple, x: np.ndarray) -> np.ndarray:
    """Targets [N, K] a ridge solution (`ridge_weights`) reads from features [N, F]."""
    mean, weights, y_mean = solution
    return (x - mean) @ weights + y_mean


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas=ALPHAS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ridge probe from features [N, F] to targets [N, K]: its penalty is the one of `alphas`
    with the best mean R2 on a validation tail (the last 20%) when fitted on the rest; it is then
    refitted on all of it."""
    cut = int(len(x) * 0.8)
    solutions = ridge_weights(x[:cut], y[:cut], alphas)
    scores = [r2_score(y[cut:], predict(sol, x[cut:])).mean() for sol in solutions]
    return ridge_weights(x, y, [alphas[int(np.argmax(scores))]])[0]


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """R2 per variable on the test set of a ridge probe fitted on the training set (`fit_ridge`)."""
    return r2_score(test_y, predict(fit_ridge(train_x, train_y), test_x))


def fit_mlp_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, hidden: int = 256,
                  steps: int = 3000, seed: int = 0) -> np.ndarray:
    """R2 per variable on the test set of a two-hidden-layer MLP fitted on the training set (inputs
    and targets standardised, AdamW, batch 256). Each variable is read at the step (checked every
    100) with its best R2 on a validation tail (the last 20%), so that each stops before it overfits."""
    generator = torch.Generator().manual_seed(seed)
    cut = int(len(train_x) * 0.8)
    mean, spread = train_x[:cut].mean(0), train_x[:cut].std(0)
    scale = np.where(spread > 1e-6, spread, 1.0)  # a feature constant in training stays unscaled
    y_mean, y_scale = train_y[:cut].mean(0), train_y[:cut].std(0) + 1e-6
    # clipped: a pixel almost never lit in training must not read as thousands of spreads when it is
    x = lambda a: torch.from_numpy(np.clip((a - mean) / scale, -10, 10).astype(np.float32))  # noqa: E731
    fit_x, val_x, test_t = x(train_x[:cut]), x(train_x[cut:]), x(test_x)
    fit_y = torch.from_numpy(((train_y[:cut] - y_mean) / y_scale).astype(np.float32))
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(fit_x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                              torch.nn.Linear(hidden, train_y.shape[1]))
    optimiser = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    read = lambda a: net(a).detach().numpy() * y_scale + y_mean  # noqa: E731
    best, prediction = np.full(train_y.shape[1], -np.inf), np.zeros_like(test_y, dtype=np.float64)
    for step in range(1, steps + 1):
        batch = torch.randint(len(fit_x), (256,), generator=generator)
        loss = torch.nn.functional.mse_loss(net(fit_x[batch]), fit_y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0:
            score = r2_score(train_y[cut:], read(val_x))
            better = score > best
            best[better] = score[better]
            prediction[:, better] = read(test_t)[:, better]
    return r2_score(test_y, prediction)
