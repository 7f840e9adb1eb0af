"""Discriminative masked targets (DMT-JEPA, Mo & Yun 2024): the target of a masked token is not its
own target feature alone but an aggregate of the semantically similar tokens around it. Among the
tokens in a window of the same frame, the `k` whose target features are most similar to its own
(cosine; itself included) are averaged with softmax weights of that similarity. A small object
then gets a target shared by the tokens that see it, and the background's targets are averaged
with background only. DMT-JEPA aggregates with learned cross-attention heads; here the weights are
the similarities themselves (no parameters that the loss could steer toward an easy target).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def neighbour_targets(features: torch.Tensor, grid: int, k: int, radius: int, temperature: float) -> torch.Tensor:
    """Target features [B, T, N, D] (N = grid * grid, row-major) -> aggregated targets [B, T, N, D]:
    each token's softmax(cosine / temperature)-weighted mean over its k most similar tokens within
    `radius` tokens (a (2r+1)^2 window, cut at the grid's edges)."""
    b, t, n, d = features.shape
    window = (2 * radius + 1) ** 2
    maps = features.reshape(b * t, grid, grid, d).permute(0, 3, 1, 2)  # [BT, D, g, g]
    neighbours = F.unfold(maps, 2 * radius + 1, padding=radius).reshape(b * t, d, window, n)  # [BT, D, W, N]
    inside = F.unfold(maps.new_ones(1, 1, grid, grid), 2 * radius + 1, padding=radius).reshape(1, window, n) > 0
    unit = F.normalize(maps.flatten(2), dim=1)  # [BT, D, N]
    similarity = (F.normalize(neighbours, dim=1) * unit[:, :, None]).sum(1)  # [BT, W, N]
    similarity = similarity.masked_fill(~inside, float("-inf"))
    top, chosen = similarity.topk(min(k, window), dim=1)  # [BT, k, N]
    weights = torch.softmax(top / temperature, 1)  # padding (-inf) gets weight 0 where fewer than k lie inside
    picked = neighbours.gather(2, chosen[:, None].expand(-1, d, -1, -1))  # [BT, D, k, N]
    return (picked * weights[:, None]).sum(2).transpose(1, 2).reshape(b, t, n, d)
