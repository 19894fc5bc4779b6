"""iBOT loss on patch tokens: per-token cross-entropy, over masked tokens or over all of them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgepath.distill.losses.centering import TeacherCentering


class IBOTPatchLoss(nn.Module):
    """DINOv2's iBOT patch-token loss (``ibot_patch_loss.py``).

    Per token ``l = -sum_k t_k log softmax(s / T_s)_k``; averaged over the masked tokens of each
    image (iBOT) or over all tokens when no mask is given (H0-mini distils without masking),
    then over images.

    Args:
        dim: Number of patch prototypes.
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
        """Teacher patch logits (B, N, K) -> targets of the same shape."""
        b, n, k = teacher.shape
        return self.centering.targets(teacher.reshape(b * n, k), temp, mode=mode).reshape(b, n, k)

    def forward(
        self,
        student: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean patch cross-entropy.

        Args:
            student: (B, N, K) student patch logits.
            targets: (B, N, K) teacher targets.
            mask: (B, N) bool, True where a token counts (the masked ones in iBOT); None: all.
        """
        per_token = -torch.sum(targets * F.log_softmax(student.float() / self.student_temp, -1), -1)
        if mask is None:
            return per_token.mean()
        m = mask.float()
        per_image = (per_token * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)
        return per_image.mean()
