"""Held-out fidelity: which tiles it measures, centring statistics, heads back in teacher space."""

from __future__ import annotations

import numpy as np
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
    src = build_source("regions", slides=sample_slide, tiles=None, data=card.data, mpp=0.5)
    rec = XmagRecipe(card, student_dim=64, teachers=teachers)
    rec.calibrate(teachers, src)
    x = torch.stack([rec.views(src, i, src.train[i], 0)["teacher"] for i in range(len(src.train))])
    g = rec.teacher_features(teachers, x)["emb"].mean(1)
    assert len(src.train) <= 64  # every item is in the estimate, so it must match exactly
    rms = (g - rec.t_mean).pow(2).sum(-1).mean().sqrt()
    assert float(rec.t_scale) > 0
    assert torch.allclose(rec.t_scale, rms, rtol=0.05)  # fp16-rounded features: not exact
