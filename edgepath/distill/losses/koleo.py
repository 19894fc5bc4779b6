"""KoLeo regulariser: spreads the batch on the sphere (Sablayrolles et al. 2019, used by DINOv2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    """``-mean_i log(min_{j != i} ||x_i - x_j|| + eps)`` on L2-normalised rows (DINOv2 ``koleo_loss.py``)."""

    def __init__(self, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """KoLeo loss of a (B, D) batch (B >= 2)."""
        if x.shape[0] < 2:
            return x.new_zeros(())
        z = F.normalize(x.float(), p=2, dim=-1, eps=self.eps)
        with torch.no_grad():
            dots = z @ z.t()
            dots.fill_diagonal_(-2.0)
            nn_idx = dots.argmax(dim=1)
        dist = F.pairwise_distance(z, z[nn_idx], p=2, eps=self.eps)
        return -torch.log(dist + self.eps).mean()
