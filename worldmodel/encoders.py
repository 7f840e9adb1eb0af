"""Video encoders: a ViT with tubelet patch embedding (V-JEPA, Bardes et al. 2024) and a small
conv encoder. Both map pixels [B, T, 3, H, W] (uint8 or float) to tokens [B, T', N, D] with
T' = T / tubelet and N tokens on a grid; `FrameLatent` turns a grid into one compact vector.

Tubelet 1 is the single-frame (I-JEPA, Assran et al. 2023) case. Masked pretraining calls the
ViT with `keep`, the indices of the visible tokens, and only those are processed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from envs.errors import UserError

ENCODER_KINDS = ("vit", "conv")
VIT_SIZES = {  # name: (width, depth, heads)
    "tiny": (192, 6, 3),
    "mini": (128, 4, 4),
    "small": (384, 12, 6),
}


@dataclass
class EncoderConfig:
    """Encoder architecture."""

    kind: str = "conv"
    """vit (tubelet patch embedding + transformer) or conv (strided convolutions)."""
    image_size: int = 64
    """Input frame size in pixels (square)."""
    patch: int = 8
    """ViT patch size in pixels (conv: the token grid is image_size / patch per side)."""
    tubelet: int = 1
    """Frames per token in time (1: single-frame, I-JEPA; 2: V-JEPA tubelets)."""
    size: str = "mini"
    """ViT size: tiny, mini or small (width, depth, heads in VIT_SIZES)."""
    width: int = 64
    """Conv encoder: token width (channels of the last layer)."""
    coords: bool = True
    """Conv encoder: append x and y coordinate channels to the input (CoordConv, Liu et al. 2018),
    so features can carry where things are, not only what they are."""

    def __post_init__(self):
        if self.kind not in ENCODER_KINDS:
            raise UserError(f"encoder kind must be one of {ENCODER_KINDS}, got {self.kind!r}")
        if self.size not in VIT_SIZES:
            raise UserError(f"ViT size must be one of {tuple(VIT_SIZES)}, got {self.size!r}")
        if self.image_size % self.patch or self.tubelet < 1:
            raise UserError(f"image size {self.image_size} must be a multiple of the patch {self.patch}")
        if self.kind == "conv" and (self.patch & (self.patch - 1) or self.patch < 2):
            raise UserError(f"the conv encoder needs a power-of-two patch, got {self.patch}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def dim(self) -> int:
        return VIT_SIZES[self.size][0] if self.kind == "vit" else self.width


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] or [B, T, 3, H, W] -> float [B, T, 3, H, W] in [-1, 1]."""
    if pixels.shape[-1] == 3 and pixels.shape[-3] != 3:
        pixels = pixels.permute(0, 1, 4, 2, 3)
    if pixels.dtype == torch.uint8:
        pixels = pixels.float() / 127.5 - 1.0
    return pixels


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.norm2(x))


def sincos_positions(t: int, grid: int, dim: int) -> torch.Tensor:
    """Fixed 3-D sine-cosine position embedding [t * grid * grid, dim] (time, row, column)."""
    parts = [dim // 3 // 2 * 2] * 2
    parts = [dim - sum(parts)] + parts
    axes = torch.meshgrid(torch.arange(t), torch.arange(grid), torch.arange(grid), indexing="ij")
    out = []
    for coords, d in zip(axes, parts):
        freqs = 1.0 / 10000 ** (torch.arange(d // 2) / max(d // 2, 1))
        angles = coords.reshape(-1, 1).float() * freqs
        out.append(torch.cat([angles.sin(), angles.cos()], -1))
    return torch.cat(out, -1)


class ViTEncoder(nn.Module):
    """Tubelet patch embedding + transformer; tokens [B, T', N, D]."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        width, depth, heads = VIT_SIZES[cfg.size]
        self.embed = nn.Conv3d(3, width, (cfg.tubelet, cfg.patch, cfg.patch), (cfg.tubelet, cfg.patch, cfg.patch))
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, pixels: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """pixels [B, T, 3, H, W] -> tokens [B, T', N, D]; with `keep` [K] (flat token indices):
        only those tokens are processed and [B, K, D] is returned."""
        x = to_float(pixels)
        b, t = x.shape[:2]
        x = self.embed(x.transpose(1, 2))  # [B, D, T', g, g]
        tp, d = x.shape[2], x.shape[1]
        x = x.flatten(2).transpose(1, 2)  # [B, T'*N, D]
        x = x + sincos_positions(tp, self.cfg.grid, d).to(x)
        if keep is not None:
            x = x[:, keep]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x if keep is not None else x.reshape(b, tp, -1, d)


class ConvEncoder(nn.Module):
    """Strided conv stack (channels double each halving), frames of a tubelet stacked as channels.
    No output norm: a per-token LayerNorm would erase how strongly a token sees the agent."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        layers, channels = [], 3 * cfg.tubelet + 2 * cfg.coords
        stages = int(math.log2(cfg.patch))
        for i in range(stages):
            out = cfg.width // 2 ** (stages - 1 - i)
            layers += [nn.Conv2d(channels, out, 4, 2, 1), nn.GroupNorm(1, out), nn.GELU(), nn.Conv2d(out, out, 3, 1, 1), nn.GELU()]
            channels = out
        self.net = nn.Sequential(*layers, nn.Conv2d(channels, cfg.width, 1))

    def forward(self, pixels: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = to_float(pixels)
        b, t, c, h, w = x.shape
        tp = t // self.cfg.tubelet
        x = x[:, : tp * self.cfg.tubelet].reshape(b * tp, self.cfg.tubelet * c, h, w)
        if self.cfg.coords:
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij")
            x = torch.cat([x, torch.stack([xs, ys]).to(x.dtype).expand(len(x), -1, -1, -1)], 1)
        x = self.net(x)  # [B*T', D, g, g]
        x = x.flatten(2).transpose(1, 2).reshape(b, tp, -1, self.cfg.width)
        return x.reshape(b, -1, self.cfg.width)[:, keep] if keep is not None else x


def grid_coords(grid: int) -> torch.Tensor:
    """(x, y) in [-1, 1] of each token of a grid x grid map, row-major: [N, 2]."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, grid), torch.linspace(-1, 1, grid), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], -1)


def keypoints(tokens: torch.Tensor, coords: torch.Tensor, temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Spatial soft-argmax of each channel: tokens [..., N, D] -> expected (x, y) [..., 2D]."""
    attention = torch.softmax(tokens * temperature, dim=-2)  # [..., N, D]
    return torch.einsum("...nd,nc->...dc", attention, coords.to(tokens)).flatten(-2)


class FrameLatent(nn.Module):
    """Token grid [..., N, D] -> compact frame latent [..., P]: a linear map of each channel's
    spatial soft-argmax (its expected x, y over the grid: Finn et al. 2016's keypoints, as in
    Diffusion Policy's encoder) and its mean. Keypoints make "where" linearly readable."""

    def __init__(self, grid: int, dim: int, out: int):
        super().__init__()
        self.register_buffer("coords", grid_coords(grid), persistent=False)  # [N, 2]
        self.temperature = nn.Parameter(torch.ones(dim))
        self.linear = nn.Linear(3 * dim, out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([keypoints(tokens, self.coords, self.temperature), tokens.mean(-2)], -1))


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder named by `cfg.kind`."""
    return {"vit": ViTEncoder, "conv": ConvEncoder}[cfg.kind](cfg)

