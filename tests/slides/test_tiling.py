"""Tiling the real sample slide at 0.5 mpp / 224 px."""

from __future__ import annotations

import numpy as np
import pytest

from edgepath.errors import SlideReadError
from edgepath.slides import open_slide, read_coords, tile_slide, write_coords
from edgepath.slides.tiling import grid_coords


def test_grid_is_exact_and_inside():
    c = grid_coords(1000, 500, 224.449)
    assert c.shape == (8, 2)  # 4 x 2 whole tiles
    assert c[1, 0] == 224 and c[2, 0] == 448 and c[3, 0] == 673  # floor(i * 224.449)
    assert (c + 224.449 <= [1000, 500]).all()


def test_sample_slide_tiles_on_tissue(sample_slide):
    grid = tile_slide(sample_slide, mpp=0.5, tile_px=224)
    assert grid.level0_tile_size == pytest.approx(224 * 0.5 / 0.499)
    assert grid.mpp_source == "property" and grid.base_mpp == 0.499
    every = tile_slide(sample_slide, mpp=0.5, tile_px=224, min_tissue=0)
    assert len(every) == 9 * 13
    # about a third of the sample is tissue: the grid keeps a matching share of tiles
    assert 0.2 < len(grid) / len(every) < 0.5
    assert grid.tissue.min() >= 0.5
    # kept tiles are stained, dropped ones are mostly glass
    s = open_slide(sample_slide)
    kept = {tuple(c) for c in grid.coords.tolist()}
    sat_kept, sat_dropped = [], []
    for x, y in every.coords.tolist():
        t = s.read_tile(x, y, mpp=2.0, tile_px=56).astype(float)
        sat = float((t.max(-1) - t.min(-1)).mean())
        (sat_kept if (x, y) in kept else sat_dropped).append(sat)
    assert min(sat_kept) > np.median(sat_dropped)


def test_coords_roundtrip(tmp_path, sample_slide):
    grid = tile_slide(sample_slide, mpp=1.0, tile_px=112)
    p = write_coords(tmp_path / "s.h5", grid)
    back = read_coords(p)
    assert np.array_equal(back.coords, grid.coords) and back.coords.dtype == np.int64
    assert back.mpp == 1.0 and back.tile_px == 112
    assert back.level0_tile_size == pytest.approx(grid.level0_tile_size)
    assert back.mpp_source == "property"


def test_zero_tissue(tmp_path):
    import tifffile

    p = tmp_path / "glass.tif"
    tifffile.imwrite(p, np.full((600, 600, 3), 242, np.uint8))
    with pytest.raises(SlideReadError, match=r"glass\.tif: no tissue found"):
        tile_slide(open_slide(p, mpp=0.5), mpp=0.5)


def test_too_small_for_one_tile(sample_slide):
    with pytest.raises(SlideReadError, match="smaller than one"):
        tile_slide(sample_slide, mpp=8.0, tile_px=1024)
