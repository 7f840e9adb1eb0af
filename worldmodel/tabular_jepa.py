"""T-JEPA (Thimonier et al. 2024, augmentation-free self-supervised learning for tabular data) on
the state vectors a frame comes with: the proprio, and optionally the colour moments of the frame
(`ColourMoments`, which say where each colour's shape lies and how it is turned). Each feature is a
token (its value times a learned vector, plus a learned bias: the numerical feature tokenizer); a
context encoder sees a random subset of the features, and a narrow predictor predicts, at the
others, the layer-normed tokens of an EMA target encoder that sees them all (L2). No pixels are
predicted and no augmentation is needed: the structure between features is what is learned.

The encoder's tokens [B, F, D] are the representation; `jepa probe` reads them, beside the raw
vector itself as a floor.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.encoders import Block, ColourMoments
from worldmodel.jepa import JEPAConfig, ema_update, spread_metrics
from worldmodel.regularisers import gather_batch


class StateVectors(nn.Module):
    """(frames uint8 [B, H, W, 3], proprio [B, P]) -> standardised vectors [B, F]: the proprio and,
    with colours, each frame's colour moments; statistics and palette from training frames (`fit`)."""

    def __init__(self, proprio_dim: int, colours: int, image_size: int):
        super().__init__()
        self.moments = ColourMoments(colours, image_size) if colours else None
        self.register_buffer("proprio_mean", torch.zeros(proprio_dim))
        self.register_buffer("proprio_std", torch.ones(proprio_dim))

    @property
    def size(self) -> int:
        return len(self.proprio_mean) + (self.moments.size if self.moments else 0)

    @torch.no_grad()
    def fit(self, frames: torch.Tensor, proprio: torch.Tensor, seed: int = 0) -> None:
        self.proprio_mean.copy_(proprio.mean(0))
        self.proprio_std.copy_(proprio.std(0, correction=0).clamp_min(1e-3))
        if self.moments:
            self.moments.fit(frames, seed=seed)

    def combine(self, proprio: torch.Tensor, moments: torch.Tensor | None) -> torch.Tensor:
        """proprio [..., P] and raw colour moments [..., K * 10] (`ColourMoments.features`) -> vectors [..., F]."""
        vectors = (proprio.float() - self.proprio_mean) / self.proprio_std
        return torch.cat([vectors, self.moments.standardise(moments)], -1) if self.moments else vectors

    def forward(self, frames: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        return self.combine(proprio, self.moments.features(frames) if self.moments else None)


class FeatureEncoder(nn.Module):
    """Vectors [B, F] -> tokens [B, F, D]: token f = value_f * w_f + b_f, then transformer blocks;
    with `keep` [K] only those features are tokens, and [B, K, D] is returned."""

    def __init__(self, features: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(features, dim) * 0.02), nn.Parameter(torch.randn(features, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, vectors: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = (self.weight, self.bias) if keep is None else (self.weight[keep], self.bias[keep])
        x = (vectors if keep is None else vectors[:, keep])[..., None] * weight + bias  # [B, K, D]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class TabularJEPA(nn.Module):
    """State vectors -> feature tokens, trained by masked feature prediction; see the module docstring."""

    def __init__(self, cfg: JEPAConfig):
        super().__init__()
        self.cfg = cfg
        dim, heads = cfg.encoder.width, cfg.predictor_heads
        self.vectors = StateVectors(cfg.proprio_dim, cfg.state_moments, cfg.encoder.image_size)
        features = self.vectors.size
        self.encoder = FeatureEncoder(features, dim, cfg.tabular_depth, heads)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        width = cfg.predictor_width
        self.inp, self.out = nn.Linear(dim, width), nn.Linear(width, dim)
        self.feature_embedding = nn.Parameter(torch.randn(features, width) * 0.02)  # which feature a predictor token stands for
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.predictor = nn.ModuleList(Block(width, heads) for _ in range(cfg.predictor_depth))
        self.predictor_norm = nn.LayerNorm(width)

    def forward(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """batch["frames"] uint8 [B, H, W, 3], batch["proprio"] [B, P] -> (loss, metrics)."""
        vectors = self.vectors(batch["frames"], batch["proprio"])  # [B, F]
        b, features = vectors.shape
        order = torch.randperm(features, generator=generator).to(vectors.device)
        masked = max(1, min(features - 1, round(self.cfg.feature_mask * features)))
        context_idx, target_idx = order[masked:].sort().values, order[:masked].sort().values
        context = self.encoder(vectors, keep=context_idx)  # [B, Kc, D]
        queries = (self.mask_token + self.feature_embedding[target_idx]).expand(b, -1, -1)
        x = torch.cat([self.inp(context) + self.feature_embedding[context_idx], queries], 1)
        for block in self.predictor:
            x = block(x)
        predicted = self.out(self.predictor_norm(x[:, len(context_idx):]))  # [B, Kt, D]
        with torch.no_grad():
            full = self.target(vectors)  # [B, F, D]
            target = F.layer_norm(full, full.shape[-1:])[:, target_idx]
        loss = F.mse_loss(predicted, target)
        baseline = F.mse_loss(target.mean(0, keepdim=True).expand_as(target), target).detach()
        pooled = full.mean(1)  # [B, D]
        metrics = {"loss/prediction": loss.detach(), "loss/batch_mean_baseline": baseline,
                   "collapse": lambda: spread_metrics("collapse", gather_batch(pooled.float()), relative=False)}
        return loss, metrics

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.target.parameters(), self.encoder.parameters(), step / max(total_steps, 1), self.cfg.ema_start, self.cfg.ema_end)
