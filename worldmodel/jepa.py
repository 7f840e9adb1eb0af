"""Self-supervised JEPA pretraining of a video encoder on episode clips (no labels, no pixels
predicted). Two families, chosen by `objective`, compared on the same data and budget:

- `vjepa` (V-JEPA, Bardes et al. 2024): a context encoder sees the visible tokens of a clip; a
  narrow predictor predicts, at the masked positions, the layer-normed features of an EMA target
  encoder (stop-gradient), with an L1 loss. Masks are V-JEPA's multi-block spatiotemporal masks
  plus a future mask (the whole last frame); the predictor is told the actions between frames
  (as in V-JEPA 2-AC), and each target feature's error is weighted by its spread over the batch,
  so a small moving agent is not drowned by the static background.
- `dmt-jepa` (DMT-JEPA, Mo & Yun 2024): the same, with each masked token's target aggregated over
  the similar tokens around it (`worldmodel.neighbour_targets`).
- `sigreg` (LeJEPA, Balestriero & LeCun 2025) and `vicreg` (Bardes, Ponce & LeCun 2022), as in
  PLDM and LeWM: no teacher. Each frame's tokens become a compact latent (spatial keypoints and
  mean, then linear: `FrameLatent`); a dynamics MLP predicts the next latent from the current
  one and the action block, by teacher forcing and by rollout; SIGReg or VICReg's variance and
  covariance terms keep the latents from collapsing.
- `mc-jepa` (MC-JEPA, Bardes, Ponce & LeCun 2023): `vicreg` for content, plus optical flow between
  consecutive frames estimated from the same encoder's tokens and learned by warping
  (`worldmodel.motion`).
- `3d-jepa` (3D-JEPA, Hu et al. 2024): `vjepa`'s masked prediction on point maps, the depth images
  unprojected to points (`worldmodel.point_cloud`), not on colours.
- `t-jepa` (T-JEPA, Thimonier et al. 2024): masked prediction across the features of a frame's
  state vector (proprio, colour moments), not its pixels (`worldmodel.tabular_jepa`).

The model knows nothing of training: `forward(batch, generator)` returns the loss and metrics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
import tyro
from torch import nn

from infra.errors import UserError
from worldmodel.encoders import Block, EncoderConfig, FrameLatent, build_encoder, sincos_positions, to_float
from worldmodel.masks import MaskConfig, sample_mask
from worldmodel.motion import FlowHead, flow_losses
from worldmodel.neighbour_targets import neighbour_targets
from worldmodel.regularisers import gather_batch, sigreg, vicreg

OBJECTIVES = ("vjepa", "dmt-jepa", "3d-jepa", "sigreg", "vicreg", "mc-jepa", "t-jepa")
MASKED = ("vjepa", "dmt-jepa", "3d-jepa")  # an EMA teacher and masked-token prediction; the others predict a frame latent


@dataclass
class JEPAConfig:
    """Pretraining objective and predictor."""

    objective: Annotated[str, tyro.conf.arg(prefix_name=False)] = "vicreg"
    """vjepa, dmt-jepa or 3d-jepa (EMA teacher, masked prediction; 3d-jepa on depth point maps),
    sigreg, vicreg or mc-jepa (no teacher, a regulariser; mc-jepa adds optical flow); t-jepa
    encodes state vectors, not frames."""
    clip_frames: int = 4
    """Frames per training clip (a multiple of the encoder's tubelet)."""
    frame_skip: int = 5
    """Env steps between consecutive frames of a clip; the predictor sees the actions in between,
    concatenated (an action block)."""
    predictor_width: int = 64
    """Width of the narrow masked-token predictor (vjepa); a quarter of the dynamics MLP's hidden width (sigreg, vicreg)."""
    predictor_depth: int = 2
    """Transformer blocks in the predictor."""
    predictor_heads: int = 4
    """Attention heads in the predictor."""
    ema_start: float = 0.99
    """vjepa: EMA momentum of the target encoder at the first step..."""
    ema_end: float = 1.0
    """...ramped linearly to this at the last step."""
    weight_by_change: bool = True
    """vjepa: weight each target feature's L1 error by its spread across the batch (relative to
    the mean spread), so the few tokens that differ between clips (a small agent) dominate the
    loss rather than the static background."""
    neighbours: int = 4
    """dmt-jepa: similar tokens (itself included) aggregated into each masked token's target."""
    neighbour_radius: int = 1
    """dmt-jepa: they are looked for within this many tokens (a (2r+1)^2 window of the same frame)."""
    neighbour_temperature: float = 0.1
    """dmt-jepa: softmax temperature of their cosine similarities."""
    flow_weight: float = 1.0
    """mc-jepa: weight of the photometric loss of the estimated flow."""
    smooth_weight: float = 0.1
    """mc-jepa: weight of the flow's smoothness penalty (mean absolute gradient)."""
    state_moments: int = 0
    """t-jepa: append the colour moments of this many palette colours (fitted on the training frames) to the proprio."""
    feature_mask: float = 0.5
    """t-jepa: fraction of the vector's features masked (predicted) each step."""
    tabular_depth: int = 2
    """t-jepa: transformer blocks of the state-vector encoder (width: the encoder's width)."""
    proprio_dim: Annotated[int, tyro.conf.Suppress] = 0
    """t-jepa: size of the proprio (set from the dataset)."""
    point_stats: Annotated[dict, tyro.conf.Suppress] = field(default_factory=dict)
    """3d-jepa: the point maps' far depth and standardisation (`PointMaps.fit` on the training frames)."""
    sigreg_weight: float = 0.1
    """sigreg: weight of SIGReg (LeWM uses about 0.09)."""
    variance_weight: float = 1.0
    """vicreg: weight of the variance hinge."""
    cov_weight: float = 0.04
    """vicreg: weight of the covariance penalty."""
    sigreg_directions: int = 256
    """sigreg: random projections per step."""
    action_conditioned: bool = True
    """Give the predictor the actions taken between the clip's frames. Without them the future of
    a controlled agent is a guess, and the encoder gets no reason to lay its position out smoothly."""
    action_dim: Annotated[int, tyro.conf.Suppress] = 0
    """Size of one action (set from the dataset; 0 with action_conditioned off)."""
    projector_dim: int = 64
    """sigreg, vicreg: size of the frame latent (FrameLatent of the token grid) that is predicted and regularised."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.clip_frames < 2 or self.frame_skip < 1:
            raise UserError(f"clips need at least 2 frames and a frame skip of at least 1, got {self.clip_frames} and {self.frame_skip}")
        if self.clip_frames % self.encoder.tubelet:
            raise UserError(f"clip frames ({self.clip_frames}) must be a multiple of the tubelet ({self.encoder.tubelet})")
        if self.objective == "mc-jepa" and self.encoder.tubelet != 1:
            raise UserError(f"mc-jepa estimates flow between single frames: use --model.encoder.tubelet 1, not {self.encoder.tubelet}")
        if not 0 < self.feature_mask < 1 or self.state_moments < 0 or self.tabular_depth < 1:
            raise UserError("--model.feature-mask must lie in (0, 1), --model.state-moments not be negative and --model.tabular-depth be at least 1")
        if self.neighbours < 1 or self.neighbour_radius < 0 or self.neighbour_temperature <= 0:
            raise UserError("--model.neighbours must be at least 1, --model.neighbour-radius not negative and --model.neighbour-temperature positive")

    @property
    def clip_tokens(self) -> tuple[int, int]:
        """(token frames T', tokens per frame N) of one clip."""
        return self.clip_frames // self.encoder.tubelet, self.encoder.grid**2


class MaskedPredictor(nn.Module):
    """Context tokens + mask tokens at the target positions -> predicted target features."""

    def __init__(self, cfg: JEPAConfig):
        super().__init__()
        dim, width = cfg.encoder.dim, cfg.predictor_width
        frames, _ = cfg.clip_tokens
        self.inp, self.out = nn.Linear(dim, width), nn.Linear(width, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos", sincos_positions(frames, cfg.encoder.grid, width), persistent=False)
        self.blocks = nn.ModuleList(Block(width, cfg.predictor_heads) for _ in range(cfg.predictor_depth))
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.mask_token, std=0.02)
        self.tubelet, self.tokens_per_frame = cfg.encoder.tubelet, cfg.clip_tokens[1]
        self.action = nn.Linear(cfg.action_dim * cfg.frame_skip * cfg.encoder.tubelet, width) if cfg.action_dim else None

    def _action_embedding(self, actions: torch.Tensor) -> torch.Tensor:
        """action blocks [B, T-1, A] -> per-token embedding [B, T'*N, W] of the actions leading into each frame."""
        b, _, a = actions.shape
        leading = torch.cat([actions.new_zeros(b, 1, a), actions], 1)  # [B, T, A]: none before frame 0
        per_frame = self.action(leading.reshape(b, -1, self.tubelet * a))  # [B, T', W]
        return per_frame.repeat_interleave(self.tokens_per_frame, 1)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                actions: torch.Tensor | None = None) -> torch.Tensor:
        """context [B, Kc, D] (+ actions [B, T-1, A]) -> predictions [B, Kt, D]."""
        b = context.shape[0]
        pos = self.pos.expand(b, -1, -1)
        if self.action is not None:
            pos = pos + self._action_embedding(actions)
        queries = self.mask_token.expand(b, len(target_idx), -1) + pos[:, target_idx]
        x = torch.cat([self.inp(context) + pos[:, context_idx], queries], 1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, len(context_idx):]))


def effective_rank(z: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the normalised singular values of centred embeddings [N, D] (RankMe)."""
    s = torch.linalg.svdvals(z.float() - z.float().mean(0))
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def spread_metrics(prefix: str, z: torch.Tensor, relative: bool = True) -> dict[str, torch.Tensor]:
    """How much vectors [N, D] differ across a batch, for the trainer's collapse watch: the mean
    and smallest per-dimension std, the effective rank and (relative) the mean std over the
    vectors' RMS, which is scale-free: healthy policy vectors sit at 0.3-0.6, collapsed ones below
    0.01 whatever their size. Not for token grids, whose static background tokens lower it."""
    z = z.detach().float()
    std = z.std(0)  # [D]
    metrics = {f"{prefix}/std_mean": std.mean(), f"{prefix}/std_min": std.min(), f"{prefix}/effective_rank": effective_rank(z)}
    if relative:
        metrics[f"{prefix}/relative_std"] = std.mean() / z.pow(2).mean().sqrt().clamp_min(1e-12)
    return metrics


@torch.no_grad()
def ema_update(target, online, progress: float, start: float, end: float) -> None:
    """Move each target parameter toward its online one with momentum ramped linearly from
    `start` to `end` over training (`progress` in [0, 1]); the parameter lists must pair up."""
    m = start + (end - start) * progress
    for t, s in zip(target, online, strict=True):
        t.lerp_(s.detach(), 1.0 - m)


def build_jepa(cfg: JEPAConfig) -> nn.Module:
    """The module `cfg.objective` trains: `JEPA` on frames, or `TabularJEPA` on state vectors (t-jepa)."""
    if cfg.objective == "t-jepa":
        from worldmodel.tabular_jepa import TabularJEPA  # it builds on this module

        return TabularJEPA(cfg)
    return JEPA(cfg)


class JEPA(nn.Module):
    """Encoder + predictor (+ EMA target for vjepa and dmt-jepa, + flow head for mc-jepa); see the module docstring."""

    def __init__(self, cfg: JEPAConfig):
        super().__init__()
        if cfg.objective == "t-jepa":
            raise ValueError("t-jepa encodes state vectors: build it with build_jepa")
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder)
        self.target = self.projector = self.dynamics = self.predictor = self.flow = None
        if cfg.objective == "mc-jepa":
            self.flow = FlowHead(cfg.encoder.dim, cfg.encoder.grid, cfg.encoder.image_size)
        if cfg.objective in MASKED:
            self.predictor = MaskedPredictor(cfg)
            self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        else:
            _, tokens = cfg.clip_tokens
            hidden = 4 * cfg.predictor_width
            self.projector = FrameLatent(cfg.encoder.grid, cfg.encoder.dim, cfg.projector_dim)
            self.dynamics = nn.Sequential(nn.Linear(cfg.projector_dim + cfg.action_dim * cfg.frame_skip * cfg.encoder.tubelet, hidden), nn.GELU(),
                                          nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, cfg.projector_dim))

    def _context(self, pixels: torch.Tensor, context_idx: torch.Tensor) -> torch.Tensor:
        """Encoded visible tokens [B, Kc, D]: the ViT drops masked tokens; the conv encoder sees
        the clip with masked patches blanked."""
        if self.cfg.encoder.kind == "vit":
            return self.encoder(pixels, keep=context_idx)
        frames, tokens = self.cfg.clip_tokens
        grid, patch, tubelet = self.cfg.encoder.grid, self.cfg.encoder.patch, self.cfg.encoder.tubelet
        visible = torch.zeros(frames * tokens, device=pixels.device)
        visible[context_idx] = 1.0
        visible = visible.reshape(frames, 1, grid, 1, grid, 1).expand(-1, tubelet, -1, patch, -1, patch)
        visible = visible.reshape(frames * tubelet, grid * patch, grid * patch)  # [T, H, W]
        blanked = to_float(pixels) * visible[None, :, None]
        return self.encoder(blanked, keep=context_idx)

    def forward(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """batch["frames"] uint8 [B, T, H, W, 3] (+ "actions", the blocks between frames [B, T-1, skip * A]) -> (loss, metrics)."""
        pixels = batch["frames"][:, : self.cfg.clip_frames]
        actions = batch["actions"][:, : self.cfg.clip_frames - 1] if self.cfg.action_dim else None
        if self.target is not None:
            loss, metrics, tokens = self._masked_prediction(pixels, actions, generator)
        else:
            loss, metrics, tokens = self._latent_prediction(pixels, actions, generator)
        frame_embeddings = tokens.detach().flatten(2).flatten(0, 1)  # [B*T', N*D]
        # an SVD (60 ms a step at the default size on 2 CPU cores) and a gather: the trainer calls it on logged steps only, on every rank
        metrics["collapse"] = lambda: spread_metrics("collapse", gather_batch(frame_embeddings.float()), relative=False)
        return loss, metrics

    def _masked_prediction(self, pixels, actions, generator):
        """vjepa, dmt-jepa: predict the EMA target's layer-normed tokens (dmt-jepa: aggregated over
        similar neighbours) at masked positions (L1)."""
        frames, _ = self.cfg.clip_tokens
        context_idx, target_idx = sample_mask(self.cfg.mask, frames, self.cfg.encoder.grid, generator)
        context_idx, target_idx = context_idx.to(pixels.device), target_idx.to(pixels.device)
        predicted = self.predictor(self._context(pixels, context_idx), context_idx, target_idx, actions)  # [B, Kt, D]
        with torch.no_grad():
            full = self.target(pixels)  # [B, T', N, D]
            target = F.layer_norm(full, full.shape[-1:])
            if self.cfg.objective == "dmt-jepa":
                target = neighbour_targets(target, self.cfg.encoder.grid, self.cfg.neighbours, self.cfg.neighbour_radius,
                                           self.cfg.neighbour_temperature)
            target = target.flatten(1, 2)[:, target_idx]
        weight = torch.ones_like(target[0])
        if self.cfg.weight_by_change:
            spread = gather_batch(target).std(0)  # [Kt, D] over the global batch (all DDP ranks)
            weight = spread / spread.mean().clamp_min(1e-6)
        loss = ((predicted - target).abs() * weight).mean()
        baseline = ((target.mean(1, keepdim=True) - target).abs() * weight).mean()
        return loss, {"loss/prediction": loss.detach(), "loss/mean_token_baseline": baseline}, full

    def _latent_prediction(self, pixels, actions, generator):
        """sigreg / vicreg / mc-jepa: each frame's tokens are projected to a latent z; a dynamics MLP predicts
        z[t+1] from z[t] and the actions, by teacher forcing and by rolling out from the first
        frame; the regulariser keeps z from collapsing; mc-jepa adds the flow losses."""
        tokens = self.encoder(pixels)  # [B, T', N, D]
        z = self.projector(tokens)  # [B, T', P]
        b, frames, _ = z.shape
        if actions is None:  # not action-conditioned
            steps = z.new_zeros(b, frames - 1, 0)
        else:  # the blocks leading into each later token frame's frames: [B, T'-1, tubelet * skip * A]
            steps = actions[:, self.cfg.encoder.tubelet - 1:].reshape(b, frames - 1, -1)
        forced = z[:, :-1] + self.dynamics(torch.cat([z[:, :-1], steps], -1))
        teacher = F.mse_loss(forced, z[:, 1:])
        rolled, rollout = z[:, 0], []
        for k in range(frames - 1):
            rolled = rolled + self.dynamics(torch.cat([rolled, steps[:, k]], -1))
            rollout.append(F.mse_loss(rolled, z[:, k + 1]))
        prediction = (teacher + torch.stack(rollout).mean()) / 2
        copy_last = F.mse_loss(z[:, :-1], z[:, 1:]).detach()
        metrics = {"loss/prediction": prediction.detach(), "loss/copy_last_baseline": copy_last}
        flat = z.flatten(0, 1)  # [B*T', P]
        if self.cfg.objective == "sigreg":
            reg = sigreg(flat, generator, self.cfg.sigreg_directions)
            metrics["loss/sigreg"] = reg.detach()
            loss = prediction + self.cfg.sigreg_weight * reg
        else:
            variance, covariance = vicreg(flat)
            metrics["loss/variance"], metrics["loss/covariance"] = variance.detach(), covariance.detach()
            loss = prediction + self.cfg.variance_weight * variance + self.cfg.cov_weight * covariance
        if self.flow is not None:
            photometric, smooth, magnitude = flow_losses(self.flow, tokens, to_float(pixels))
            metrics |= {"loss/photometric": photometric.detach(), "loss/flow_smoothness": smooth.detach(), "train/flow_pixels": magnitude}
            loss = loss + self.cfg.flow_weight * (photometric + self.cfg.smooth_weight * smooth)
        return loss, metrics, tokens

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """EMA update of the target encoder (vjepa, dmt-jepa), momentum ramped over training."""
        if self.target is None:
            return
        ema_update(self.target.parameters(), self.encoder.parameters(), step / max(total_steps, 1), self.cfg.ema_start, self.cfg.ema_end)
