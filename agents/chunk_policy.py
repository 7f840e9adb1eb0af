"""The transformer policy family: `act-jepa`, `act` and `bc`, one network (`ChunkPolicy`).

- `act-jepa` (ACT-JEPA, Vujinovic & Kovacevic 2025): from the current observation the policy
  predicts (a) a chunk of the next k actions and (b) the embeddings of future observations
  (frames t+s, t+2s, ..., t+k), against an EMA copy of its own encoder (stop-gradient, L1 on
  layer-normed targets), so the representation must carry how the world responds.
- `act`: the same network with action chunking alone (ACT, Zhao et al. 2023, without its CVAE:
  scripted demonstrations are nearly unimodal), so the JEPA term's effect is measured.
- `bc`: the same network predicting one action (behaviour cloning).

Each image (goal, history frames) becomes a compact vector (conv tokens -> spatial keypoints +
mean -> linear: `FrameLatent`, the world model's latent; with `colour_moments`, plus
`ColourMoments`' reading of how each colour lies in it), and optionally also a pooled grid of its
tokens (`image_tokens`, as ACT reads its feature map); with the proprio token and k action
queries (and, for act-jepa, m latent queries) they pass a transformer; linear heads read the
queries (and, with `waypoints` and `goal_waypoints`, the current frame's and the goal image's
vectors; `goal_encoder` gives the goal image an encoder of its own).

    batch = {"frames": uint8 [B, h, H, W, 3], "goal": ..., "proprio": [B, P], "actions": [B, k, A],
             "action_valid": bool [B, k], "future": uint8 [B, m, H, W, 3], "future_valid": bool [B, m],
             "waypoints": [B, w, P], "waypoints_valid": bool [B, w], "goal_waypoints": [B, v, P], "goal_waypoints_valid": bool [B, v]}
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from agents.policy import ChunkActor, PolicyConfig, chunk_loss, masked_l1
from infra.errors import UserError
from worldmodel.encoders import Block, ColourMoments, EncoderConfig, FrameLatent, build_encoder, pool_grid
from worldmodel.jepa import ema_update, spread_metrics

KINDS = ("act-jepa", "act", "bc")
MIN_GOALS = 8  # different goal images a batch needs before their vectors' spread is watched (2 give rank 1 at best)


@dataclass
class ChunkPolicyConfig(PolicyConfig):
    """The transformer policies' architecture, objective and execution."""

    kind: str = "act-jepa"
    """act-jepa (actions + future embeddings), act (action chunks alone) or bc (one action)."""
    width: int = 128
    """Transformer width, also each image's vector size."""
    depth: int = 3
    """Transformer blocks."""
    heads: int = 4
    """Attention heads."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="conv", width=32, patch=8))
    """Image encoder (width 32: a third of width 64's cost per image on 2 CPU cores)."""
    image_tokens: int = 0
    """Side of a token grid the transformer also reads from each image, beside its vector: the
    encoder's grid average-pooled to image_tokens x image_tokens and projected to width, as ACT
    reads its ResNet feature map (0: one vector per image). For small objects a vector may not
    carry; the transformer's cost grows with its tokens (benchmarks/policy_step_cost.py)."""
    colour_moments: int = 0
    """Colours of a palette (k-means of the demonstrations' frames) whose masks' moments
    (`ColourMoments`: share, centroid, covariance shape, third moments) are added to each image's
    vector; 0: off. For shapes whose angle matters, which keypoints do not carry (PushT's T)."""
    jepa_weight: float = 0.1
    """Weight of the future-embedding loss (act-jepa)."""
    isolate_jepa: bool = False
    """act-jepa: the future-embedding queries read every token but no other token reads them, so
    the action path computes exactly what `act` does and the JEPA loss only shapes the shared
    weights (the paper's separate predictor); off: all tokens attend to all."""
    waypoints: tuple[int, ...] = ()
    """Steps of each demonstration (from its start; negative: from its end, -1 its last frame,
    which after `jepa imitate`'s trim is the one that first reaches the goal) whose proprio a
    linear map of every earlier frame's vector must also predict (L1 on the normalised proprio,
    weight waypoint_weight; empty: off). Where the demonstrator's hand will be says where the
    object it goes for lies, with no label beyond the observation; it is read from the frame
    alone, which cannot recall it from the proprio and goal image (Meta-World push and
    pick-place: 24 40)."""
    waypoint_weight: float = 3.0
    """Weight of the waypoint loss (frame and goal waypoints alike)."""
    goal_waypoints: tuple[int, ...] = ()
    """Steps (as in waypoints) whose proprio a linear map of the goal image's vector must predict,
    for every frame of the demonstration: -1, where the demonstrator's hand ends up, says where
    the goal is. Needs the goal image."""
    goal_encoder: bool = False
    """Encode the goal image with an encoder of its own, not the frames': what the goal image is
    taught (goal_waypoints) then cannot displace what the frames are (waypoints)."""
    ema_start: float = 0.99
    """Momentum of the target encoder, ramped linearly to ema_end over training (act-jepa)."""
    ema_end: float = 1.0
    """Final momentum of the target encoder."""
    shift: int = 4
    """Random-shift augmentation in pixels during training (0: off)."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"the transformer policy is one of {', '.join(KINDS)}, got {self.kind!r}")
        super().__post_init__()
        if min(self.width, self.depth, self.heads) < 1 or self.width % self.heads:
            raise UserError("width, depth and heads must be positive, and width a multiple of heads")
        if self.shift < 0 or not 0 <= self.ema_start <= self.ema_end <= 1:
            raise UserError("shift must not be negative, and 0 <= ema-start <= ema-end <= 1")
        if self.colour_moments < 0 or self.colour_moments == 1:
            raise UserError(f"colour-moments is a palette's size (2 or more; 0: off), got {self.colour_moments}")
        if self.image_tokens < 0 or (self.image_tokens and self.encoder.grid % self.image_tokens):
            raise UserError(f"image-tokens must divide the encoder's token grid ({self.encoder.grid}), got {self.image_tokens}")
        if 0 in self.waypoints or self.waypoint_weight < 0:
            raise UserError(f"waypoints are steps from a demonstration's start (1, 2, ...) or end (-1, -2, ...) and waypoint-weight is not negative, "
                            f"got {self.waypoints} and {self.waypoint_weight}")
        if (self.goal_waypoints or self.goal_encoder) and not self.goal_image:
            raise UserError("goal-waypoints and goal-encoder need the goal image: drop --model.no-goal-image")
        if 0 in self.goal_waypoints:
            raise UserError(f"goal-waypoints are steps from a demonstration's start (1, 2, ...) or end (-1, -2, ...), got {self.goal_waypoints}")
        if self.encoder.tubelet != 1:
            raise UserError(f"policies encode single frames: the encoder's tubelet must be 1, got {self.encoder.tubelet}")

    @property
    def predicts_future(self) -> bool:
        """act-jepa predicts the future frames' embeddings (jepa_weight is its loss's weight)."""
        return self.kind == "act-jepa"

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def for_data(self, action_dim: int, proprio_dim: int, image_size: int) -> ChunkPolicyConfig:
        return dataclasses.replace(self, action_dim=action_dim, proprio_dim=proprio_dim,
                                   encoder=dataclasses.replace(self.encoder, image_size=image_size))


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each sample's images [B, n, H, W, 3] (all n alike) by up to `pad` pixels, edges replicated (DrQ)."""
    b, n, h, w, c = images.shape
    padded = F.pad(images.permute(0, 1, 4, 2, 3).flatten(1, 2).float(), (pad,) * 4, mode="replicate")  # [B, n*3, H+2p, W+2p]
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(images.device, non_blocking=True)  # no stream sync for the copy
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # [B, 1, W]
    shifted = padded[torch.arange(b, device=images.device)[:, None, None], :, rows, cols]  # [B, H, W, n*3]
    return shifted.reshape(b, h, w, n, c).permute(0, 3, 1, 2, 4).to(images.dtype)



class ChunkPolicy(ChunkActor):
    """The network of act-jepa, act and bc; see the module docstring."""

    cfg: ChunkPolicyConfig

    def __init__(self, cfg: ChunkPolicyConfig):
        super().__init__(cfg)
        width, enc = cfg.width, cfg.encoder
        self.encoder = build_encoder(enc)
        self.latent = FrameLatent(enc.grid, enc.dim, width)  # tokens -> one vector per image
        self.moments = ColourMoments(cfg.colour_moments, enc.image_size) if cfg.colour_moments else None  # `jepa imitate` fits it
        self.moments_projection = nn.Linear(self.moments.size, width) if self.moments is not None else None  # added to every online vector
        self.target = None
        if cfg.future_offsets:  # EMA target (stop-gradient) of encoder + latent
            self.target = nn.ModuleDict({"encoder": copy.deepcopy(self.encoder), "latent": copy.deepcopy(self.latent)}).requires_grad_(False)
        self.goal_encoder = nn.ModuleDict({"encoder": build_encoder(enc), "latent": FrameLatent(enc.grid, enc.dim, width)}) if cfg.goal_encoder else None
        if (cfg.waypoints or cfg.goal_waypoints) and not cfg.proprio_dim:
            raise UserError("waypoints are proprio the policy predicts, but these demonstrations record none")
        self.proprio = nn.Linear(cfg.proprio_dim, width) if cfg.proprio_dim else None
        self.token_projection = nn.Linear(enc.dim, width) if cfg.image_tokens else None
        queries = cfg.horizon + len(cfg.future_offsets)
        tokens = (cfg.goal_image + cfg.history) * (1 + cfg.image_tokens**2) + (self.proprio is not None) + queries
        self.positions = nn.Parameter(torch.randn(tokens, width) * 0.02)  # also tells goal, frames, queries apart
        self.blocks = nn.ModuleList(Block(width, cfg.heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(width)
        self.action_head = nn.Linear(width, cfg.modes * cfg.action_dim)
        self.mode_head = nn.Linear(width, cfg.modes) if cfg.modes > 1 else None
        self.future_head = nn.Linear(width, width) if cfg.future_offsets else None
        self.waypoint_head = nn.Linear(width, len(cfg.waypoints) * cfg.proprio_dim) if cfg.waypoints else None
        self.goal_waypoint_head = nn.Linear(width, len(cfg.goal_waypoints) * cfg.proprio_dim) if cfg.goal_waypoints else None
        mask = None  # True: may not attend; None: all tokens attend to all
        if cfg.isolate_jepa and cfg.future_offsets:
            mask = torch.zeros(tokens, tokens, dtype=torch.bool)
            mask[: -len(cfg.future_offsets), -len(cfg.future_offsets):] = True
        self.register_buffer("attention_mask", mask, persistent=False)


    # ---- preparation -------------------------------------------------------------------
    def start_from(self, encoder: nn.Module) -> None:
        """Start the image encoder (and its EMA target and the goal's encoder, where there are) from a pretrained one's weights."""
        state = encoder.state_dict()
        for copy_ in [self.encoder] + ([self.target["encoder"]] if self.target is not None else []) + ([self.goal_encoder["encoder"]] if self.goal_encoder is not None else []):
            copy_.load_state_dict(state)

    def window_spec(self):
        return dataclasses.replace(super().window_spec(), waypoints=self.cfg.waypoints, goal_waypoints=self.cfg.goal_waypoints)

    def prepare(self, demos, seed: int):
        """The proprio's normaliser, and with colour moments their palette and statistics, fitted to
        the palette's frames as training sees them (every turn, shifted)."""
        spec, _ = super().prepare(demos, seed)
        if self.moments is not None:
            frames = torch.from_numpy(demos.palette_frames(self.cfg.square_symmetry))
            if self.cfg.shift:  # a shift moves what touches the border (PushT's walls) by far more than the unshifted frames vary
                frames = random_shift(frames[:, None], self.cfg.shift, torch.Generator().manual_seed(seed))[:, 0]
            self.moments.fit(frames, seed=seed)
        return spec, ""

    # ---- network -----------------------------------------------------------------------
    def embed(self, images: torch.Tensor, encoder: nn.Module | None = None, latent: nn.Module | None = None) -> torch.Tensor:
        """uint8 images [B, n, H, W, 3] -> vectors [B, n, width], each image on its own (a ViT
        would otherwise attend across them); by default through the online encoder (and the colour
        moments, which a given encoder, the EMA target's, goes without)."""
        return self._encode(images, encoder, latent, moments=encoder is None)[0]

    def _encode(self, images: torch.Tensor, encoder: nn.Module | None = None, latent: nn.Module | None = None,
                moments: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [B, n, H, W, 3] -> (vectors [B, n, width], token grids [B, n, N, D])."""
        b, n = images.shape[:2]
        tokens = (encoder or self.encoder)(images.flatten(0, 1)[:, None])[:, 0]  # [B*n, N, D]
        vectors = (latent or self.latent)(tokens).reshape(b, n, -1)
        if moments and self.moments is not None:
            vectors = vectors + self.moments_projection(self.moments(images.flatten(0, 1))).reshape(b, n, -1)
        return vectors, tokens.reshape(b, n, *tokens.shape[1:])

    def embed_goal(self, goal: torch.Tensor) -> torch.Tensor:
        """uint8 goal images [B, H, W, 3] -> vectors [B, width], through the goal's encoder if it has one."""
        return self._encode_goal(goal)[0][:, 0]

    def _encode_goal(self, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 goal images [B, H, W, 3] -> (vectors [B, 1, width], token grids [B, 1, N, D])."""
        own = (self.goal_encoder["encoder"], self.goal_encoder["latent"]) if self.goal_encoder is not None else ()
        return self._encode(goal[:, None], *own)

    def _trunk(self, frames: torch.Tensor, goal: torch.Tensor, proprio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, h, H, W, 3], goal [B, H, W, 3], proprio [B, P] -> (query outputs [B, k + m, width],
        image vectors [B, g + h, width]; g = 1 with the goal image, else 0)."""
        b = frames.shape[0]
        if self.goal_encoder is not None:
            encoded = zip(self._encode_goal(goal), self._encode(frames))
            images, grids = (torch.cat(pair, 1) for pair in encoded)  # [B, 1 + h, width], [B, 1 + h, N, D]
        else:
            images, grids = self._encode(torch.cat([goal[:, None], frames], 1) if self.cfg.goal_image else frames)  # [B, g + h, width], [B, g + h, N, D]
        parts = [images]
        if self.token_projection is not None:
            pooled = pool_grid(grids, self.cfg.image_tokens)  # [B, g + h, s s, D]
            parts.append(self.token_projection(pooled.flatten(1, 2)))  # [B, (g + h) s s, width]
        if self.proprio is not None:
            parts.append(self.proprio(self.normalise(proprio))[:, None])
        queries = self.positions.new_zeros(b, self.cfg.horizon + len(self.cfg.future_offsets), self.cfg.width)
        x = torch.cat(parts + [queries], 1) + self.positions
        for block in self.blocks:
            x = block(x, self.attention_mask)
        return self.norm(x[:, -queries.shape[1]:]), images

    def _hypotheses(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Query outputs [B, k + m, width] -> (action chunks [B, M, k, A], mode logits [B, M] or None when M = 1)."""
        queries = out[:, : self.cfg.horizon]  # [B, k, width]
        b, k = queries.shape[:2]
        chunks = self.action_head(queries).reshape(b, k, self.cfg.modes, -1).transpose(1, 2)
        return chunks, (self.mode_head(queries.mean(1)) if self.mode_head is not None else None)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss: L1 on the valid actions of the chunk (modes > 1: of the closest hypothesis, plus
        the winner classifier) (+ waypoint_weight x the frame and goal waypoint L1s) (+ jepa_weight x the future-embedding L1)."""
        cfg, h = self.cfg, self.cfg.history
        images = torch.cat([batch["goal"][:, None], batch["frames"]] + ([batch["future"]] if self.target is not None else []), 1)
        if cfg.shift and self.training:
            images = random_shift(images, cfg.shift, generator if generator is not None else torch.default_generator)
        out, embedded = self._trunk(images[:, 1: 1 + h], images[:, 0], batch["proprio"])
        hypotheses, logits = self._hypotheses(out)  # [B, M, k, A], [B, M] or None
        loss, metrics = chunk_loss(hypotheses, logits, batch["actions"][:, : cfg.horizon], batch["action_valid"][:, : cfg.horizon])
        for key, metric, head, vector in (("waypoints", "loss/waypoint", self.waypoint_head, -1), ("goal_waypoints", "loss/goal_waypoint", self.goal_waypoint_head, 0)):
            if head is not None:  # from the current frame's vector alone, or the goal image's
                predicted = head(embedded[:, vector]).reshape(len(embedded), -1, cfg.proprio_dim)  # [B, w, P]
                waypoint = masked_l1(predicted, self.normalise(batch[key]), batch[f"{key}_valid"])
                metrics[metric] = waypoint.detach()
                loss = loss + cfg.waypoint_weight * waypoint
        if self.target is not None:
            predicted = self.future_head(out[:, cfg.horizon:])  # [B, m, width]
            with torch.no_grad():
                target = self.embed(images[:, 1 + h:], self.target["encoder"], self.target["latent"])
                target = F.layer_norm(target, target.shape[-1:])
            jepa = masked_l1(predicted, target, batch["future_valid"])
            metrics["loss/jepa"] = jepa.detach()
            loss = loss + cfg.jepa_weight * jepa
        vectors, goals = embedded.detach(), batch["goal"]
        metrics["collapse"] = lambda: self._spread(vectors, goals)  # an SVD and a sort: the trainer calls it on logged steps only
        return loss, metrics

    def _spread(self, vectors: torch.Tensor, goals: torch.Tensor) -> dict:
        """The collapse watch's metrics (the trainer warns if they collapse) of the current frame's
        vectors (vectors [B, g + h, width]), and of the goal's where goals (uint8 [B, H, W, 3]) holds
        enough different images to spread."""
        metrics = spread_metrics("collapse", vectors[:, -1])
        if self.cfg.goal_image and len(torch.unique(goals.flatten(1).cpu(), dim=0)) >= MIN_GOALS:  # on the CPU: 1 ms; 42 ms on an H200 (rows alike for thousands of bytes)
            metrics |= spread_metrics("collapse/goal", vectors[:, 0])
        return metrics

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """EMA update of the target encoder (act-jepa), momentum ramped over training."""
        if self.target is None:
            return
        online = list(self.encoder.parameters()) + list(self.latent.parameters())
        ema_update(self.target.parameters(), online, step / max(total_steps, 1), self.cfg.ema_start, self.cfg.ema_end)

    # ---- policy interface --------------------------------------------------------------
    @torch.no_grad()
    def predict_action_hypotheses(self, obs: dict, observe: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        hypotheses, logits = self._hypotheses(self._trunk(*self._inputs(obs, observe))[0])
        return hypotheses.clamp(-1.0, 1.0), logits
