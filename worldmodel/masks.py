"""Multi-block spatiotemporal masks (V-JEPA, Bardes et al. 2024, after I-JEPA's multi-block).

A mask is a union of rectangular blocks on the token grid that span the whole clip in time (a
block masked in one frame is masked in all, so the predictor cannot copy from a neighbouring
frame). V-JEPA alternates two kinds: short-range (8 blocks of about 15% of the grid each) and
long-range (2 blocks of about 70%). A third kind masks the whole last frame: on small
scenes the moving agent is a token or two, and a spatial block that hides it in every frame
leaves nothing to predict it from, while predicting the next frame requires knowing it. One mask is drawn per step and shared by the batch, from a
generator seeded by the step, so training is reproducible and equal across DDP ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskConfig:
    """Block-mask sampling."""

    short_blocks: int = 8
    """Blocks in a short-range mask."""
    short_scale: float = 0.15
    """Area of each short-range block, as a fraction of the grid."""
    long_blocks: int = 2
    """Blocks in a long-range mask."""
    long_scale: float = 0.7
    """Area of each long-range block, as a fraction of the grid."""
    aspect: tuple[float, float] = (0.75, 1.5)
    """Range of block aspect ratios (height / width)."""
    min_context: float = 0.1
    """Smallest fraction of tokens left visible."""
    future_prob: float = 0.5
    """Chance of a future mask instead: every token of the last frame is a target, the earlier
    frames are the context (a block spanning space, at the end of the clip in time)."""


def sample_mask(cfg: MaskConfig, frames: int, grid: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(context indices [Kc], target indices [Kt]) into the flat [frames * grid * grid] tokens."""
    if frames > 1 and torch.rand((), generator=generator).item() < cfg.future_prob:
        tokens = torch.arange(frames * grid * grid)
        return tokens[: (frames - 1) * grid * grid], tokens[(frames - 1) * grid * grid:]
    long_range = torch.rand((), generator=generator).item() < 0.5
    blocks, scale = (cfg.long_blocks, cfg.long_scale) if long_range else (cfg.short_blocks, cfg.short_scale)
    spatial = torch.zeros(grid, grid, dtype=torch.bool)
    for _ in range(blocks):
        aspect = cfg.aspect[0] + torch.rand((), generator=generator).item() * (cfg.aspect[1] - cfg.aspect[0])
        area = scale * grid * grid
        h = max(1, min(grid, round((area * aspect) ** 0.5)))
        w = max(1, min(grid, round((area / aspect) ** 0.5)))
        top = torch.randint(0, grid - h + 1, (), generator=generator).item()
        left = torch.randint(0, grid - w + 1, (), generator=generator).item()
        spatial[top: top + h, left: left + w] = True
    visible = (~spatial).flatten().nonzero().squeeze(1)
    min_visible = max(1, int(cfg.min_context * grid * grid))
    if len(visible) < min_visible:  # too much masked: give back random tokens
        masked = spatial.flatten().nonzero().squeeze(1)
        back = masked[torch.randperm(len(masked), generator=generator)[: min_visible - len(visible)]]
        spatial.view(-1)[back] = False
    masked_flat = spatial.flatten().repeat(frames)  # the same blocks in every frame
    return (~masked_flat).nonzero().squeeze(1), masked_flat.nonzero().squeeze(1)
