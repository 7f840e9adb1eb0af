"""Action-conditioned latent predictor: a transformer over a window of up to `history` frame
latents with frame-level block-causal attention (each frame's tokens see their own frame and the
earlier ones), predicting every frame's successor latent as a residual.

Actions enter per frame in one of two ways, or both (JEPA world-model ablations, Terver et al.
2025, found AdaLN better than tokens):
- `token`: one extra token per frame holding that frame's action block (V-JEPA 2-AC, Assran et
  al. 2025);
- `adaln`: AdaLN-zero modulation (DiT, Peebles & Xie 2023; LeWM 2026): the action block sets a
  shift, scale and gate of every block's norms, per frame; gates start at zero, so an untrained
  predictor copies the last latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from infra.errors import UserError

ACTION_MODES = ("adaln", "token", "both")


@dataclass
class PredictorConfig:
    """Predictor architecture."""

    width: int = 64
    """Transformer width (64 predicts TwoRoom as well as 128 at 40% of the cost per planning step)."""
    depth: int = 2
    """Transformer blocks."""
    heads: int = 4
    """Attention heads."""
    history: int = 1
    """Frames each prediction sees (itself and the ones before it)."""
    action_mode: str = "adaln"
    """How actions enter: adaln (AdaLN-zero modulation), token (an extra token per frame) or both."""

    def __post_init__(self):
        if self.action_mode not in ACTION_MODES:
            raise UserError(f"action mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if min(self.width, self.depth, self.heads, self.history) < 1 or self.width % self.heads:
            raise UserError(f"predictor width {self.width} must be a positive multiple of heads {self.heads}; depth and history positive")


def frame_mask(frames: int, per_frame: int, device=None) -> torch.Tensor:
    """Boolean block-causal attention mask [F*K, F*K] (True = may attend): frame t sees frames <= t."""
    t = torch.arange(frames, device=device).repeat_interleave(per_frame)
    return t[:, None] >= t[None, :]


class ModulatedBlock(nn.Module):
    """Pre-norm transformer block; with a condition [B, L, W], AdaLN-zero modulation per token."""

    def __init__(self, width: int, heads: int, adaln: bool):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not adaln)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not adaln)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.modulation = nn.Linear(width, 6 * width) if adaln else None
        if adaln:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, modulation: torch.Tensor | None) -> torch.Tensor:
        """x [B, L, W], mask [L, L], modulation [B, L, 6W] (from `modulate`) or None -> [B, L, W]."""
        shift1 = scale1 = shift2 = scale2 = 0.0
        gate1 = gate2 = 1.0
        if modulation is not None:
            shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, -1)
        h = self.norm1(x) * (1 + scale1) + shift1
        b, length, width = h.shape
        q, k, v = self.qkv(h).reshape(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, L, W/heads]
        x = x + gate1 * self.proj(attended.transpose(1, 2).reshape(b, length, width))
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)

    def modulate(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition [..., W] -> AdaLN shifts, scales and gates [..., 6W]."""
        return self.modulation(F.silu(cond))


class ActionPredictor(nn.Module):
    """(latents [B, F, N, D], action blocks [B, F, A]) -> next latents [B, F, N, D], F <= history:
    frame t's output predicts frame t+1 from frames up to t and the action block after t."""

    def __init__(self, cfg: PredictorConfig, tokens: int, dim: int, action_dim: int):
        super().__init__()
        self.cfg, self.tokens = cfg, tokens
        width = cfg.width
        self.inp, self.out = nn.Linear(dim, width), nn.Linear(width, dim)
        self.space = nn.Parameter(torch.randn(1, 1, tokens, width) * 0.02)  # [1, 1, N, W]
        self.time = nn.Parameter(torch.randn(1, cfg.history, 1, width) * 0.02)  # position within the window
        self.action = nn.Sequential(nn.Linear(action_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.use_token = cfg.action_mode in ("token", "both")
        self.use_adaln = cfg.action_mode in ("adaln", "both")
        self.blocks = nn.ModuleList(ModulatedBlock(width, cfg.heads, self.use_adaln) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def embed_actions(self, actions: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Action blocks [B, F, A] -> (embedding [B, F, W], per-block AdaLN modulation [B, F, 6W] or
        None). A rollout computes these once for all its steps and slices them per window."""
        act = self.action(actions)
        return act, [block.modulate(act) if self.use_adaln else None for block in self.blocks]

    def forward(self, z: torch.Tensor, actions: torch.Tensor | None = None, embedded: tuple | None = None) -> torch.Tensor:
        """z [B, F, N, D] and action blocks [B, F, A] (or their `embed_actions`) -> predicted successors [B, F, N, D]."""
        b, frames, n, _ = z.shape
        if frames > self.cfg.history:
            raise ValueError(f"the predictor sees at most {self.cfg.history} frames, got {frames}")
        act, modulations = self.embed_actions(actions) if embedded is None else embedded
        time = self.time[:, :frames]  # [1, F, 1, W]
        x = self.inp(z) + self.space + time  # [B, F, N, W]
        if self.use_token:
            x = torch.cat([x, act[:, :, None] + time], 2)  # [B, F, N+1, W]
        per_frame = x.shape[2]
        mask = frame_mask(frames, per_frame, z.device)
        x = x.reshape(b, frames * per_frame, -1)
        for block, modulation in zip(self.blocks, modulations):
            if modulation is not None and per_frame > 1:  # the frame's condition, for each of its tokens
                modulation = modulation[:, :, None].expand(-1, -1, per_frame, -1).reshape(b, frames * per_frame, -1)
            x = block(x, mask, modulation)
        x = self.norm(x).reshape(b, frames, per_frame, -1)[:, :, :n]
        return z + self.out(x)
