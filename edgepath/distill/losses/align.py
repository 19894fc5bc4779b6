"""Feature alignment: w_cos · (1 − cos) + w_sl1 · smooth-L1 between student and teacher features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureAlignLoss(nn.Module):
    """Weighted sum of ``1 - cos`` and smooth-L1, averaged over rows (and tokens).

    GPFM's expert distillation uses ``1 - cos`` on CLS and ``0.9 (1 - cos) + 0.1 smooth-L1`` on
    patch tokens; XMAG uses ``-cos`` (the same gradient as ``1 - cos``).

    Args:
        cos_weight: Weight of ``1 - cos``.
        smooth_l1_weight: Weight of smooth-L1 (mean over elements).
        beta: Smooth-L1 transition point.
    """

    def __init__(
        self, *, cos_weight: float = 1.0, smooth_l1_weight: float = 0.0, beta: float = 1.0
    ) -> None:
        super().__init__()
        self.cos_weight = cos_weight
        self.smooth_l1_weight = smooth_l1_weight
        self.beta = beta

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Loss between (..., D) student and teacher features of the same shape."""
        s, t = student.float(), teacher.float()
        loss = s.new_zeros(())
        if self.cos_weight:
            loss = loss + self.cos_weight * (1 - F.cosine_similarity(s, t, dim=-1)).mean()
        if self.smooth_l1_weight:
            loss = loss + self.smooth_l1_weight * F.smooth_l1_loss(s, t, beta=self.beta)
        return loss
