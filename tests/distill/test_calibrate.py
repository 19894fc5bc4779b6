"""Metric calibration: fitted per-channel factors undo a channel mis-scaling, and folding them
into the student changes its output tokens by exactly those factors and its heads not at all."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgepath.distill.calibrate import final_norm, fit_scales, fold_scales
from edgepath.errors import ConfigError
from edgepath.metrics import knn_agreement_centered


def test_fit_scales_undoes_a_channel_mis_scaling() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(256, 8, generator=g) * torch.tensor([3.0, 2.0, 1.5, 1, 1, 0.8, 0.5, 0.3])
    c = torch.exp(torch.randn(8, generator=g))  # the student weighs the channels differently
    s = t * c
    a, before, after = fit_scales(s, t, temperature=0.1, steps=800)
    assert after < 0.25 * before
    assert float(torch.log(a).mean()) == pytest.approx(0.0, abs=1e-5)  # geometric mean 1
    ratio = a * c  # ideally constant
    assert float(ratio.std() / ratio.mean()) < 0.15
    knn = knn_agreement_centered((s * a).numpy(), t.numpy())
    assert knn > knn_agreement_centered(s.numpy(), t.numpy()) + 0.1 and knn > 0.8


def test_fold_scales_scales_tokens_and_keeps_heads() -> None:
    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.recipes.xmag import XmagRecipe, cell_pool
    from edgepath.distill.teachers import load_teachers
    from edgepath.distill.trainer import _Step, _student

    from .conftest import TINY

    card = load_recipe("xmag", [*TINY])
    teachers = load_teachers(card.teachers)
    student, _, _ = _student(card, teachers, "cpu")
    rec = XmagRecipe(card, student_dim=student.token_dim, teachers=teachers)
    step = _Step(student, rec).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tok = student.forward_tokens(x)
        g0, l0 = rec.head_g(tok.cls), rec.head_l(cell_pool(tok.patches, rec.k))
    a = torch.exp(torch.randn(student.token_dim))
    fold_scales(step, a)
    with torch.no_grad():
        tok1 = student.forward_tokens(x)
        g1, l1 = rec.head_g(tok1.cls), rec.head_l(cell_pool(tok1.patches, rec.k))
    assert torch.allclose(tok1.cls, tok.cls * a, atol=1e-5)
    assert torch.allclose(tok1.patches, tok.patches * a, atol=1e-5)
    assert torch.allclose(g1, g0, atol=1e-4) and torch.allclose(l1, l0, atol=1e-4)


def test_final_norm_refuses_a_backbone_without_an_affine_layernorm() -> None:
    class Bare(nn.Module):
        norm = nn.Identity()

    with pytest.raises(ConfigError, match="metric_calibration"):
        final_norm(Bare())
    ok = nn.Module()
    ok.norm = nn.LayerNorm(4)
    assert final_norm(ok) is ok.norm
