"""Motion from the shared encoder (MC-JEPA, Bardes, Ponce & LeCun 2023): a flow head reads the
encoder's token grids of two consecutive frames and estimates the optical flow between them,
self-supervised by warping the later frame back onto the earlier one (photometric L1) under a
smoothness penalty. The gradient goes into the encoder that the content objective (VICReg latent
prediction) also trains, so its features must say what moved and where: on PushT the pusher and
the block are what moves. Single scale (the token grid, upsampled), where MC-JEPA refines flow
over a feature pyramid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def warp(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward warp: image [B, C, H, W] sampled at x + flow(x), flow [B, 2, H, W] in pixels (x, y)
    -> (warped [B, C, H, W], valid [B, 1, H, W]: 1 where x + flow(x) lies inside the image).
    With flow the motion from frame t to frame t+1, warp(frame t+1, flow) reproduces frame t."""
    b, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=image.dtype),
                            torch.arange(w, device=image.device, dtype=image.dtype), indexing="ij")
    x, y = xs + flow[:, 0], ys + flow[:, 1]  # [B, H, W] sampling positions in pixels
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)  # align_corners=True convention
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    valid = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).to(image.dtype)[:, None]
    return warped, valid


class FlowHead(nn.Module):
    """Token grids of frames t and t+1 [B, N, D] each -> flow [B, 2, H, W] in pixels: two 3x3
    convolutions over the grids (and their difference), upsampled bilinearly to the image."""

    def __init__(self, dim: int, grid: int, image_size: int):
        super().__init__()
        self.grid, self.image_size = grid, image_size
        self.net = nn.Sequential(nn.Conv2d(3 * dim, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, 2, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)  # start from no motion
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, earlier: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        b, n, d = earlier.shape
        grids = [z.transpose(1, 2).reshape(b, d, self.grid, self.grid) for z in (earlier, later, later - earlier)]
        coarse = self.net(torch.cat(grids, 1)) * (self.image_size / self.grid)  # [B, 2, g, g], one unit = one token's width
        return F.interpolate(coarse, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)


def flow_losses(head: FlowHead, tokens: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens [B, T, N, D] and their frames float [B, T, 3, H, W] -> (photometric L1 of each later
    frame warped onto the earlier one, over the valid pixels; mean absolute flow gradient, in
    pixels per pixel; mean flow magnitude in pixels, a diagnostic)."""
    b, t = tokens.shape[:2]
    flow = head(tokens[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(0, 1))  # [B*(T-1), 2, H, W]
    warped, valid = warp(pixels[:, 1:].flatten(0, 1), flow)
    photometric = ((warped - pixels[:, :-1].flatten(0, 1)).abs() * valid).sum() / (valid.sum() * pixels.shape[2]).clamp_min(1)
    smooth = (flow.diff(dim=-1).abs().mean() + flow.diff(dim=-2).abs().mean()) / 2
    return photometric, smooth, flow.detach().norm(dim=1).mean()
