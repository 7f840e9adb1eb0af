"""Demonstrations as a policy learns from them: which episodes, where each ends, the windows a
training batch draws, the square's symmetry turns, the cached features of a fixed encoder, and
the losses of a policy on fixed windows (for held-out scoring and `--candidates`).

Any policy (agents/policy.py) declares what its windows hold in a `WindowSpec`; this module
draws them, so the command that trains it does not need to know which policy it feeds. Shapes
of a window's arrays are in agents/chunk_policy.py and agents/moment_policy.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from envs import task_spec
from envs.dataset import EpisodeDataset
from envs.symmetry import ELEMENTS, SquareSymmetry, turn_images, turn_vectors
from infra.errors import UserError

VAL_WINDOWS, VAL_BATCH = 512, 64  # windows scored, drawn once (every score sees the same ones), and per forward pass
FEATURE_CHUNK = 512  # images per batch when a fixed encoder's features are cached
PALETTE_FRAME_STRIDE = 8  # every 8th frame a window starts at fits a colour palette and its moments' statistics


@dataclass(frozen=True)
class FeatureCache:
    """A fixed encoder's features of every frame a window can read and of every goal image, in each
    of the square's turns: frames [E, n, F] (dataset frame i at row rows[i]), goals [E, episodes in
    the dataset, F], rows [frames in the dataset] (-1 where not cached)."""

    frames: np.ndarray
    goals: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True)
class WindowSpec:
    """What a policy's training windows hold: `history` frames up to t, `horizon` actions from t,
    the frames at `future_offsets` after t, the proprio at the demonstration's `waypoints` (after t)
    and `goal_waypoints` steps; images, or a fixed encoder's cached `features` in their place."""

    history: int
    horizon: int
    future_offsets: tuple[int, ...] = ()
    waypoints: tuple[int, ...] = ()
    goal_waypoints: tuple[int, ...] = ()
    symmetric: bool = False
    """Turn each window by one of the task's square symmetries, drawn at random."""
    features: FeatureCache | None = None
    """Carry "frame_features", "goal_features" (and "future_features") from this cache; None: carry
    the images ("frames", "goal", "future")."""


def square_symmetry(task: str) -> SquareSymmetry:
    """The task's symmetries, or a one-line error for a task that declares none."""
    if (symmetry := task_spec(task).env_class.square_symmetry) is None:
        raise UserError(f"{task} does not declare the square's symmetries (a task seen from straight above that they leave unchanged, "
                        "envs/symmetry.py): drop --model.square-symmetry")
    return symmetry


def last_actions(dataset: EpisodeDataset, episodes: np.ndarray, trim: bool) -> np.ndarray:
    """Frame index of each episode's last action used: the one that first reaches the goal
    (trim), or the episode's last (its final row holds no action)."""
    lasts = dataset.episode_starts[episodes + 1] - 2
    if trim:
        for i, e in enumerate(episodes):
            reached = np.flatnonzero(dataset.is_success[dataset.episode(e)])
            if len(reached) and reached[0] > 0:
                lasts[i] = dataset.episode_starts[e] + reached[0] - 1
    return lasts


def demonstration_episodes(dataset: EpisodeDataset, successful_only: bool = True, held_out: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the episodes a policy learns from, and of those among the last `held_out` episodes
    kept apart to score it: all, or those that reach their goal and do not start there (nothing to
    learn; so fewer than `held_out` may be scored)."""
    if not 0 <= held_out < dataset.num_episodes:
        raise UserError(f"--val-episodes must be from 0 to {dataset.num_episodes - 1} ({dataset.path} holds {dataset.num_episodes} episodes), got {held_out}")
    episodes = np.arange(dataset.num_episodes)
    if successful_only:
        episodes = episodes[[dataset.is_success[dataset.episode(e)][1:].any() and not dataset.is_success[dataset.episode_starts[e]] for e in episodes]]
    split = np.searchsorted(episodes, dataset.num_episodes - held_out)
    if split == 0:
        before = " before the held-out ones" if held_out else ""
        raise UserError(f"no demonstration in {dataset.path}{before} reaches its goal: collect with --policy expert")
    if held_out and split == len(episodes):
        raise UserError(f"none of the last {held_out} demonstrations in {dataset.path} reaches its goal: hold out more with --val-episodes")
    return episodes[:split], episodes[split:]


class Demonstrations:
    """The episodes of `dataset` a policy learns from (`episodes`) and those held out to score it,
    each used up to `last_actions` (trimmed at its first success with `trim`)."""

    def __init__(self, dataset: EpisodeDataset, successful_only: bool = True, held_out: int = 0, trim: bool = True):
        self.dataset, self.trim = dataset, trim
        self.episodes, self.held_out = demonstration_episodes(dataset, successful_only, held_out)
        self.lasts = last_actions(dataset, self.episodes, trim)

    @property
    def steps(self) -> int:
        """Frames a training window can start at, over all demonstrations learned from."""
        return int((self.lasts - self.dataset.episode_starts[self.episodes] + 1).sum())

    def learned_frames(self) -> np.ndarray:
        """Dataset index of every frame a training window starts at."""
        return np.concatenate([np.arange(self.dataset.episode_starts[e], last + 1) for e, last in zip(self.episodes, self.lasts)])

    def training_proprio(self, symmetric: bool) -> np.ndarray:
        """The proprio [n, P] of every frame a window starts at, in every turn training draws."""
        proprio = self.dataset.proprio[self.learned_frames()]
        if symmetric:
            proprio = np.concatenate([turn_vectors(proprio, square_symmetry(self.dataset.task).proprio, *element) for element in ELEMENTS])
        return proprio

    def palette_frames(self, symmetric: bool) -> np.ndarray:
        """Every PALETTE_FRAME_STRIDE-th frame [n, H, W, 3] a window starts at, in every turn training
        draws: what a colour palette and its moments' statistics are fitted to."""
        frames = self.dataset.read_frames(self.learned_frames()[::PALETTE_FRAME_STRIDE])
        return np.concatenate([turn_images(frames, *element) for element in ELEMENTS]) if symmetric else frames

    def cache_features(self, encode, symmetric: bool) -> FeatureCache:
        """The features `encode(uint8 images [n, H, W, 3]) -> [n, F]` of every frame a window of the
        learned and held-out demonstrations can read (each one's first to the one after its last
        action) and of every goal image, in each of the square's turns (the identity alone unless
        `symmetric`)."""
        seen = np.concatenate([self.episodes, self.held_out])
        index = np.concatenate([np.arange(self.dataset.episode_starts[e], last + 2) for e, last in zip(seen, last_actions(self.dataset, seen, self.trim))])
        rows = np.full(len(self.dataset.frames), -1)
        rows[index] = np.arange(len(index))
        elements = ELEMENTS if symmetric else ELEMENTS[:1]
        compute = lambda images: torch.cat([encode(torch.from_numpy(part)) for part in np.array_split(images, max(1, len(images) // FEATURE_CHUNK))]).numpy()  # noqa: E731
        frames, goals = self.dataset.read_frames(index), self.dataset.goal_frames[:]
        return FeatureCache(np.stack([compute(turn_images(frames, *element)) for element in elements]),
                            np.stack([compute(turn_images(goals, *element)) for element in elements]), rows)

    def goal_and_reached(self, cache: FeatureCache) -> tuple[np.ndarray, np.ndarray]:
        """Cached features [turns, N, F] of the learned demonstrations' goal images and of the frames
        where each first reaches its goal (its last without a success)."""
        return cache.goals[:, self.episodes], cache.frames[:, cache.rows[self.lasts + 1]]

    def windows(self, spec: WindowSpec, held_out: bool = False):
        """A function `(rng, batch) -> dict` of windows (see `draw_windows`) of the learned demonstrations, or of the held-out ones."""
        episodes = self.held_out if held_out else self.episodes
        lasts = last_actions(self.dataset, episodes, self.trim) if held_out else self.lasts
        return draw_windows(self.dataset, episodes, lasts, spec)

    def scorer(self, spec: WindowSpec, seed: int, held_out: bool):
        """A function `policy -> {loss name: mean}` of the policy's losses (`loss/*` of its forward,
        and their weighted sum `total`) on fixed windows of the held-out demonstrations, or of those
        it learned from, as recorded (no turn, no shift). Held out: where the training loss falls and
        this one does not, the policy memorises its demonstrations rather than reading what they
        share. Learned: how well the run fitted them, one number for every training seed."""
        draw = self.windows(dataclasses.replace(spec, symmetric=False), held_out)
        windows = []  # drawn at the first score (a finished run, or another DDP rank, never reads them)

        @torch.no_grad()
        def score(policy) -> dict:
            if not windows:
                rng = np.random.default_rng([seed, 3])
                windows.extend(draw(rng, VAL_BATCH) for _ in range(VAL_WINDOWS // VAL_BATCH))
            device, means = policy.device, {}
            for batch in windows:
                total, metrics = policy({k: v.to(device) for k, v in batch.items()})
                for name, value in [("total", total)] + [(k.removeprefix("loss/"), v) for k, v in metrics.items() if k.startswith("loss/")]:
                    means[name] = means.get(name, 0.0) + float(value) / len(windows)
            return means

        return score


def draw_windows(dataset: EpisodeDataset, episodes: np.ndarray, lasts: np.ndarray, spec: WindowSpec):
    """A function `(rng, batch) -> dict` of training windows: an episode drawn uniformly (every
    demonstration weighs the same, short ones are not drowned), then a frame t of it up to its last
    action `lasts`, its history (the episode's first frame standing in before it), the episode's
    goal image, actions t..t+k-1 and future frames at the spec's offsets, and the proprio at the
    episode's waypoint and goal-waypoint steps, each with a mask for steps outside the episode
    (before its start, or past its last action: the observation after it still counts) and, for the
    (frame) waypoints, for those not after t. With `spec.symmetric`, each window is turned by one of
    the task's symmetries drawn at random; with `spec.features`, windows carry the cached features."""
    symmetry = square_symmetry(dataset.task) if spec.symmetric else None
    firsts = dataset.episode_starts[episodes]
    sizes = lasts - firsts + 1
    offsets = np.asarray(spec.future_offsets, dtype=np.int64)

    def draw(rng: np.random.Generator, batch: int) -> dict:
        pick = rng.integers(0, len(episodes), batch)
        first, last = firsts[pick], lasts[pick]
        t = first + (rng.random(batch) * sizes[pick]).astype(np.int64)  # [B]
        history = np.maximum(t[:, None] - np.arange(spec.history - 1, -1, -1), first[:, None])  # [B, h]
        ahead = t[:, None] + np.arange(spec.horizon)  # [B, k]
        future = np.minimum(t[:, None] + offsets, last[:, None] + 1)  # [B, m]
        out = {"t": t, "proprio": dataset.proprio[t], "actions": dataset.actions[np.minimum(ahead, last[:, None])], "action_valid": ahead <= last[:, None]}
        if spec.features is None:
            out |= {"frames": dataset.read_frames(history), "goal": dataset.goal_frames[episodes[pick]]}
        if len(offsets):
            out |= {"future_valid": t[:, None] + offsets <= last[:, None] + 1} | ({"future": dataset.read_frames(future)} if spec.features is None else {})
        for name, steps, after_t in (("waypoints", spec.waypoints, True), ("goal_waypoints", spec.goal_waypoints, False)):
            if steps:
                steps = np.asarray(steps, dtype=np.int64)
                at = np.where(steps >= 0, first[:, None] + steps, last[:, None] + 2 + steps)  # [B, w]; -1: the frame after the last action
                valid = (at >= first[:, None]) & (at <= last[:, None] + 1) & ((at > t[:, None]) if after_t else True)
                out |= {name: dataset.proprio[np.clip(at, first[:, None], last[:, None] + 1)], f"{name}_valid": valid}
        elements = rng.integers(0, len(ELEMENTS), batch) if symmetry is not None else np.zeros(batch, np.int64)
        if symmetry is not None:
            turn_windows(out, symmetry, elements)
        if (cache := spec.features) is not None:  # cached in every turn
            out |= {"frame_features": cache.frames[elements[:, None], cache.rows[history]], "goal_features": cache.goals[elements, episodes[pick]]}
            if len(offsets):
                out["future_features"] = cache.frames[elements[:, None], cache.rows[future]]
        return {name: torch.from_numpy(value) for name, value in out.items()}

    return draw


def turn_windows(windows: dict, symmetry: SquareSymmetry, elements: np.ndarray) -> None:
    """Turn each window (numpy arrays) in place by its element of ELEMENTS: its images, and the
    planar vectors of its proprio, waypoints and actions."""
    for index in range(1, len(ELEMENTS)):
        chosen = elements == index
        if chosen.any():
            for name in ("frames", "goal", "future"):
                if name in windows:
                    windows[name][chosen] = turn_images(windows[name][chosen], *ELEMENTS[index])
            for name, pairs in (("proprio", symmetry.proprio), ("waypoints", symmetry.proprio), ("goal_waypoints", symmetry.proprio), ("actions", symmetry.actions)):
                if name in windows:
                    windows[name][chosen] = turn_vectors(windows[name][chosen], pairs, *ELEMENTS[index])
