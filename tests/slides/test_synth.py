"""Synthetic 4-level slides: OpenSlide reads them, levels agree with level 0, pairs with mosaics."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgepath.io import sha256_file
from edgepath.slides import open_slide, read_pair, synthesize_slide, tile_slide, xmag_pairs


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthesize_slide(tmp_path_factory.mktemp("synth") / "syn.tiff", tiles=80, seed=3)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def _down(high: np.ndarray) -> np.ndarray:
    mosaic = high.reshape(4, 4, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(256, 256, 3)
    return np.asarray(Image.fromarray(mosaic).resize((64, 64), Image.Resampling.BOX))


def test_pyramid_metadata(synth):
    s = open_slide(synth)
    assert s.vendor == "generic-tiff" and s.level_count == 4
    assert s.level_downsamples == (1.0, 2.0, 4.0, 8.0)
    assert s.mpp == pytest.approx(0.499) and s.mpp_source == "property"
    assert float(s.properties["tiff.XResolution"]) == pytest.approx(1e4 / 0.499)
    assert s.properties["tiff.ResolutionUnit"] == "centimeter"
    assert [s.best_level_for_mpp(m) for m in (0.5, 1.0, 2.0, 4.0)] == [0, 1, 2, 3]


def test_about_n_tissue_tiles(synth):
    n = len(tile_slide(synth, mpp=0.5, tile_px=224))
    assert 0.75 * 80 <= n <= 1.25 * 80


def test_lower_levels_match_level0(synth):
    s = open_slide(synth)
    rng = np.random.default_rng(0)
    grid = tile_slide(s, mpp=2.0, tile_px=64)
    picks = grid.coords[rng.choice(len(grid), size=min(8, len(grid)), replace=False)]
    for mpp, level in ((1.0, 1), (2.0, 2), (4.0, 3)):
        fp = 64 * mpp / s.mpp
        for x, y in picks + rng.uniform(0, 40, size=picks.shape):
            via_level = s.read_tile(x, y, mpp=mpp, tile_px=64)
            assert s.best_level_for_mpp(mpp) == level
            from_l0 = np.asarray(s.read_footprint(x, y, fp, out_px=64, level=0))
            assert _corr(via_level, from_l0) > 0.9, (mpp, x, y)


def test_low_tile_matches_mosaic_of_high_tiles_anywhere(synth):
    s = open_slide(synth)
    grid = xmag_pairs(s, low_mpp=2.0, high_mpp=0.5, tile_px=64)
    assert len(grid) >= 3
    rng = np.random.default_rng(1)
    # grid corners, plus arbitrary (sub-pixel) positions inside the tissue
    spots = [tuple(c) for c in grid.coords[:: max(1, len(grid) // 6)]]
    spots += [tuple(c + rng.uniform(-30, 30, 2)) for c in grid.coords[:4]]
    step = grid.extra["high_level0_tile_size"]
    for x, y in spots:
        low, high = read_pair(s, (x, y), low_mpp=2.0, high_mpp=0.5, tile_px=64)
        matched = _corr(low, _down(high))
        assert matched > 0.9, (x, y)
        # control: the mosaic one high tile to the right correlates clearly less
        _, shifted = read_pair(s, (x + step, y), low_mpp=2.0, high_mpp=0.5, tile_px=64)
        assert _corr(low, _down(shifted)) < matched - 0.2, (x, y)


def test_same_seed_same_file(tmp_path):
    a = synthesize_slide(tmp_path / "a.tiff", tiles=8, seed=5, levels=2)
    b = synthesize_slide(tmp_path / "b.tiff", tiles=8, seed=5, levels=2)
    c = synthesize_slide(tmp_path / "c.tiff", tiles=8, seed=6, levels=2)
    assert sha256_file(a) == sha256_file(b) != sha256_file(c)


def test_read_tiles_exact_level(synth):
    s = open_slide(synth)
    mpp = s.mpp * 2  # exactly level 1: no resize, crops of one strip
    grid = tile_slide(s, mpp=mpp, tile_px=64)
    one = np.stack([s.read_tile(x, y, mpp=mpp, tile_px=64) for x, y in grid.coords[:20]])
    assert np.array_equal(s.read_tiles(grid.coords[:20], mpp=mpp, tile_px=64), one)
