"""The `moments` policy: a chunked MLP on fixed image features, the colour moments of each image
(`worldmodel.encoders.ColourMoments`, Hu 1962: per colour of a palette fitted to the
demonstrations' frames, where its mask lies and how it is turned), with the proprio. It predicts
a chunk of k actions (ACT's chunking, Zhao et al. 2023) as `modes` hypotheses and runs as every
policy does (`ChunkActor`).

Its features have no trainable parameter, so `prepare` caches them once for every demonstration
frame and goal image (in each of the square's turns with `square_symmetry`) and a training step
is an MLP's step on cached vectors. It reads the goal image as what remains to be done: only the
goal moments that follow where the demonstrations end (`choose_goal_moments`; not PushT's
pusher, which stands anywhere in the goal image), each minus the current frame's; read whole,
the goal images let the network tell the demonstrations apart and memorise them. With
`jepa_weight` > 0 it also predicts, from the same hidden layer, the moments of the frames t+2,
t+4, ..., t+k: ACT-JEPA's objective (Vujinovic & Kovacevic 2025) with the moments as a frozen
target encoder. It needs objects whose colour sets them apart, and takes no random shift.

    batch = {"frame_features": [B, h, F], "goal_features": [B, F] (raw moments, F = colours x 10),
             "proprio": [B, P], "actions": [B, k, A], "action_valid": bool [B, k],
             "future_features": [B, m, F], "future_valid": bool [B, m] (with jepa_weight > 0)}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import tyro
from torch import nn

from agents.demonstrations import Demonstrations, WindowSpec
from agents.policy import ChunkActor, PolicyConfig, chunk_loss, masked_l1
from infra.errors import UserError
from worldmodel.encoders import ColourMoments
from worldmodel.goal_features import goal_mask


@dataclass
class MomentPolicyConfig(PolicyConfig):
    """The moments policy's features, network and execution."""

    kind: Annotated[str, tyro.conf.Suppress] = "moments"
    history: int | None = None
    """Observation frames the policy sees (the current one and history - 1 before it). None: the
    task's recipe, else 2 (the block's motion)."""
    modes: int | None = None
    """Action-chunk hypotheses per query (PushT's expert picks one of many pushes). None: the
    task's recipe, else 8."""
    jepa_weight: float | None = None
    """Weight of the loss on the predicted moments of the future frames t+stride, ..., t+chunk
    (ACT-JEPA's objective with the moments as a frozen target encoder; 0: no future prediction).
    None: the task's recipe, else 0."""
    width: int = 256
    """The MLP's hidden width."""
    depth: int = 3
    """The MLP's hidden layers."""
    colour_moments: int | None = None
    """Colours of the palette (k-means of the demonstrations' frames) whose moments are read. None:
    the task's recipe, else 4 (PushT: table, walls, block and pusher)."""
    goal_min_correlation: float | None = None
    """Read a goal image's moment only where it tells where the demonstrations end: where its
    correlation over the demonstrations, between the goal image and the frame where each first
    reaches its goal, exceeds this threshold. None: the threshold lies in the widest gap between the
    sorted correlations (negative ones counted as 0: they never say where a demonstration ends), so
    no moment near a fixed cut is read on one set of demonstrations and dropped on another (PushT:
    17 of 40 read on four sets, where 0.9 read 12 to 14; Cube: the 2 that 0.9 reads); -1: every moment. The rest, such as PushT's
    pusher wherever it stood in the goal image, tell which demonstration it is, not where to go."""
    image_size: Annotated[int, tyro.conf.Suppress] = 64

    TASK_FIELDS: ClassVar[dict[str, object]] = {"history": 2, "modes": 8, "colour_moments": 4, "jepa_weight": 0.0}

    def __post_init__(self):
        super().__post_init__()
        if min(self.width, self.depth) < 1:
            raise UserError(f"width and depth must be positive, got {self.width} and {self.depth}")
        if self.colour_moments is not None and self.colour_moments < 2:
            raise UserError(f"the moments policy reads a palette of 2 or more colours (--model.colour-moments), got {self.colour_moments}")
        if self.goal_min_correlation is not None and not -1 <= self.goal_min_correlation <= 1:
            raise UserError(f"goal-min-correlation is a correlation's threshold, from -1 to 1, got {self.goal_min_correlation}")

    def for_data(self, action_dim: int, proprio_dim: int, image_size: int) -> MomentPolicyConfig:
        return dataclasses.replace(self, action_dim=action_dim, proprio_dim=proprio_dim, image_size=image_size)


class MomentPolicy(ChunkActor):
    """what remains (the goal image's read moments minus the current frame's) [g F], frame moments
    [h F] and normalised proprio [P] -> MLP (depth hidden layers of width, GELU) -> actions [k, A]."""

    cfg: MomentPolicyConfig

    def __init__(self, cfg: MomentPolicyConfig):
        super().__init__(cfg)
        self.moments = ColourMoments(cfg.colour_moments, cfg.image_size)  # `prepare` fits it
        self.register_buffer("goal_read", torch.ones(self.moments.size))  # [F] 1: the goal moment is read, 0: zeroed (`choose_goal_moments`)
        inputs = (cfg.goal_image + cfg.history) * self.moments.size + cfg.proprio_dim
        layers, width = [], inputs
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.width), nn.GELU()]
            width = cfg.width
        self.mlp = nn.Sequential(*layers, nn.Linear(width, cfg.modes * cfg.horizon * cfg.action_dim + (cfg.modes if cfg.modes > 1 else 0)))  # chunks, then mode logits
        self.future_head = nn.Linear(width, len(cfg.future_offsets) * self.moments.size) if cfg.future_offsets else None  # from the last hidden layer

    def prepare(self, demos: Demonstrations, seed: int) -> tuple[WindowSpec, str]:
        """The proprio's normaliser; the palette and the moments' statistics (`palette_frames`); the
        moments of every frame and goal image, cached for the windows; and which goal moments are read."""
        super().prepare(demos, seed)
        self.moments.fit(torch.from_numpy(demos.palette_frames(self.cfg.square_symmetry)), seed=seed)
        spec, summary = self.windows_on(demos), ""
        if self.cfg.goal_image:
            read = self.choose_goal_moments(*(torch.from_numpy(part) for part in demos.goal_and_reached(spec.features)))
            threshold = "chosen from the data" if self.cfg.goal_min_correlation is None else self.cfg.goal_min_correlation
            summary = (f"goal image: {read} of its {self.moments.size} moments follow where the demonstrations end and are read "
                       f"(--model.goal-min-correlation {threshold})" + ("; none: --model.no-goal-image would drop it" if not read else ""))
        return spec, summary

    def windows_on(self, demos: Demonstrations) -> WindowSpec:
        """The windows' spec with the moments of every frame and goal image of `demos` cached (in
        each of the square's turns with `square_symmetry`)."""
        return dataclasses.replace(self.window_spec(), features=demos.cache_features(self.moments.features, self.cfg.square_symmetry))

    def _hidden(self, frame_features: torch.Tensor, goal_features: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Raw moments [B, h, F] and [B, F], proprio [B, P] -> the last hidden layer [B, width]."""
        frames = self.moments.standardise(frame_features)  # [B, h, F], the current frame last
        goal = [(self.moments.standardise(goal_features) - frames[:, -1]) * self.goal_read] if self.cfg.goal_image else []  # what remains to be done
        return self.mlp[:-1](torch.cat([*goal, frames.flatten(1), self.normalise(proprio)], 1))

    def _hypotheses(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last hidden layer [B, width] -> (action chunks [B, M, k, A], mode logits [B, M] or None when M = 1)."""
        out = self.mlp[-1](hidden)  # [B, M k A (+ M)]
        m, k, a = self.cfg.modes, self.cfg.horizon, self.cfg.action_dim
        return out[:, : m * k * a].reshape(len(out), m, k, a), (out[:, m * k * a:] if m > 1 else None)

    @torch.no_grad()
    def choose_goal_moments(self, goals: torch.Tensor, reached: torch.Tensor) -> int:
        """Read the goal moments that follow where the demonstrations end (`cfg.goal_min_correlation`),
        from the raw moments [T, N, F] of N demonstrations' goal images and of their frames that first
        reach the goal, in each of T turns of the square (T = 1 without the symmetries): the
        correlation is pooled over the turns, each centred on its own mean, so that a turn's shift of
        both is not taken for agreement. Returns how many are read."""
        threshold = self.cfg.goal_min_correlation
        if threshold is None or threshold > -1:
            self.goal_read.copy_(goal_mask(goals, reached, threshold))
        return int(self.goal_read.sum())

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss: L1 on the valid actions of the chunk (modes > 1: of the closest hypothesis, plus
        the winner classifier) (+ jepa_weight x the L1 of the future frames' standardised moments, the
        fixed encoder's embeddings, predicted from the same hidden layer)."""
        hidden = self._hidden(batch["frame_features"], batch["goal_features"], batch["proprio"])
        loss, metrics = chunk_loss(*self._hypotheses(hidden), batch["actions"], batch["action_valid"])
        if self.future_head is not None:
            predicted = self.future_head(hidden).reshape(len(hidden), len(self.cfg.future_offsets), -1)  # [B, m, F]
            jepa = masked_l1(predicted, self.moments.standardise(batch["future_features"]), batch["future_valid"])
            metrics["loss/jepa"] = jepa.detach()
            loss = loss + self.cfg.jepa_weight * jepa
        return loss, metrics

    @torch.no_grad()
    def predict_action_hypotheses(self, obs: dict, observe: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        frames, goal, proprio = self._inputs(obs, observe)
        features = self.moments.features(frames.flatten(0, 1)).reshape(*frames.shape[:2], -1)  # [B, h, F]
        hypotheses, logits = self._hypotheses(self._hidden(features, self.moments.features(goal), proprio))
        return hypotheses.clamp(-1.0, 1.0), logits
