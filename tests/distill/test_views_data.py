"""Views are a function of (seed, item, view); slide items keep training and held-out apart."""

from __future__ import annotations

from pathlib import Path

import torch

from edgepath.distill.data import folder_items, slide_items
from edgepath.distill.views import generator, global_crops, to_float


def test_views_are_deterministic_and_vary() -> None:
    x = torch.rand(3, 256, 256)
    kw = dict(n=2, px=224, scale=(0.3, 1.0), flip=True, jitter=0.3)
    a = global_crops(x, g=generator(0, "view", 5, 1), **kw)
    b = global_crops(x, g=generator(0, "view", 5, 1), **kw)
    c = global_crops(x, g=generator(0, "view", 5, 2), **kw)
    assert a.shape == (2, 3, 224, 224)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_folder_split_is_stable(tile_dir: Path) -> None:
    t1, h1 = folder_items(tile_dir, holdout=0.4)
    t2, h2 = folder_items(tile_dir, holdout=0.4)
    assert t1 == t2 and h1 == h2
    assert h1 and t1 and not {i.path for i in t1} & {i.path for i in h1}


def test_slide_items_hold_out_a_band(sample_slide: Path) -> None:
    train, held = slide_items(
        sample_slide, mpp=0.5, tile_px=224, stride=1.0, eval_stride=0.5, holdout=0.3, min_tissue=0.5
    )
    assert len(train) > 10 and len(held) > 10
    side = 224 * 0.5 / 0.499
    cut = min(i.y0 for i in held)
    # no training tile reaches into the held-out band
    assert max(i.y0 for i in train) + side <= cut + 1e-6


def test_to_float_drops_alpha() -> None:
    rgba = torch.zeros(8, 8, 4, dtype=torch.uint8).numpy()
    assert to_float(rgba).shape == (3, 8, 8)
