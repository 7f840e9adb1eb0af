"""The `moments` policy: a chunked MLP on fixed image features, the colour moments of each image
(`worldmodel.encoders.ColourMoments`: per colour of a palette fitted to the demonstrations' frames,
where its mask lies and how it is turned; Hu 1962), with the proprio. It predicts a chunk of k
actions (ACT's chunking, Zhao et al. 2023) and runs as the other policies do (`ChunkActor`).

Its image features have no trainable parameter, so `jepa imitate` computes them once for every
demonstration frame and goal image (in each of the square's turns with `square_symmetry`), and a
training step is an MLP's step on cached vectors: in the time ACT takes for 3,000 steps of 64
windows, it takes 20,000 of 256. On PushT, whose pixel policies read where the T is but not how
it is turned, this is what reads the angle and has the samples to use it (BENCHMARKS.md). It
needs objects whose colour differs from their surroundings, and no random shift (the features
are cached unshifted).

    batch = {"frame_features": [B, h, F], "goal_features": [B, F] (raw moments, F = colours x 10),
             "proprio": [B, P], "actions": [B, k, A], "action_valid": bool [B, k]}
"""

from __future__ import annotations

import torch
from torch import nn

from agents.policy import ChunkActor, ChunkPolicy, PolicyConfig, masked_l1
from worldmodel.encoders import ColourMoments


RECIPE_TRAIN = {"steps": 20_000, "batch_size": 256, "lr": 1e-3, "min_lr_ratio": 0.0, "weight_decay": 1e-4}
"""Its training defaults, where `jepa imitate` leaves the transformer policies' (3,000 steps of 64):
an MLP step on cached features costs about a twentieth of ACT's (PushT, BENCHMARKS.md)."""
RECIPE_MODEL = {"width": 256, "colour_moments": 4}
"""Its hidden width and palette by default (PushT: 41% at width 256 against 30% at 128, a throwaway
MLP of session 22; table, walls, block and pusher are 4 colours)."""


class MomentPolicy(ChunkActor):
    """goal and frame moments [(g + h) F] + normalised proprio [P] -> MLP (depth hidden layers of
    width, GELU) -> actions [k, A]."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__(cfg)
        self.moments = ColourMoments(cfg.colour_moments, cfg.encoder.image_size)  # `jepa imitate` fits it
        inputs = (cfg.goal_image + cfg.history) * self.moments.size + cfg.proprio_dim
        layers, width = [], inputs
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.width), nn.GELU()]
            width = cfg.width
        self.mlp = nn.Sequential(*layers, nn.Linear(width, cfg.horizon * cfg.action_dim))

    def _chunk(self, frame_features: torch.Tensor, goal_features: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Raw moments [B, h, F] and [B, F], proprio [B, P] -> action chunks [B, k, A]."""
        images = torch.cat([goal_features[:, None], frame_features], 1) if self.cfg.goal_image else frame_features
        x = torch.cat([self.moments.standardise(images).flatten(1), self.normalise(proprio)], 1)
        return self.mlp(x).reshape(len(x), self.cfg.horizon, self.cfg.action_dim)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Training loss: L1 on the valid actions of the chunk."""
        chunk = self._chunk(batch["frame_features"], batch["goal_features"], batch["proprio"])
        loss = masked_l1(chunk, batch["actions"], batch["action_valid"])
        return loss, {"loss/action_l1": loss.detach()}

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict, observe: bool = True) -> torch.Tensor:
        """Actions [B, k, A] in [-1, 1] for batched observations (adds `obs` to the history unless told not to)."""
        if observe:
            self._observe(obs)
        frames = torch.stack(list(self._frames), 1)  # [B, h, H, W, 3]
        features = self.moments.features(frames.flatten(0, 1)).reshape(*frames.shape[:2], -1)  # [B, h, F]
        goal = self.moments.features(torch.as_tensor(obs["goal"], device=self.device))
        proprio = torch.as_tensor(obs["proprio"], dtype=torch.float32, device=self.device)
        return self._chunk(features, goal, proprio).clamp(-1.0, 1.0)


def build_policy(cfg: PolicyConfig) -> ChunkActor:
    """The network of `cfg.kind`."""
    return MomentPolicy(cfg) if cfg.kind == "moments" else ChunkPolicy(cfg)
