"""A JEPA world model: the pretrained encoder's latent space plus an action-conditioned predictor
of its dynamics, trained by teacher forcing and by multi-step rollout (V-JEPA 2-AC, Assran et al.
2025: L1 teacher forcing + a 2-step rollout loss; DINO-WM, Zhou et al. 2024; PLDM, Sobal et al.
2025). The encoder is frozen by default; with `finetune` it trains too, with VICReg's variance
and covariance terms against collapse.

Latent per frame, selectable (planning cost grows with it):
- `frame`: one vector per frame (N = 1): the pretraining's `FrameLatent` where it trained one,
  else the parameter-free keypoints and mean of the token grid;
- `tokens`: the token grid average-pooled to `latent_grid` x `latent_grid` tokens.

With the `frame` latent the state may hold more than the learned vector, so that planning sees
what success depends on (DINO-WM, Zhou et al. 2024, feeds proprio to its predictor):
- `moments`: the frame's colour moments (`ColourMoments`: a frozen, parameter-free encoder of
  each colour's position, axis and shape, which reads PushT's block angle that no learned latent
  here reads);
- `proprio`: the agent's own observed state. A goal given as an image alone gets its proprio
  from a ridge read-out of the image's part of the state, fitted on the training frames.

A `t-jepa` encoder (`worldmodel.tabular_jepa`) reads a frame's state vector (proprio and colour
moments), not its pixels: its pooled feature tokens are the learned latent, and a goal image's
proprio is read from the moments its vector holds.

The state is standardised per channel with statistics of the training frames, so losses and
planning costs are in units of the data's spread; `cost_weight` says which channels the planning
cost weighs (all, or those chosen from the data: `worldmodel/goal_features.py`).

Public interface: `encode(pixels, proprio=None)`, `rollout(z_hist, actions)`, batched over any
leading dims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
import tyro
from torch import nn

from infra.errors import UserError
from worldmodel.encoders import ColourMoments, FrameLatent, build_encoder, grid_coords, keypoints, pool_grid
from worldmodel.jepa import MASKED, JEPAConfig
from worldmodel.predictor import ActionPredictor, PredictorConfig
from worldmodel.probe import fit_ridge
from worldmodel.regularisers import vicreg
from worldmodel.tabular_jepa import FeatureEncoder, StateVectors

LATENTS = ("frame", "tokens")


@dataclass
class WorldModelConfig:
    """World model: latent, action blocks, losses."""

    latent: str = "frame"
    """frame (one vector per frame) or tokens (a pooled token grid)."""
    latent_grid: int = 4
    """tokens: grid side after pooling (latent_grid**2 tokens per frame)."""
    frame_skip: int = 5
    """Env steps per model step; the predictor sees their actions concatenated (an action block)."""
    rollout_steps: int = 3
    """Model steps the predictor is rolled out on its own predictions in the rollout loss."""
    loss: str = "l2"
    """Prediction loss: l2 (MSE) or l1."""
    finetune: bool = False
    """Train the encoder too (with VICReg variance + covariance against collapse)."""
    variance_weight: float = 1.0
    """finetune: weight of the variance hinge."""
    cov_weight: float = 0.04
    """finetune: weight of the covariance penalty."""
    moments: int = 0
    """Palette colours whose colour moments join each frame's state (frame latent only; 0: none)."""
    proprio: bool = False
    """The agent's proprio observation joins each frame's state (frame latent only)."""
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    action_dim: Annotated[int, tyro.conf.Suppress] = 0
    """Size of one env action (set from the dataset)."""
    proprio_dim: Annotated[int, tyro.conf.Suppress] = 0
    """Size of the proprio observation (set from the dataset when `proprio` is on)."""
    encoder: Annotated[dict, tyro.conf.Suppress] = field(default_factory=dict)
    """The pretraining's JEPAConfig (set from the encoder run)."""

    def __post_init__(self):
        if self.latent not in LATENTS:
            raise UserError(f"latent must be one of {LATENTS}, got {self.latent!r}")
        if self.loss not in ("l1", "l2"):
            raise UserError(f"loss must be l1 or l2, got {self.loss!r}")
        if min(self.latent_grid, self.frame_skip, self.rollout_steps) < 1 or self.moments < 0:
            raise UserError("latent grid, frame skip and rollout steps must be positive, and moments not negative")
        if (self.moments or self.proprio) and self.latent != "frame":
            raise UserError("--model.moments and --model.proprio join the frame latent: use --model.latent frame")

    @property
    def clip_frames(self) -> int:
        """Frames per training window: the predictor's history plus the rollout."""
        return self.predictor.history + self.rollout_steps


class WorldModel(nn.Module):
    """Encoder (+ frame latent) and action-conditioned predictor; see the module docstring."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        from worldmodel.checkpoint import dataclass_from_dict

        self.cfg = cfg
        jepa = dataclass_from_dict(JEPAConfig, cfg.encoder)
        if jepa.encoder.tubelet != 1:
            raise UserError(f"the world model needs a single-frame encoder (tubelet 1), this one has tubelet {jepa.encoder.tubelet}")
        self.image_size = jepa.encoder.image_size
        self.projector, self.state_vectors = None, None
        grid, dim = jepa.encoder.grid, jepa.encoder.dim
        if jepa.objective == "t-jepa":
            if cfg.latent != "frame" or cfg.finetune:
                raise UserError("a t-jepa encoder gives a frozen frame latent: drop --model.latent tokens and --model.finetune")
            if not jepa.state_moments:
                raise UserError("a t-jepa encoder of proprio alone reads nothing of a goal image: pretrain it with --model.state-moments K")
            self.state_vectors = StateVectors(jepa.proprio_dim, jepa.state_moments, self.image_size)  # its palette and statistics, from pretraining
            self.encoder = FeatureEncoder(self.state_vectors.size, jepa.encoder.width, jepa.tabular_depth, jepa.predictor_heads)
            tokens, width = 1, jepa.encoder.width
        else:
            self.encoder = build_encoder(jepa.encoder)
            if cfg.latent == "frame" and jepa.objective not in MASKED:
                self.projector = FrameLatent(grid, dim, jepa.projector_dim)
            tokens, width = (1, jepa.projector_dim if self.projector else 3 * dim) if cfg.latent == "frame" else (cfg.latent_grid**2, dim)
        self.register_buffer("coords", grid_coords(grid), persistent=False)
        if cfg.latent == "tokens" and grid % cfg.latent_grid:
            raise UserError(f"latent grid {cfg.latent_grid} must divide the encoder's token grid {grid}")
        self.moments = ColourMoments(cfg.moments, self.image_size) if cfg.moments else None  # fitted by `jepa train-wm`
        self.parts = {"latent": slice(0, width)}  # the state's channels, by what reads them
        image_width = width = width + (self.moments.size if self.moments else 0)
        if self.moments:
            self.parts["moments"] = slice(self.parts["latent"].stop, width)
        if cfg.proprio:
            self.parts["proprio"] = slice(width, width + cfg.proprio_dim)
            width += cfg.proprio_dim
        if self.state_vectors is not None:  # its latent needs the proprio, read from the moments alone
            image_width = self.state_vectors.moments.size + (self.moments.size if self.moments else 0)
        if cfg.proprio or self.state_vectors is not None:  # ridge read-out of a frame's raw proprio from its raw image channels (bias last), for goal images
            self.register_buffer("proprio_readout", torch.zeros(image_width + 1, jepa.proprio_dim if self.state_vectors else cfg.proprio_dim))
        self.register_buffer("z_mean", torch.zeros(width))
        self.register_buffer("z_std", torch.ones(width))
        self.register_buffer("cost_weight", torch.ones(width))  # [D] each channel's weight in the planning cost
        self.predictor = ActionPredictor(cfg.predictor, tokens, width, cfg.action_dim * cfg.frame_skip)
        for module in (self.encoder, self.projector):
            if module is not None:
                module.requires_grad_(cfg.finetune)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the cost had channel weights weigh every channel."""
        state_dict.setdefault(prefix + "cost_weight", torch.ones_like(self.cost_weight))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(N tokens, D width) of one frame's latent."""
        return self.predictor.tokens, self.z_mean.shape[0]

    def image_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 [B, T, H, W, 3] -> the unstandardised channels an image gives [B, T, N, D']:
        the learned latent, then the colour moments where the state has them."""
        tokens = self.encoder(pixels)  # [B, T, G*G, D]
        if self.cfg.latent == "tokens":
            return pool_grid(tokens, self.cfg.latent_grid)
        if self.projector is not None:
            z = self.projector(tokens)
        else:
            z = torch.cat([keypoints(tokens, self.coords), tokens.mean(-2)], -1)
        if self.moments is not None:
            z = torch.cat([z, self.moments.features(pixels.flatten(0, 1)).reshape(*pixels.shape[:2], -1)], -1)
        return z[:, :, None]

    def readout_inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 [B, T, H, W, 3] -> the raw image channels [B, T, D'] a goal image's proprio is
        read from: the image's part of the state, or with t-jepa the colour moments (its own, then the state's)."""
        if self.state_vectors is None:
            return self.image_latent(pixels)[:, :, 0]
        frames = pixels.flatten(0, 1)
        seen = [self.state_vectors.moments.features(frames)] + ([self.moments.features(frames)] if self.moments else [])
        return torch.cat(seen, -1).reshape(*pixels.shape[:2], -1)

    def _read_proprio(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ self.proprio_readout[:-1] + self.proprio_readout[-1]

    def raw_latent(self, pixels: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """pixels uint8 [B, T, H, W, 3] and proprio [B, T, P] (None: read from the image) ->
        unstandardised states [B, T, N, D]."""
        if self.state_vectors is not None:
            return self._state_vector_latent(pixels, proprio)
        z = self.image_latent(pixels)
        if not self.cfg.proprio:
            return z
        if proprio is None:
            proprio = self._read_proprio(z[:, :, 0])
        return torch.cat([z, proprio.to(z.dtype)[:, :, None]], -1)

    def _state_vector_latent(self, pixels: torch.Tensor, proprio: torch.Tensor | None) -> torch.Tensor:
        """t-jepa: the pooled feature tokens of (proprio, colour moments), then the state's
        moments and proprio where it has them [B, T, 1, D]."""
        seen = self.readout_inputs(pixels)  # [B, T, D']
        proprio = self._read_proprio(seen) if proprio is None else proprio.to(seen.dtype)
        own = self.state_vectors.moments.size
        vectors = self.state_vectors.combine(proprio, seen[..., :own])  # [B, T, F]
        parts = [self.encoder(vectors.flatten(0, 1)).mean(-2).reshape(*seen.shape[:2], -1)]  # [B, T, width]
        parts += [seen[..., own:]] if self.moments else []
        parts += [proprio] if self.cfg.proprio else []
        return torch.cat(parts, -1)[:, :, None]

    def encode(self, pixels: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """pixels uint8 [..., T, H, W, 3], proprio [..., T, P] or None -> standardised states [..., T, N, D]."""
        lead = pixels.shape[:-4]
        flat_proprio = None if proprio is None else proprio.reshape(-1, *proprio.shape[-2:])
        z = self.raw_latent(pixels.reshape(-1, *pixels.shape[-4:]), flat_proprio)
        return ((z - self.z_mean) / self.z_std).reshape(*lead, *z.shape[1:])

    @torch.no_grad()
    def fit_proprio_readout(self, image: torch.Tensor, proprio: torch.Tensor) -> None:
        """The ridge read-out (`probe.fit_ridge`) of raw proprio [F, P] from the raw image channels [F, D'] (`readout_inputs`) of training frames."""
        mean, weights, target_mean = fit_ridge(image.double().numpy(), proprio.double().numpy())
        bias = target_mean - mean @ weights
        self.proprio_readout.copy_(torch.cat([torch.from_numpy(weights), torch.from_numpy(bias)[None]]).float())

    @torch.no_grad()
    def set_normalisation(self, raw: torch.Tensor) -> None:
        """Per-channel mean and spread of unstandardised latents [..., D] of training frames."""
        flat = raw.reshape(-1, raw.shape[-1]).float()
        self.z_mean.copy_(flat.mean(0))
        self.z_std.copy_(flat.std(0).clamp_min(1e-6))

    def rollout(self, z_hist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """z_hist [..., Th, N, D], action blocks [..., Th-1+H, A*skip] (those between the history
        frames, then H to imagine) -> predicted latents [..., H, N, D]."""
        lead, (th, n, d) = z_hist.shape[:-3], z_hist.shape[-3:]
        history = self.cfg.predictor.history
        window = z_hist.reshape(-1, th, n, d)[:, -history:]
        actions = actions.reshape(window.shape[0], -1, actions.shape[-1])
        horizon = actions.shape[1] - (th - 1)
        if horizon < 1:
            raise ValueError(f"rollout needs {th - 1} history action blocks plus at least one to imagine, got {actions.shape[1]}")
        act, modulations = self.predictor.embed_actions(actions)  # once for every step
        predictions = []
        for step in range(horizon):
            last = th - 1 + step  # index of the window's last frame in the whole sequence
            lo, hi = last + 1 - window.shape[1], last + 1
            embedded = act[:, lo:hi], [m if m is None else m[:, lo:hi] for m in modulations]
            nxt = self.predictor(window, embedded=embedded)[:, -1:]  # [S, 1, N, D]
            predictions.append(nxt)
            window = torch.cat([window, nxt], 1)[:, -history:]
        return torch.cat(predictions, 1).reshape(*lead, horizon, n, d)

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(a, b) if self.cfg.loss == "l2" else F.l1_loss(a, b)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """batch: "latents" [B, T, N, D] (frozen encoder, precomputed) or "frames" uint8
        [B, T, H, W, 3], and "actions" [B, T-1, A*skip] -> (loss, metrics)."""
        z = batch["latents"] if "latents" in batch else self.encode(batch["frames"])
        actions, h = batch["actions"], self.cfg.predictor.history
        teacher = self._distance(self.predictor(z[:, :h], actions[:, :h]), z[:, 1: h + 1])
        rolled = self.rollout(z[:, :h], actions[:, : h - 1 + self.cfg.rollout_steps])
        rollout = self._distance(rolled, z[:, h:])
        loss = (teacher + rollout) / 2
        metrics = {"loss/teacher_forcing": teacher.detach(), "loss/rollout": rollout.detach(),
                   "loss/copy_last_baseline": self._distance(z[:, h - 1: h].expand_as(z[:, h:]), z[:, h:]).detach()}
        if self.cfg.finetune:
            variance, covariance = vicreg(z.flatten(0, 2))
            metrics |= {"loss/variance": variance.detach(), "loss/covariance": covariance.detach()}
            loss = loss + self.cfg.variance_weight * variance + self.cfg.cov_weight * covariance
        return loss, metrics
