"""The `moments` policy: a chunked MLP on fixed image features, the colour moments of each image
(`worldmodel.encoders.ColourMoments`: per colour of a palette fitted to the demonstrations' frames,
where its mask lies and how it is turned; Hu 1962), with the proprio. It predicts a chunk of k
actions (ACT's chunking, Zhao et al. 2023) and runs as the other policies do (`ChunkActor`).

Its image features have no trainable parameter, so `jepa imitate` computes them once for every
demonstration frame and goal image (in each of the square's turns with `square_symmetry`), and a
training step is an MLP's step on cached vectors: 20,000 steps of 256 windows take less than half
the time of ACT's 3,000 steps of 64 (PushT: about 2 minutes against 5 on 2 CPU cores). On PushT,
whose pixel policies read where the T is but not how it is turned, this reads the angle and has
the samples to use it. The goal image is read as what remains to be done: only its moments that
follow where the demonstrations end (`choose_goal_moments`: not PushT's pusher, which stands
anywhere in it), minus the current frame's; with all of them as they are, the network told the
100 goals apart by them and memorised. It predicts 8 hypotheses of each chunk and executes the
most likely (`modes`; relaxed winner-takes-all, Rupprecht et al. 2017): PushT's expert
picks one of many pushes, and the L1 of a single chunk settles between them (PushT, five training
seeds: a median of 72% against 56% with one hypothesis, 73% against 53% on held-out evaluation
episodes, where Diffusion Policy reports 64%). With `jepa_weight` > 0 it also predicts, from the
same hidden layer, the moments of the frames t+2, t+4, ..., t+k: ACT-JEPA's objective (Vujinovic
& Kovacevic 2025) with the moments as a frozen target encoder, as V-JEPA 2-AC predicts in a frozen
encoder's space. At weight 1 it lifts PushT (five training seeds, pooled: 79.9% against 73.1%
without it, 80.9% against 73.5% on held-out evaluation episodes) and costs Cube (84% against 98%,
three seeds) and Meta-World reach and push (10-12 points, one seed), so it is off by default
(BENCHMARKS.md).
It needs objects whose colour differs from their surroundings, and has no random shift (the
features are cached unshifted).

    batch = {"frame_features": [B, h, F], "goal_features": [B, F] (raw moments, F = colours x 10),
             "proprio": [B, P], "actions": [B, k, A], "action_valid": bool [B, k],
             "future_features": [B, m, F], "future_valid": bool [B, m] (with jepa_weight > 0)}
"""

from __future__ import annotations

import torch
from torch import nn

from agents.policy import ChunkActor, ChunkPolicy, PolicyConfig, chunk_loss, masked_l1, most_likely
from worldmodel.encoders import ColourMoments


RECIPE_TRAIN = {"steps": 20_000, "batch_size": 256, "lr": 1e-3, "min_lr_ratio": 0.0, "weight_decay": 1e-4}
"""Its training defaults, where `jepa imitate` leaves the transformer policies' (3,000 steps of 64):
an MLP step on cached features costs about a fifteenth of ACT's (PushT, BENCHMARKS.md)."""
RECIPE_MODEL = {"width": 256, "history": 2, "colour_moments": 4, "shift": 0, "modes": 8, "jepa_weight": 0.0}
"""Its model defaults: hidden width 256 (PushT: 41% against 30% at 128, a throwaway MLP of session
22), two frames (the block's motion; PushT over five training seeds: 38.0% of 750 episodes against
34.7% with one), 4 colours (PushT's table, walls, block and pusher), no shift (cached features),
and 8 action hypotheses (PushT over five training seeds, pooled: 73.1% against 63.3% with 4 and
55.1% with 1; 16 gave 72.0% and 74.0% on seeds 0 and 1, 8 gave 72.0% and 74.7%; Meta-World reach
prefers 1: 82% against 92%), and no future-frame prediction (jepa_weight 0: PushT prefers 1, 80%
against 73%, Cube 0, 98% against 84%; at 0.1 PushT tied)."""


class MomentPolicy(ChunkActor):
    """what remains (the goal image's read moments minus the current frame's) [g F], frame moments
    [h F] and normalised proprio [P] -> MLP (depth hidden layers of width, GELU) -> actions [k, A]."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__(cfg)
        self.moments = ColourMoments(cfg.colour_moments, cfg.encoder.image_size)  # `jepa imitate` fits it
        self.register_buffer("goal_read", torch.ones(self.moments.size))  # [F] 1: the goal moment is read, 0: zeroed (`choose_goal_moments`)
        inputs = (cfg.goal_image + cfg.history) * self.moments.size + cfg.proprio_dim
        layers, width = [], inputs
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.width), nn.GELU()]
            width = cfg.width
        self.mlp = nn.Sequential(*layers, nn.Linear(width, cfg.modes * cfg.horizon * cfg.action_dim + (cfg.modes if cfg.modes > 1 else 0)))  # chunks, then mode logits
        self.future_head = nn.Linear(width, len(cfg.future_offsets) * self.moments.size) if cfg.future_offsets else None  # from the last hidden layer

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
        reach the goal (their last without a success), in each of T turns of the square (T = 1
        without the symmetries): the correlation is pooled over the turns, each centred on its own
        mean, so that a turn's shift of both is not taken for agreement. Returns how many are read."""
        if self.cfg.goal_min_correlation > -1:
            centred = lambda x: (x.double() - x.double().mean(1, keepdim=True)).flatten(0, 1)  # noqa: E731  [T N, F]
            goals, reached = centred(goals), centred(reached)
            correlation = (goals * reached).sum(0) / (goals.norm(dim=0) * reached.norm(dim=0)).clamp_min(1e-12)  # [F]; 0 where either is constant
            self.goal_read.copy_((correlation > self.cfg.goal_min_correlation).float())
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
    def predict_action_chunk(self, obs: dict, observe: bool = True) -> torch.Tensor:
        """Actions [B, k, A] in [-1, 1] for batched observations (adds `obs` to the history unless told not to)."""
        frames, goal, proprio = self._inputs(obs, observe)
        features = self.moments.features(frames.flatten(0, 1)).reshape(*frames.shape[:2], -1)  # [B, h, F]
        return most_likely(*self._hypotheses(self._hidden(features, self.moments.features(goal), proprio))).clamp(-1.0, 1.0)


def build_policy(cfg: PolicyConfig) -> ChunkActor:
    """The network of `cfg.kind` (here, not in agents/policy.py, which this module imports)."""
    return MomentPolicy(cfg) if cfg.kind == "moments" else ChunkPolicy(cfg)
