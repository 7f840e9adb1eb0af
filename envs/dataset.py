"""Episode datasets on disk (HDF5 via h5py) and the window sampler that training reads through.

Format `jepa-worlds/episodes`, version 1: one file `episodes.h5`, documented in DATASET.md.
Every per-frame array is concatenated over episodes; episode e owns frames
`episode_starts[e]:episode_starts[e + 1]`. `actions[t]` is the action taken at frame t (the last
row of an episode is zero padding). Frames are stored uncompressed and contiguous so the sampler
memory-maps them: a batch reads only its own windows, nothing is decoded.

    frames       uint8   [N, H, W, 3]
    actions      float32 [N, A]
    proprio      float32 [N, P]
    state        float64 [N, S]   true simulator state: probes and evaluation only
    reward       float32 [N]
    is_success   bool    [N]
    goal_state   float64 [E, S]   the goal of each episode (a full simulator state)
    goal_frames  uint8   [E, H, W, 3]  the goal rendered as an image
    episode_starts int64 [E + 1]
    depth        float32 [N, H, W]   optional (`jepa collect --depth`): the camera's depth, metres
attributes: format, version, task, image_size, frame_skip, render_revision (absent before it was recorded), policy, seed,
config (JSON), and with depth depth_camera (JSON: the intrinsics `worldmodel.point_cloud.unproject` reads).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from infra.errors import UserError
from infra.files import fsync

FORMAT, VERSION = "jepa-worlds/episodes", 1
FILENAME = "episodes.h5"
PER_FRAME = ("frames", "actions", "proprio", "state", "reward", "is_success")
SMALL = ("actions", "proprio", "state", "reward", "is_success", "goal_state", "goal_frames", "episode_starts")


@dataclass
class Episode:
    """One episode, T + 1 frames: frames [T+1, H, W, 3], actions [T+1, A] (last row zero), ..."""

    frames: np.ndarray
    actions: np.ndarray
    proprio: np.ndarray
    state: np.ndarray
    reward: np.ndarray
    is_success: np.ndarray
    goal_state: np.ndarray
    goal_frame: np.ndarray
    depth: np.ndarray | None = None  # [T+1, H, W] float32, with `jepa collect --depth`

    @property
    def succeeded(self) -> bool:
        return bool(self.is_success.any())


class DatasetWriter:
    """Writes a fixed number of equal-length episodes to `<dir>/episodes.h5.tmp`, renamed on close."""

    def __init__(self, directory: str | Path, episodes: int, episode_frames: int, example: Episode, attrs: dict):
        self.path = Path(directory) / FILENAME
        self.tmp = self.path.with_suffix(".h5.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.tmp, "w")
        self.episodes, self.episode_frames, self.count = episodes, episode_frames, 0
        self.per_frame = PER_FRAME + (("depth",) if example.depth is not None else ())
        total = episodes * episode_frames
        try:
            for name in self.per_frame:
                value = getattr(example, name)
                self.file.create_dataset(name, (total, *value.shape[1:]), dtype=value.dtype)  # contiguous
            self.file.create_dataset("goal_state", (episodes, *example.goal_state.shape), dtype=np.float64)
            self.file.create_dataset("goal_frames", (episodes, *example.goal_frame.shape), dtype=np.uint8)
            self.file.create_dataset("episode_starts", data=np.arange(episodes + 1, dtype=np.int64) * episode_frames)
            self.file.attrs.update({"format": FORMAT, "version": VERSION, **attrs})
        except BaseException:
            self.abort()
            raise

    def add(self, episode: Episode) -> None:
        """Append one episode (episodes must come in order of index)."""
        lo = self.count * self.episode_frames
        for name in self.per_frame:
            self.file[name][lo: lo + self.episode_frames] = getattr(episode, name)
        self.file["goal_state"][self.count] = episode.goal_state
        self.file["goal_frames"][self.count] = episode.goal_frame
        self.count += 1

    def close(self) -> Path:
        """Finish the file and move it into place (an old dataset stays intact until then)."""
        if self.count != self.episodes:
            self.abort()
            raise UserError(f"dataset incomplete: {self.count} of {self.episodes} episodes written; nothing was replaced")
        self.file.close()
        fsync(self.tmp)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class EpisodeDataset:
    """Read access to a dataset folder: small arrays in memory, frames memory-mapped."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.path = directory / FILENAME if directory.is_dir() else directory
        if not self.path.exists():
            raise UserError(f"no dataset at {directory}: create one with `jepa collect --out {directory}`")
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise UserError(f"{self.path} is not a jepa-worlds episode dataset")
                if f.attrs["version"] > VERSION:
                    raise UserError(f"{self.path} has format version {f.attrs['version']}; this jepa-worlds reads up to {VERSION}: upgrade")
                self.attrs = dict(f.attrs)
                self.config = json.loads(self.attrs.get("config", "{}"))
                revision = self.attrs.get("render_revision")  # how the frames were drawn (the env class's); None: not recorded
                self.render_revision = None if revision is None else int(revision)
                small = {name: f[name][()] for name in SMALL}
                frames = f["frames"]
                offset, shape, dtype = frames.id.get_offset(), frames.shape, frames.dtype
                depth = f["depth"] if "depth" in f else None
                depth_offset = depth.id.get_offset() if depth is not None else None
                self.depth_camera = json.loads(self.attrs["depth_camera"]) if depth is not None else None
        except UserError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise UserError(f"cannot read dataset {self.path} ({exc}); it may be truncated or corrupt: collect it again")
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if offset is None or os.path.getsize(self.path) < offset + nbytes:
            raise UserError(f"dataset {self.path} is truncated: collect it again")
        for name, value in small.items():
            setattr(self, name, value)
        self.frames = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
        self.depth = None if depth_offset is None else np.memmap(self.path, dtype=np.float32, mode="r", offset=depth_offset, shape=shape[:3])
        if len(self.episode_starts) < 2 or self.episode_starts[-1] != len(self.frames):
            raise UserError(f"dataset {self.path} is empty or inconsistent: collect it again")

    @property
    def task(self) -> str:
        return str(self.attrs["task"])

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    def read_frames(self, index: np.ndarray) -> np.ndarray:
        """Frames [*index.shape, H, W, 3] uint8 at any array of frame indices (`read_rows`)."""
        return read_rows(self.frames, index)

    def episode(self, index: int) -> slice:
        """Frame slice of episode `index`."""
        return slice(int(self.episode_starts[index]), int(self.episode_starts[index + 1]))


def read_rows(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows [*index.shape, ...] of a memory-mapped per-frame array at any array of frame indices,
    read in file order (random reads in order are several times faster)."""
    flat = np.asarray(index).ravel()
    order = np.argsort(flat)
    out = np.empty((len(flat), *array.shape[1:]), array.dtype)
    out[order] = array[flat[order]]
    return out.reshape(*np.shape(index), *array.shape[1:])


def split_episodes(dataset: EpisodeDataset, holdout: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(training episodes, held-out episodes): the last `holdout` fraction is held out (at least
    one episode whenever there are two or more)."""
    n = dataset.num_episodes
    held = max(1, int(round(n * holdout))) if n > 1 else 0
    if n - held < 1:
        raise UserError(f"{dataset.path} has {n} episode(s): collect at least 2 to hold some out")
    return np.arange(n - held), np.arange(n - held, n)


class WindowSampler:
    """Random windows of T consecutive frames inside single episodes of the given episodes."""

    def __init__(self, dataset: EpisodeDataset, window: int, episodes: np.ndarray | None = None):
        if window < 1:
            raise UserError(f"windows need at least one frame, got {window}")
        episodes = np.arange(dataset.num_episodes) if episodes is None else np.asarray(episodes)
        starts = [np.arange(dataset.episode_starts[e], dataset.episode_starts[e + 1] - window + 1) for e in episodes]
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        if len(self.starts) == 0:
            raise UserError(f"no episode is long enough for windows of {window} frames")
        self.dataset, self.window = dataset, window

    def draw(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """First frame indices [B] of `batch` random windows."""
        return self.starts[rng.integers(0, len(self.starts), batch)]

    def load(self, first: np.ndarray, frames=None) -> tuple[np.ndarray, np.ndarray]:
        """(frames [B, T, H, W, 3] uint8, actions [B, T-1, A] float32) of the windows starting at
        `first`; the frames read from `frames` where given (anything indexed like them: 3d-jepa's point maps)."""
        index = np.asarray(first)[:, None] + np.arange(self.window)  # [B, T]
        return self.dataset.read_frames(index) if frames is None else frames[index], self.dataset.actions[index[:, :-1]]
