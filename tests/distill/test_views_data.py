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


def test_dihedral_gives_the_eight_symmetries_of_the_square() -> None:
    from edgepath.distill.views import dihedral

    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    outs = [dihedral(x, c) for c in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    assert torch.equal(dihedral(x, 1), x.flip(-1))
    assert torch.equal(dihedral(x, 4), x.transpose(-1, -2))
    # flip W then transpose = a quarter turn counter-clockwise
    assert torch.equal(dihedral(x, 5), torch.rot90(x, 1, dims=(-2, -1)))


def test_dihedral_cells_moves_tiles_with_the_region() -> None:
    from edgepath.distill.views import dihedral, dihedral_cells

    cells = torch.rand(4, 3, 5, 5)  # a 2 x 2 grid, row-major: [[0, 1], [2, 3]]
    for code in range(8):
        out = dihedral_cells(cells, code)
        assert out.shape == cells.shape
        # stitching the result gives the transformed stitched region
        big = cells.reshape(2, 2, 3, 5, 5).permute(2, 0, 3, 1, 4).reshape(3, 10, 10)
        got = out.reshape(2, 2, 3, 5, 5).permute(2, 0, 3, 1, 4).reshape(3, 10, 10)
        assert torch.equal(got, dihedral(big, code))
    # flip W: the top-left cell is the flipped top-right tile
    assert torch.equal(dihedral_cells(cells, 1)[0], cells[1].flip(-1))
    # transpose: the top-right cell is the transposed bottom-left tile
    assert torch.equal(dihedral_cells(cells, 4)[1], cells[2].transpose(-1, -2))


def test_xmag_views_turn_both_magnifications_together() -> None:
    """With views.flip the student tile and the teacher's grid get the same symmetry."""
    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.recipes.xmag import XmagRecipe
    from edgepath.distill.teachers import load_teachers
    from edgepath.distill.views import dihedral, dihedral_cells

    from .conftest import TINY

    low = torch.rand(3, 224, 224)
    high = torch.rand(16, 3, 224, 224)

    class Regions:  # a stand-in Source: one region
        def low(self, item):
            return low.clone()

        def high(self, item):
            return high.clone()

    def views(flip: bool):
        card = load_recipe(
            "xmag", [*TINY, "views.color_jitter=0", f"views.flip={str(flip).lower()}"]
        )
        rec = XmagRecipe(card, student_dim=64, teachers=load_teachers(card.teachers))
        return [rec.views(Regions(), i, None, v) for i in range(4) for v in range(2)]

    codes = set()
    for out in views(True):
        s, t = out["student"][0], out["teacher"]
        code = next(c for c in range(8) if torch.equal(s, dihedral(low, c)))
        assert torch.equal(t, dihedral_cells(high, code))
        codes.add(code)
    assert len(codes) > 1  # the symmetry varies over items and views
    for out in views(False):
        assert torch.equal(out["student"][0], low) and torch.equal(out["teacher"], high)
