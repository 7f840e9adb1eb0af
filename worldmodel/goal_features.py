"""Which features of a goal observation say where an episode must end: those that, over episodes
that reach their goal, correlate with the frame where each first reaches it. Features the task's
success ignores (PushT's pusher, the hand in a goal image) end anywhere and correlate near zero;
the ones success pins (the block's pose) correlate near one. The cut between the two groups lies
in the widest gap of the sorted correlations, so it has no parameter that could fit one dataset.
Used by the moments policy (which goal moments it reads) and by the world model's planning cost
(which state dimensions it weighs)."""

from __future__ import annotations

import torch


def goal_correlation(goals: torch.Tensor, reached: torch.Tensor) -> torch.Tensor:
    """Per-feature correlation [F] between goals and reached frames [T, N, F] (N episodes in each of
    T views, e.g. turns of a symmetric square; [N, F] is one view). Each view is centred on its own
    mean, so a view's shift of both is not taken for agreement; 0 where either is constant."""
    if goals.dim() == 2:
        goals, reached = goals[None], reached[None]
    centred = lambda x: (x.double() - x.double().mean(1, keepdim=True)).flatten(0, 1)  # noqa: E731  [T N, F]
    goals, reached = centred(goals), centred(reached)
    return (goals * reached).sum(0) / (goals.norm(dim=0) * reached.norm(dim=0)).clamp_min(1e-12)


def widest_gap_cut(values: torch.Tensor) -> float:
    """The threshold halfway across the widest gap between consecutive sorted `values` [F]: the
    split into two groups that no small change of any value moves while that gap stays the widest."""
    ordered = values.double().sort().values
    widest = int((ordered[1:] - ordered[:-1]).argmax())
    return float((ordered[widest] + ordered[widest + 1]) / 2)


def goal_mask(goals: torch.Tensor, reached: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """1.0 for the features [F] whose `goal_correlation` exceeds `threshold` (None: the widest-gap
    cut of the correlations, negative ones counted as 0: they never say where an episode ends)."""
    correlation = goal_correlation(goals, reached)
    cut = widest_gap_cut(correlation.clamp_min(0)) if threshold is None else threshold
    return (correlation > cut).float()
