"""Visuomotor policies learned from demonstrations: one interface (`ChunkActor`) for four kinds,
and one network (`ChunkPolicy`) for the first three:

- `act-jepa` (ACT-JEPA, Vujinovic & Kovacevic 2025): from the current observation the policy
  predicts (a) a chunk of the next k actions and (b) the embeddings of future observations
  (frames t+s, t+2s, ..., t+k), against an EMA copy of its own encoder (stop-gradient, L1 on
  layer-normed targets), so the representation must carry how the world responds.
- `act`: the same network with action chunking alone (ACT, Zhao et al. 2023, without its CVAE:
  scripted demonstrations are nearly unimodal), so the JEPA term's effect is measured.
- `bc`: the same network predicting one action (behaviour cloning).
- `moments`: an MLP on the images' colour moments (agents/moment_policy.py).

The goal is an image (the tasks are goal-conditioned; `goal_image` off leaves it out where every
frame shows the goal). Each image (goal, history frames) becomes
a compact vector (conv tokens -> spatial keypoints + mean -> linear: `FrameLatent`, the world
model's latent; with `colour_moments`, plus `ColourMoments`' reading of how each colour lies in
it), and optionally also a pooled grid of its tokens (`image_tokens`, as ACT reads
its feature map); with the proprio token and k action queries (and, for act-jepa, m latent
queries) they pass a transformer; linear heads read the queries (and, with `waypoints` and
`goal_waypoints`, the current frame's and the goal image's vectors; `goal_encoder` gives the goal
image an encoder of its own).

    obs = {"pixels": uint8 [B, H, W, 3], "proprio": [B, P], "goal": uint8 [B, H, W, 3]}
    batch = {"frames": uint8 [B, h, H, W, 3], "goal": ..., "proprio": [B, P], "actions": [B, k, A],
             "action_valid": bool [B, k], "future": uint8 [B, m, H, W, 3], "future_valid": bool [B, m],
             "waypoints": [B, w, P], "waypoints_valid": bool [B, w], "goal_waypoints": [B, v, P], "goal_waypoints_valid": bool [B, v]}

Execution: run a chunk's first `execute` actions then query again, or (`ensemble` > 0) query
every step and average the overlapping chunks' actions for this step with weights
exp(-ensemble * i), i = 0 for the oldest chunk still covering this step (ACT's temporal
ensembling: the oldest prediction weighs most).
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
import tyro
from torch import nn

from infra.errors import UserError
from worldmodel.encoders import Block, ColourMoments, EncoderConfig, FrameLatent, build_encoder
from worldmodel.jepa import ema_update, spread_metrics

POLICY_KINDS = ("act-jepa", "act", "bc", "moments")
VECTOR_KINDS = POLICY_KINDS[:3]  # ChunkPolicy's: each image encoded to a vector (`embed`), which the probes read
WTA_RELAX = 0.05  # share of the action loss spread over all hypotheses (modes > 1), so none is left untrained
MODE_WEIGHT = 0.1  # weight of the cross-entropy that learns which hypothesis wins
MIN_GOALS = 8  # different goal images a batch needs before their vectors' spread is watched (2 give rank 1 at best)


@dataclass
class PolicyConfig:
    """Policy architecture, objective and execution."""

    kind: Annotated[str | None, tyro.conf.Suppress] = None
    """act-jepa (actions + future embeddings), act (action chunks alone), bc (one action) or moments
    (action chunks from the images' colour moments by an MLP: agents/moment_policy.py); `jepa
    imitate --policy` sets it (None until then: the checks that depend on it wait for it)."""
    chunk: int = 8
    """Actions predicted per query (bc: 1)."""
    history: int = 1
    """Observation frames the policy sees (the current one and history - 1 before it)."""
    width: int = 128
    """Transformer width, also each image's vector size (moments: the MLP's hidden width)."""
    depth: int = 3
    """Transformer blocks (moments: the MLP's hidden layers)."""
    heads: int = 4
    """Attention heads."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(kind="conv", width=32, patch=8))
    """Image encoder (width 32: a third of width 64's cost per image on 2 CPU cores)."""
    goal_image: bool = True
    """Read the goal image. Off: for tasks that draw their goal in every frame (Meta-World's
    marker), where it adds nothing the frames lack; one image fewer per sample (Meta-World push:
    the same success, a quarter less training time, BENCHMARKS.md)."""
    image_tokens: int = 0
    """Side of a token grid the transformer also reads from each image, beside its vector: the
    encoder's grid average-pooled to image_tokens x image_tokens and projected to width, as ACT
    reads its ResNet feature map (0: one vector per image, the world model's latent). For small
    objects a vector may not carry (Meta-World's puck is three or four pixels wide at 64x64). The
    transformer's cost grows with its tokens (benchmarks/policy_step_cost.py)."""
    colour_moments: int = 0
    """Colours of a palette (k-means of the demonstrations' frames) whose masks' moments
    (`ColourMoments`: share, centroid, covariance shape, third moments) are added to each image's
    vector; 0: off. For shapes whose angle matters, which keypoints do not carry (PushT's T:
    table, walls, block and pusher are 4 colours; BENCHMARKS.md)."""
    goal_min_correlation: float = 0.9
    """The moments policy reads a goal image's moment only where it tells where the demonstrations
    end: where its correlation over the demonstrations, between the goal image and the frame where
    each first reaches its goal (its last without a success), exceeds this (-1: every moment; the
    other policies ignore it), and reads it as what remains, the goal's value minus the current
    frame's, which the demonstrations drive to zero. The rest, such as PushT's pusher wherever it
    stood in the goal image, are zeroed: they tell the policy which demonstration it is in, not
    where to go (PushT, five training seeds: 0.9 reads 14 of 40 moments and beat 0.5, which reads
    17, by 2 to 10 points on each seed on the evaluation episodes it was chosen on, and tied on
    held-out ones, 51.7% against 51.1%; 0.95 reads 4 and fell to 31% on two seeds, BENCHMARKS.md)."""
    modes: int = 1
    """Action-chunk hypotheses per query. Above 1, each training sample trains its closest
    hypothesis (relaxed winner-takes-all L1) and a classifier learns which one wins; execution
    takes the most likely: for demonstrators that choose between distinct moves (PushT's expert
    picks one of dozens of pushes), whose average is none of them (the moments policy's default
    is 8: PushT, pooled over five training seeds, 73% against 55% with 1, Cube 98% against 95%, but
    Meta-World reach 82% against 92%, why not measured; ACT on PushT gained nothing from 4, BENCHMARKS.md)."""
    jepa_weight: float = 0.1
    """Weight of the future-embedding loss (act-jepa; Cube, 100 demonstrations: 0.1 gave 83%, 1.0 gave
    49%). The moments policy predicts the future frames' moments at this weight (its own default is
    0, off: PushT gains at 1, 80% against 73%, and Cube loses, 84% against 98%, BENCHMARKS.md)."""
    isolate_jepa: bool = False
    """act-jepa: the future-embedding queries read every token but no other token reads them, so
    the action path computes exactly what `act` does and the JEPA loss only shapes the shared
    weights (the paper's separate predictor); off: all tokens attend to all."""
    jepa_stride: int = 2
    """Future frames predicted: t+stride, t+2*stride, ..., t+chunk (act-jepa, and moments with a jepa_weight)."""
    waypoints: tuple[int, ...] = ()
    """Steps of each demonstration (from its start; negative: from its end, -1 its last frame,
    which after `jepa imitate`'s trim is the one that first reaches the goal) whose proprio a
    linear map of every earlier frame's vector must also predict (L1 on the normalised proprio,
    weight waypoint_weight; any kind; empty: off). Where the demonstrator's hand will be says
    where the object it goes for lies, which the saturated actions of the first steps hardly do
    (Meta-World's scripted moves clip at 1 until the hand is within 10 cm), and it needs no label
    beyond the observation. It is read from the frame alone, not from the transformer, which can
    recall it from the proprio and goal image instead of seeing it (Meta-World push and
    pick-place: 24 40, BENCHMARKS.md)."""
    waypoint_weight: float = 3.0
    """Weight of the waypoint loss (frame and goal waypoints alike; ACT over three training seeds,
    with goal waypoint -1 and the goal encoder: Meta-World push 45.3% at 3 against 32.0% at 1,
    pick-place 32.7% against 22.7%, BENCHMARKS.md)."""
    goal_waypoints: tuple[int, ...] = ()
    """Steps (as in waypoints) whose proprio a linear map of the goal image's vector must predict,
    for every frame of the demonstration: -1, where the demonstrator's hand ends up, says where
    the goal is (Meta-World push: R2 0.96 against the goal's position). Needs the goal image."""
    goal_encoder: bool = False
    """Encode the goal image with an encoder of its own, not the frames': what the goal image is
    taught (goal_waypoints) then cannot displace what the frames are (waypoints; on Meta-World
    push the end waypoint through the shared encoder lost the puck, BENCHMARKS.md)."""
    ema_start: float = 0.99
    """Momentum of the target encoder, ramped linearly to ema_end over training (act-jepa)."""
    ema_end: float = 1.0
    """Final momentum of the target encoder."""
    shift: int = 4
    """Random-shift augmentation in pixels during training (0: off)."""
    square_symmetry: bool = False
    """Train on each window turned by one of the square's eight symmetries, drawn at random (quarter
    turns and mirror images of images, proprio and actions: envs/symmetry.py), for tasks that
    declare them (PushT)."""
    execute: int = 4
    """Actions of each chunk executed before the next query (ignored when ensemble > 0)."""
    ensemble: float = 0.0
    """Temporal-ensembling coefficient (> 0: query every step, ACT uses 0.01)."""
    action_dim: Annotated[int, tyro.conf.Suppress] = 0
    proprio_dim: Annotated[int, tyro.conf.Suppress] = 0

    def __post_init__(self):
        if self.kind is not None and self.kind not in POLICY_KINDS:
            raise UserError(f"policy must be one of {', '.join(POLICY_KINDS)}, got {self.kind!r}")
        if min(self.chunk, self.history, self.width, self.depth, self.heads, self.jepa_stride, self.modes) < 1 or self.width % self.heads:
            raise UserError("chunk, history, width, depth, heads, modes and jepa-stride must be positive, and width a multiple of heads")
        if self.kind == "act-jepa" and self.jepa_stride > self.chunk:
            raise UserError(f"act-jepa predicts frames t+stride..t+chunk: jepa-stride {self.jepa_stride} exceeds the chunk {self.chunk}")
        if self.ensemble < 0 or self.shift < 0 or not 0 <= self.ema_start <= self.ema_end <= 1:
            raise UserError("ensemble and shift must not be negative, and 0 <= ema-start <= ema-end <= 1")
        if self.colour_moments < 0 or self.colour_moments == 1:
            raise UserError(f"colour-moments is a palette's size (2 or more; 0: off), got {self.colour_moments}")
        if self.kind == "moments" and not self.colour_moments:
            raise UserError("the moments policy reads the images' colour moments: give the palette's size, e.g. --model.colour-moments 4")
        if self.kind == "moments" and (self.waypoints or self.goal_waypoints or self.goal_encoder or self.image_tokens):
            raise UserError("the moments policy has no image encoder or transformer: drop waypoints, goal-waypoints, goal-encoder and image-tokens")
        if self.jepa_weight < 0:
            raise UserError(f"jepa-weight is a loss's weight, 0 or more (0: no future prediction), got {self.jepa_weight}")
        if not -1 <= self.goal_min_correlation <= 1:
            raise UserError(f"goal-min-correlation is a correlation's threshold, from -1 to 1, got {self.goal_min_correlation}")
        if self.kind == "moments" and self.shift:
            raise UserError(f"the moments policy caches its features unshifted: --model.shift must be 0, got {self.shift}")
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
        if self.kind not in (None, "bc") and not 1 <= self.execute <= self.chunk:
            raise UserError(f"execute (actions run per chunk) must be from 1 to the chunk ({self.chunk}), got {self.execute}")

    @property
    def horizon(self) -> int:
        """Actions predicted per query."""
        if self.kind is None:
            raise ValueError("PolicyConfig.kind is not set")
        return 1 if self.kind == "bc" else self.chunk

    @property
    def future_offsets(self) -> list[int]:
        """Steps ahead of the future frames whose embeddings are predicted (empty unless act-jepa, or
        moments with a jepa_weight)."""
        predicts = self.kind == "act-jepa" or (self.kind == "moments" and self.jepa_weight > 0)
        return list(range(self.jepa_stride, self.chunk + 1, self.jepa_stride)) if predicts else []


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each sample's images [B, n, H, W, 3] (all n alike) by up to `pad` pixels, edges replicated (DrQ)."""
    b, n, h, w, c = images.shape
    padded = F.pad(images.permute(0, 1, 4, 2, 3).flatten(1, 2).float(), (pad,) * 4, mode="replicate")  # [B, n*3, H+2p, W+2p]
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(images.device, non_blocking=True)  # no stream sync for the copy
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # [B, 1, W]
    shifted = padded[torch.arange(b, device=images.device)[:, None, None], :, rows, cols]  # [B, H, W, n*3]
    return shifted.reshape(b, h, w, n, c).permute(0, 3, 1, 2, 4).to(images.dtype)


def masked_l1(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the valid rows: predicted, target [B, n, D], valid bool [B, n]."""
    weight = valid[..., None].to(predicted)
    return ((predicted - target).abs() * weight).sum() / (weight.sum() * predicted.shape[-1]).clamp_min(1)


def chunk_loss(hypotheses: torch.Tensor, logits: torch.Tensor | None, actions: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """L1 of each sample's closest hypothesis: hypotheses [B, M, k, A], logits [B, M] (None when M = 1),
    actions [B, k, A], valid bool [B, k]. With M > 1, relaxed winner-takes-all (every hypothesis keeps
    WTA_RELAX of the loss, so none is left untrained) plus the cross-entropy of which one wins."""
    weight = valid[:, None, :, None].to(hypotheses)  # [B, 1, k, 1]
    errors = ((hypotheses - actions[:, None]).abs() * weight).sum((2, 3))  # [B, M]
    best = errors.argmin(1)  # [B]
    per_entry = (weight.sum() * hypotheses.shape[-1]).clamp_min(1)
    action_loss = errors.gather(1, best[:, None]).sum() / per_entry
    if logits is None:
        return action_loss, {"loss/action_l1": action_loss.detach()}
    mode_loss = F.cross_entropy(logits, best)
    loss = (1 - WTA_RELAX) * action_loss + WTA_RELAX * errors.mean(1).sum() / per_entry + MODE_WEIGHT * mode_loss
    return loss, {"loss/action_l1": action_loss.detach(), "loss/mode_ce": mode_loss.detach()}


def most_likely(hypotheses: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
    """Hypotheses [B, M, k, A] and logits [B, M] (None: one hypothesis) -> the most likely chunk [B, k, A]."""
    return hypotheses[:, 0] if logits is None else hypotheses[torch.arange(len(logits)), logits.argmax(1)]


class ChunkActor(nn.Module):
    """What every policy shares: the proprio's normalisation, the observation history, and the
    execution of the chunks `predict_action_chunk` returns (see the module docstring)."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        if cfg.kind is None or not cfg.action_dim:
            raise UserError("the policy needs its kind and action_dim (jepa imitate sets both: --policy, the demonstrations)")
        self.cfg = cfg
        self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.proprio_mean.device

    def normalise(self, proprio: torch.Tensor) -> torch.Tensor:
        """Proprio [..., P] in the demonstrations' units -> zero mean, unit std (the inputs' and the waypoints' scale)."""
        return (proprio - self.proprio_mean) / self.proprio_std

    def reset(self) -> None:
        """Forget the observation history and queued actions (call at each episode start)."""
        self._frames: deque = deque(maxlen=self.cfg.history)
        self._chunks: deque = deque(maxlen=self.cfg.horizon)  # (ensemble) recent chunks, newest last
        self._queue: torch.Tensor | None = None  # [B, n, A] actions left of the current chunk

    def _observe(self, obs: dict) -> None:
        """Add the observation's frames [B, H, W, 3] to the history."""
        pixels = torch.as_tensor(obs["pixels"], device=self.device)
        while len(self._frames) < self.cfg.history - 1:  # an episode's first frame stands in for the past
            self._frames.append(pixels)
        self._frames.append(pixels)

    def _inputs(self, obs: dict, observe: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched observations -> (frames uint8 [B, h, H, W, 3], goal uint8 [B, H, W, 3], proprio [B, P]) on
        the policy's device (adds `obs` to the history unless told not to)."""
        if observe:
            self._observe(obs)
        frames = torch.stack(list(self._frames), 1)
        goal = torch.as_tensor(obs["goal"], device=self.device)
        return frames, goal, torch.as_tensor(obs["proprio"], dtype=torch.float32, device=self.device)

    def predict_action_chunk(self, obs: dict, observe: bool = True) -> torch.Tensor:
        """Actions [B, k, A] in [-1, 1] for batched observations (adds `obs` to the history unless told not to)."""
        raise NotImplementedError

    @torch.no_grad()
    def select_action(self, obs: dict) -> torch.Tensor:
        """The action [B, A] to take now (chunks executed `execute` at a time, or temporally ensembled)."""
        cfg = self.cfg
        self._observe(obs)
        if cfg.ensemble > 0:
            self._chunks.append(self.predict_action_chunk(obs, observe=False))
            ages = len(self._chunks)
            # chunk j (0 oldest) was predicted ages-1-j steps ago: its action for now is at that index
            actions = torch.stack([c[:, ages - 1 - j] for j, c in enumerate(self._chunks)], 0)  # [n, B, A]
            weights = torch.exp(-cfg.ensemble * torch.arange(ages, dtype=torch.float32, device=actions.device))
            return (weights[:, None, None] * actions).sum(0) / weights.sum()
        if self._queue is None or self._queue.shape[1] == 0:
            self._queue = self.predict_action_chunk(obs, observe=False)[:, : min(cfg.execute, cfg.horizon)]
        action, self._queue = self._queue[:, 0], self._queue[:, 1:]
        return action


class ChunkPolicy(ChunkActor):
    """The network of act-jepa, act and bc; see the module docstring."""

    def __init__(self, cfg: PolicyConfig):
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
            n, g, d = grids.shape[1], self.cfg.encoder.grid, self.cfg.encoder.dim
            pooled = F.adaptive_avg_pool2d(grids.reshape(b * n, g, g, d).permute(0, 3, 1, 2), self.cfg.image_tokens)  # [B n, D, s, s]
            parts.append(self.token_projection(pooled.flatten(2).transpose(1, 2).reshape(b, -1, d)))  # [B, (g + h) s s, width]
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
    def predict_action_chunk(self, obs: dict, observe: bool = True) -> torch.Tensor:
        """Actions [B, k, A] in [-1, 1] for batched observations (adds `obs` to the history unless told not to)."""
        hypotheses, logits = self._hypotheses(self._trunk(*self._inputs(obs, observe))[0])
        return most_likely(hypotheses, logits).clamp(-1.0, 1.0)
