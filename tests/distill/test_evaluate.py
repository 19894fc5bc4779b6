"""Held-out fidelity: which tiles it measures, centring statistics, heads back in teacher space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgepath.distill.data import spread
from edgepath.distill.evaluate import _knn_centered, heldout_subset
from edgepath.distill.recipes.xmag import to_teacher_space


def test_heldout_subset_spreads_over_the_whole_list() -> None:
    items = [("a", i) for i in range(30)] + [("b", i) for i in range(70)]
    sub = heldout_subset(items, 10)
    assert len(sub) == 10 and sub[0] == ("a", 0) and sub[-1] == ("b", 69)
    assert sum(s[0] == "b" for s in sub) >= 6  # the second slide is measured too
    assert heldout_subset(items, 200) == items and heldout_subset(items, 0) == items


def test_spread_covers_the_range_without_repeats() -> None:
    idx = spread(1000, 64)
    assert len(idx) == 64 == len(set(idx)) and idx[0] == 0 and idx[-1] == 999
    assert spread(5, 64) == [0, 1, 2, 3, 4]


def test_centred_knn_ignores_a_shared_offset() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=(60, 16))
    shifted = t + 50.0  # a dominant shared direction, as raw embeddings have
    assert _knn_centered(shifted, t) == 1.0
    assert _knn_centered(rng.normal(size=(60, 16)), t) < 0.4
    assert _knn_centered(t[:10], t[:10]) is None


def test_cosine_head_output_gets_the_target_scale_back() -> None:
    mean = torch.full((8,), 5.0)
    scale = torch.tensor(0.5)
    head = torch.randn(4, 8)
    out = to_teacher_space(head, mean, scale)
    # the length of the head output no longer matters: only its direction
    assert torch.allclose(out, to_teacher_space(100 * head, mean, scale), atol=1e-5)
    assert torch.allclose((out - mean).norm(dim=-1), torch.full((4,), 0.5), atol=1e-5)
    assert torch.allclose(F.normalize(out - mean, dim=-1), F.normalize(head, dim=-1), atol=1e-5)
    # raw targets (scale 0): the head output is the prediction itself
    assert torch.equal(to_teacher_space(head, torch.zeros(8), torch.zeros(())), head)


def test_teacher_means_spread_and_rms(sample_slide) -> None:
    from edgepath.distill.data import build_source
    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.recipes.xmag import XmagRecipe
    from edgepath.distill.teachers import load_teachers

    from .conftest import TINY, XMAG_SAMPLE

    card = load_recipe(
        "xmag",
        [
            *TINY,
            *XMAG_SAMPLE,
            "loss.center_targets=true",
        ],
    )
    teachers = load_teachers(card.teachers)
    src = build_source("xmag", slides=sample_slide, tiles=None, data=card.data, mpp=0.5)
    rec = XmagRecipe(card, student_dim=64, teachers=teachers)
    rec.calibrate(teachers, src)
    x = torch.stack([rec.views(src, i, src.train[i], 0)["teacher"] for i in range(len(src.train))])
    g = rec.teacher_features(teachers, x)["emb"].mean(1)
    assert len(src.train) <= 64  # every item is in the estimate, so it must match exactly
    rms = (g - rec.t_mean).pow(2).sum(-1).mean().sqrt()
    assert float(rec.t_scale) > 0
    assert torch.allclose(rec.t_scale, rms, rtol=0.05)  # fp16-rounded features: not exact


def test_xmag_direct_term_basis_and_loss(sample_slide) -> None:
    """The direct term's basis is the targets' principal directions (orthonormal rows, the first
    one the direction of largest variance), and the term is -1 for an embedding that is (a
    positive multiple of) the projected target plus the learned bias."""
    from types import SimpleNamespace

    from edgepath.distill.data import build_source
    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.recipes.xmag import XmagRecipe
    from edgepath.distill.teachers import load_teachers

    from .conftest import TINY, XMAG_SAMPLE

    card = load_recipe("xmag", [*TINY, *XMAG_SAMPLE, "loss.direct_weight=1.0"])
    teachers = load_teachers(card.teachers)
    src = build_source("xmag", slides=sample_slide, tiles=None, data=card.data, mpp=0.5)
    rec = XmagRecipe(card, student_dim=8, teachers=teachers)
    rec.calibrate(teachers, src)
    rows = rec.teacher_rows(teachers, src, n_items=card.loss.direct_items)["emb"]
    k = min(8, len(rows))
    p = rec.p_basis[:k]
    assert torch.allclose(p @ p.t(), torch.eye(k), atol=1e-5)
    assert torch.allclose(rec.p_mean, rows.mean(0), atol=1e-5)
    var = ((rows - rec.p_mean) @ p.t()).var(0)
    assert torch.all(var[:-1] >= var[1:] - 1e-6)  # ordered by explained variance
    u = torch.randn(rows.shape[1])  # no random direction explains more than the first one
    u = u / u.norm()
    assert var[0] >= ((rows - rec.p_mean) @ u).var() - 1e-6

    feats = {"emb": rows[:4, None].expand(4, 16, -1)}  # cells equal to the target
    target = (rows[:4] - rec.p_mean) @ rec.p_basis.t()
    with torch.no_grad():
        rec.direct_bias.copy_(torch.randn(8))
    emb = 3.0 * target + rec.direct_bias

    class Stub(torch.nn.Module):
        spec = SimpleNamespace(embedding=SimpleNamespace(definition="cls"))

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward_tokens(self, x):
            return SimpleNamespace(cls=emb, patches=torch.zeros(4, 256, 8))

        def pool(self, tok, definition):
            return tok.cls

    batch = {"student": torch.zeros(4, 1, 3, 224, 224)}
    _, parts = rec.loss(Stub(), batch, feats, step=0)
    assert parts["direct"] == pytest.approx(-1.0, abs=1e-5)
