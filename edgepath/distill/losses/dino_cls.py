"""DINO loss on the CLS token: cross-entropy of student softmax against centred teacher targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgepath.distill.losses.centering import TeacherCentering


class DINOLoss(nn.Module):
    """DINOv2's CLS-token loss (``dino_clstoken_loss.py``).

    ``loss = -mean_b sum_k t_bk log softmax(s_b / T_s)_k``, summed over the (student view, teacher
    view) pairs given to ``forward``; the teacher targets come from ``teacher_targets``
    (softmax-centering or Sinkhorn-Knopp at the teacher temperature).

    Args:
        dim: Number of prototypes.
        student_temp: Student temperature (DINOv2: 0.1).
        center_momentum: Teacher center EMA momentum (DINOv2: 0.9).
    """

    def __init__(
        self, dim: int, *, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.centering = TeacherCentering(dim, center_momentum=center_momentum)

    def teacher_targets(self, teacher: torch.Tensor, temp: float, *, mode: str) -> torch.Tensor:
        """Teacher logits (B, K) -> targets (B, K) that sum to 1 per row."""
        return self.centering.targets(teacher, temp, mode=mode)

    def forward(self, students: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """Sum over all (student, target) pairs of the mean cross-entropy.

        Args:
            students: Student logits, one (B, K) tensor per view.
            targets: Teacher targets, one (B, K) tensor per view.
        """
        total = students[0].new_zeros(())
        for s in students:
            lsm = F.log_softmax(s.float() / self.student_temp, dim=-1)
            for t in targets:
                total = total - torch.sum(t * lsm, dim=-1).mean()
        return total
