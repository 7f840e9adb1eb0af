"""Videos for people to look at: frames to mp4 or gif with imageio, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of [..., H, W, 3] frames (small renders stay crisp)."""
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, scale: int = 4) -> Path:
    """Write frames [T, H, W, 3] uint8 to an .mp4 or .gif; a temporary name is renamed at the end."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    frames = upscale(np.asarray(frames, np.uint8), scale)
    if path.suffix == ".gif":
        imageio.mimsave(tmp, list(frames), duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(tmp, list(frames), fps=fps, macro_block_size=1)
    os.replace(tmp, path)
    return path
