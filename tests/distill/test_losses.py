"""Losses against values computed by hand (DINO, iBOT, KoLeo, feature alignment, centering)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgepath.distill.losses import DINOLoss, FeatureAlignLoss, IBOTPatchLoss, KoLeoLoss
from edgepath.distill.losses.centering import TeacherCentering


def test_dino_loss_hand_computed() -> None:
    loss = DINOLoss(2, student_temp=1.0)
    # student logits [0, ln 3] -> softmax [1/4, 3/4]; target [1/2, 1/2]
    s = torch.tensor([[0.0, math.log(3.0)]])
    t = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert loss([s], [t]).item() == pytest.approx(expected, rel=1e-6)
    # two student views x two teacher views: four identical terms
    assert loss([s, s], [t, t]).item() == pytest.approx(4 * expected, rel=1e-6)


def test_dino_student_temperature_sharpens() -> None:
    s = torch.tensor([[0.0, math.log(3.0)]])
    t = torch.tensor([[0.0, 1.0]])
    # T = 0.5 -> softmax of [0, 2 ln 3] = [1/10, 9/10]
    assert DINOLoss(2, student_temp=0.5)([s], [t]).item() == pytest.approx(-math.log(0.9), 1e-6)


def test_softmax_centering_and_center_update() -> None:
    c = TeacherCentering(2, center_momentum=0.9)
    c.center.copy_(torch.tensor([[1.0, 0.0]]))
    t = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    out = c.targets(t, 1.0, mode="softmax_center")
    # (t - center) = [[0,0],[2,2]] -> uniform rows
    assert torch.allclose(out, torch.full((2, 2), 0.5))
    # center <- 0.9 [1, 0] + 0.1 mean(t) = 0.9 [1,0] + 0.1 [2, 1]
    assert torch.allclose(c.center, torch.tensor([[1.1, 0.1]]))


def test_sinkhorn_knopp_is_doubly_normalised() -> None:
    c = TeacherCentering(4)
    g = torch.Generator().manual_seed(0)
    t = torch.randn(8, 4, generator=g) + torch.tensor([3.0, 0.0, 0.0, 0.0])  # collapsed on k=0
    q = c.targets(t, 0.5, mode="sinkhorn_knopp")
    assert torch.allclose(q.sum(1), torch.ones(8), atol=1e-5)  # rows: distributions
    # columns: the batch is spread more evenly than by a softmax, and evenly at convergence
    soft = F.softmax(t / 0.5, -1).sum(0)
    assert q.sum(0).std() < soft.std()
    qn = c.sinkhorn_knopp(t, 0.5, n_iterations=200)
    assert torch.allclose(qn.sum(0), torch.full((4,), 2.0), atol=1e-3)  # B / K per prototype
    # hand check of one iteration on a 2x2 case: exp([[0, ln3], [0, 0]]) -> known plan
    q1 = c.sinkhorn_knopp(torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]), 1.0, n_iterations=1)
    # Q = [[1,1],[3,1]] / 6 (K x B); rows / rowsum / K -> [[1/4,1/4],[3/8,1/8]]
    # cols / colsum / B -> col0 [0.4, 0.6]/2, col1 [2/3, 1/3]/2; * B -> transpose
    expected = torch.tensor([[0.4, 0.6], [2 / 3, 1 / 3]])
    assert torch.allclose(q1, expected, atol=1e-6)


def test_ibot_masked_and_unmasked() -> None:
    loss = IBOTPatchLoss(2, student_temp=1.0)
    s = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)]]])  # token 0: [1/2,1/2]; token 1: [1/4,3/4]
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    l0, l1 = -math.log(0.5), -math.log(0.75)
    assert loss(s, t).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    mask = torch.tensor([[False, True]])
    assert loss(s, t, mask).item() == pytest.approx(l1, rel=1e-6)
    # an image with no masked token contributes 0, not NaN
    s2, t2 = s.repeat(2, 1, 1), t.repeat(2, 1, 1)
    m2 = torch.tensor([[False, True], [False, False]])
    assert loss(s2, t2, m2).item() == pytest.approx(l1 / 2, rel=1e-6)


def test_koleo_hand_computed() -> None:
    # three unit vectors: e1, e2 and (e1+e2)/sqrt2; nearest-neighbour distances known in closed form
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    d = math.sqrt(2 - math.sqrt(2))  # |e1 - (e1+e2)/sqrt2|
    expected = -(math.log(d) * 3) / 3
    assert KoLeoLoss()(x).item() == pytest.approx(expected, rel=1e-5)
    # scaling rows does not change it (it works on the sphere)
    assert KoLeoLoss()(x * 5).item() == pytest.approx(expected, rel=1e-5)


def test_koleo_gradient_pushes_apart() -> None:
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [-1.0, 0.0]], requires_grad=True)
    KoLeoLoss()(x).backward()
    assert x.grad is not None and x.grad[1, 1] < 0  # moving x1 away from x0 lowers the loss


def test_feature_align_cos_smooth_l1_and_sum() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    one_minus_cos = ((1 - 1 / math.sqrt(2)) + 0.0) / 2
    # smooth-L1 (beta 1) elementwise: |0|->0, |-1|->0.5, |0|->0, |1|->0.5; mean over 4 = 0.25
    assert FeatureAlignLoss()(s, t).item() == pytest.approx(one_minus_cos, rel=1e-6)
    sl1 = FeatureAlignLoss(cos_weight=0.0, smooth_l1_weight=1.0)(s, t).item()
    assert sl1 == pytest.approx(0.25, rel=1e-6)
    both = FeatureAlignLoss(cos_weight=0.9, smooth_l1_weight=0.1)(s, t).item()
    assert both == pytest.approx(0.9 * one_minus_cos + 0.1 * 0.25, rel=1e-6)
    # token tensors (B, N, D) average over tokens too
    assert FeatureAlignLoss()(s[None], t[None]).item() == pytest.approx(one_minus_cos, rel=1e-6)


def test_dino_loss_matches_dinov2_formula_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 7, generator=g), F.softmax(torch.randn(5, 7, generator=g), -1)
    ref = -(t * F.log_softmax(s / 0.1, -1)).sum(-1).mean()
    assert torch.allclose(DINOLoss(7)([s], [t]), ref)
