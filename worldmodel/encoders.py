"""Video encoders: a ViT with tubelet patch embedding (V-JEPA, Bardes et al. 2024) and a small
conv encoder. Both map pixels [B, T, 3, H, W] (uint8 or float) to tokens [B, T', N, D] with
T' = T / tubelet and N tokens on a grid; `FrameLatent` turns a grid into one compact vector.
`ColourMoments` reads, beside them, how each of a few colours lies in an image (image moments,
Hu 1962): where a shape is, and how it is turned, which keypoints do not carry.

Tubelet 1 is the single-frame (I-JEPA, Assran et al. 2023) case. Masked pretraining calls the
ViT with `keep`, the indices of the visible tokens, and only those are processed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from infra.errors import UserError

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


def pool_grid(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """Average-pool square token grids: tokens [..., G*G, D] (row-major) -> [..., side*side, D]."""
    *lead, n, d = tokens.shape
    g = math.isqrt(n)
    grid = tokens.reshape(-1, g, g, d).permute(0, 3, 1, 2)  # [B, D, G, G]
    return nn.functional.adaptive_avg_pool2d(grid, side).flatten(2).transpose(1, 2).reshape(*lead, side * side, d)


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



MOMENTS = 10  # features per palette colour: share, centroid (2), covariance shape (3), third moments (4)
MIN_FEATURE_STD = 0.01  # a moment the fitted images leave (nearly) constant is not magnified past 100x its change


def fit_palette(pixels: torch.Tensor, colours: int, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    """k-means (k-means++ start, Lloyd's iterations) of pixels [N, 3] in [0, 1] -> palette [colours, 3]."""
    generator = torch.Generator().manual_seed(seed)
    palette = pixels[torch.randint(len(pixels), (1,), generator=generator)]
    for _ in range(colours - 1):  # each next centre drawn in proportion to the squared distance to the nearest
        nearest = torch.cdist(pixels, palette).min(1).values ** 2
        if nearest.sum() == 0:
            raise UserError(f"the images hold fewer than {colours} colours: lower --model.colour-moments")
        palette = torch.cat([palette, pixels[torch.multinomial(nearest, 1, generator=generator)]])
    for _ in range(iterations):
        assigned = torch.cdist(pixels, palette).argmin(1)
        palette = torch.stack([pixels[assigned == k].mean(0) if (assigned == k).any() else palette[k] for k in range(colours)])
    return palette


class ColourMoments(nn.Module):
    """Image [B, H, W, 3] -> features [B, colours * MOMENTS]: each pixel softly assigned to the
    nearest colours of a palette (k-means of the training frames, `fit`), and per colour the moments
    of its mask (Hu 1962): its share of the image, its centroid, its covariance's shape ((sxx - syy)
    / s, 2 sxy / s, sqrt s with s = sxx + syy: the axis, twice its angle) and its third central
    moments over s^1.5 (which way the shape points), standardised with the training frames'
    statistics. No trainable parameter: once fitted, an image's features can be computed once and
    kept. Moments say how a shape is turned, where a soft-argmax keypoint says only where it is
    (PushT's T at 64x64: a ridge read-out of the block's colour moments gives its angle's cos and
    sin with R2 0.98). It needs objects whose colour differs from what surrounds them."""

    def __init__(self, colours: int, image_size: int, temperature: float = 0.01):
        super().__init__()
        self.temperature = temperature  # in squared RGB distance, channels in [0, 1]
        self.register_buffer("palette", torch.rand(colours, 3))  # [K, 3], set by fit
        self.register_buffer("feature_mean", torch.zeros(colours * MOMENTS))
        self.register_buffer("feature_std", torch.ones(colours * MOMENTS))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, image_size), torch.linspace(-1, 1, image_size), indexing="ij")
        x, y = xs.flatten(), ys.flatten()
        basis = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y, x**3, x * x * y, x * y * y, y**3], -1)  # [HW, 10] monomials
        self.register_buffer("basis", basis, persistent=False)

    @property
    def size(self) -> int:
        """Features per image."""
        return len(self.palette) * MOMENTS

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, H, W, 3] -> raw moments [B, K * 10]."""
        pixels = images.permute(0, 3, 1, 2).flatten(2).float() / 255  # [B, 3, HW] (channels first: a softmax over 4 contiguous values is 10x slower)
        closeness = 2 * self.palette @ pixels - (self.palette**2).sum(-1)[:, None]  # [B, K, HW]: minus the squared distance, but for |pixel|^2
        mask = torch.softmax(closeness / self.temperature, 1)
        raw = (mask @ self.basis).double()  # [B, K, 10]: sums of 1, x, y, x^2, xy, y^2, x^3, x^2y, xy^2, y^3 (in float32; the central moments below in float64)
        mass = raw[..., 0].clamp_min(1e-3)
        ex, ey, exx, exy, eyy, exxx, exxy, exyy, eyyy = (raw[..., i] / mass for i in range(1, 10))
        sxx, sxy, syy = exx - ex * ex, exy - ex * ey, eyy - ey * ey  # central second moments
        third = torch.stack([exxx - 3 * ex * exx + 2 * ex**3,
                             exxy - 2 * ex * exy - ey * exx + 2 * ex * ex * ey,
                             exyy - 2 * ey * exy - ex * eyy + 2 * ey * ey * ex,
                             eyyy - 3 * ey * eyy + 2 * ey**3], -1)  # central third moments
        spread = (sxx + syy).clamp_min(1e-6)
        shape = torch.stack([(sxx - syy) / spread, 2 * sxy / spread, spread.sqrt()], -1)
        share = raw[..., 0] / self.basis.shape[0]  # of the image's pixels
        moments = torch.cat([share[..., None], ex[..., None], ey[..., None], shape, third / spread[..., None] ** 1.5], -1)
        return moments.flatten(1).float()

    @torch.no_grad()
    def fit(self, images: torch.Tensor, pixels: int = 200_000, seed: int = 0) -> None:
        """Palette and feature statistics from training images uint8 [N, H, W, 3] (as training sees them)."""
        every = images.reshape(-1, 3)
        chosen = torch.randint(len(every), (min(pixels, len(every)),), generator=torch.Generator().manual_seed(seed))
        self.palette.copy_(fit_palette(every[chosen].float() / 255, len(self.palette), seed=seed))
        features = torch.cat([self.features(part) for part in images.split(256)])
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0, correction=0).clamp_min(MIN_FEATURE_STD))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """Raw moments [..., K * 10] -> zero mean, unit std over the fitted images."""
        return (features - self.feature_mean) / self.feature_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, H, W, 3] -> standardised moments [B, K * 10]."""
        return self.standardise(self.features(images))
