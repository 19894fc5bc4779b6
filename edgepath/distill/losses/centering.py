"""Teacher-side centering shared by the DINO and iBOT losses: softmax-centering or Sinkhorn-Knopp."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgepath.distill.losses._dist import all_reduce_sum, world_size


class TeacherCentering(nn.Module):
    """Turns teacher logits into targets, as in DINOv2 (``dino_clstoken_loss.py``).

    ``softmax_center``: softmax((t - c) / T) with c an EMA of the batch mean of the teacher logits
    (kept in a buffer so that it is checkpointed). ``sinkhorn_knopp``: 3 iterations of
    Sinkhorn-Knopp on exp(t / T), which spreads the batch evenly over the prototypes (the DINOv2
    default, SwAV's algorithm); it is all-reduced over processes so every rank sees the same plan.

    Args:
        dim: Number of prototypes (the head's output dimension).
        center_momentum: EMA momentum of the center.
    """

    def __init__(self, dim: int, *, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def softmax_center(self, teacher: torch.Tensor, temp: float) -> torch.Tensor:
        """softmax((teacher - center) / temp) over the last dimension."""
        return F.softmax((teacher - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean over the (global) batch of ``teacher`` rows."""
        flat = teacher.reshape(-1, teacher.shape[-1]).float()
        total = all_reduce_sum(flat.sum(dim=0, keepdim=True))
        count = torch.tensor([float(len(flat))])
        all_reduce_sum(count)
        batch_center = total / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))

    @torch.no_grad()
    def sinkhorn_knopp(
        self, teacher: torch.Tensor, temp: float, *, n_iterations: int = 3
    ) -> torch.Tensor:
        """Sinkhorn-Knopp targets (rows sum to 1) for (B, K) teacher logits."""
        teacher = teacher.float()
        q = torch.exp(teacher / temp).t()  # K x B
        b = q.shape[1] * world_size()
        k = q.shape[0]
        q /= all_reduce_sum(q.sum().reshape(1))
        for _ in range(n_iterations):
            q /= all_reduce_sum(q.sum(dim=1, keepdim=True))
            q /= k
            q /= q.sum(dim=0, keepdim=True)
            q /= b
        q *= b
        return q.t()

    def targets(self, teacher: torch.Tensor, temp: float, *, mode: str) -> torch.Tensor:
        """Targets by ``mode`` (``softmax_center`` or ``sinkhorn_knopp``); updates the center."""
        if mode == "sinkhorn_knopp":
            return self.sinkhorn_knopp(teacher, temp)
        out = self.softmax_center(teacher, temp)
        self.update_center(teacher)
        return out
