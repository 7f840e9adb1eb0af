"""Anti-collapse regularisers on a batch of embeddings [N, D], correct under DDP.

- SIGReg (LeJEPA, Balestriero & LeCun 2025): project on random unit directions and apply the
  Epps-Pulley normality test to each projection, pushing embeddings toward an isotropic Gaussian.
- VICReg (Bardes, Ponce & LeCun 2022): hinge on each dimension's std plus the squared
  off-diagonal covariance.

Both need statistics over the whole global batch: under DDP the embeddings are gathered from
every rank with an autograd-aware all-gather, so N ranks with B/N samples each compute exactly
what one process with B samples would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def gather_batch(z: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of z, in rank order, with gradients flowing back to each rank's own rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    return torch.cat(dist_fn.all_gather(z), 0)


def vicreg(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance hinge, covariance penalty) of embeddings [N, D] over the global batch."""
    z = gather_batch(z.float())
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + eps)
    variance = torch.relu(1.0 - std).mean()
    cov = (z.T @ z) / (z.shape[0] - 1)
    off_diagonal = cov - torch.diag(torch.diag(cov))
    return variance, off_diagonal.pow(2).sum() / z.shape[1]


def sigreg(z: torch.Tensor, generator: torch.Generator, directions: int = 256, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """Epps-Pulley statistic of random 1-D projections of embeddings [N, D], averaged over directions.

    For each unit direction a, u = z a; the statistic integrates the squared gap between the
    empirical characteristic function of u and the standard normal's, exp(-t^2 / 2), weighted by
    exp(-t^2 / 2), over t in [-t_max, t_max] (even integrand: trapezoid on [0, t_max]), times N.
    """
    z = gather_batch(z.float())
    a = torch.randn(z.shape[1], directions, generator=generator).to(z)
    u = z @ (a / a.norm(dim=0, keepdim=True))  # [N, M]
    t = torch.linspace(0, t_max, knots, device=z.device)
    tu = u.unsqueeze(-1) * t  # [N, M, K]
    gap_re = torch.cos(tu).mean(0) - torch.exp(-0.5 * t**2)  # [M, K]
    gap_im = torch.sin(tu).mean(0)
    integrand = (gap_re**2 + gap_im**2) * torch.exp(-0.5 * t**2)
    weights = torch.full((knots,), t_max / (knots - 1), device=z.device)
    weights[[0, -1]] /= 2
    return (integrand @ weights * 2).mean() * z.shape[0]
