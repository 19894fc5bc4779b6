"""Cross-magnification pairs and torch datasets on the real sample slide."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from edgepath.data import sample_tiles
from edgepath.errors import ConfigError
from edgepath.slides import (
    PairDataset,
    TileDataset,
    TileFolderDataset,
    read_pair,
    tile_slide,
    xmag_pairs,
)
from edgepath.slides.datasets import ShardedTiles, to_tensor_hwc
from edgepath.slides.xmag import xmag_factor


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def _mosaic(high: np.ndarray, k: int) -> np.ndarray:
    px = high.shape[1]
    return high.reshape(k, k, px, px, 3).transpose(0, 2, 1, 3, 4).reshape(k * px, k * px, 3)


def test_xmag_factor():
    assert xmag_factor(2.0, 0.5) == 4 and xmag_factor(1.0, 0.5) == 2 and xmag_factor(0.5, 0.5) == 1
    with pytest.raises(ConfigError, match="not a whole number"):
        xmag_factor(2.0, 0.75)


def test_pairs_cover_the_same_area(sample_slide):
    grid = xmag_pairs(sample_slide, low_mpp=2.0, high_mpp=0.5, tile_px=64)
    assert grid.extra["xmag_k"] == 4 and len(grid) > 5
    assert grid.extra["high_level0_tile_size"] * 4 == pytest.approx(grid.level0_tile_size)
    # all 16 high tiles of every pair are on tissue; the grid is a subset of the 2.0 tiling
    assert grid.tissue.min() >= 0.5
    low_tiles = tile_slide(sample_slide, mpp=2.0, tile_px=64)
    assert {tuple(c) for c in grid.coords.tolist()} <= {tuple(c) for c in low_tiles.coords.tolist()}
    for x, y in grid.coords[:: max(1, len(grid) // 4)]:
        low, high = read_pair(sample_slide, (x, y), low_mpp=2.0, high_mpp=0.5, tile_px=64)
        assert low.shape == (64, 64, 3) and high.shape == (16, 64, 64, 3)
        small = np.asarray(Image.fromarray(_mosaic(high, 4)).resize((64, 64), Image.Resampling.BOX))
        assert _corr(low, small) > 0.98
        # row-major: high tile 1 is right of tile 0, tile 4 below it
        right = np.asarray(
            Image.fromarray(_mosaic(high, 4)[:64, 64:128]).resize((16, 16), Image.Resampling.BOX)
        )
        assert _corr(right, np.asarray(Image.fromarray(high[1]).resize((16, 16)))) > 0.99


def test_k1_and_k2(sample_slide):
    g = xmag_pairs(sample_slide, low_mpp=1.0, high_mpp=0.5, tile_px=64, min_tissue=0)
    low, high = read_pair(sample_slide, g.coords[0], low_mpp=1.0, high_mpp=0.5, tile_px=64)
    assert high.shape == (4, 64, 64, 3)
    low, high = read_pair(sample_slide, g.coords[0], low_mpp=0.5, high_mpp=0.5, tile_px=64)
    assert high.shape == (1, 64, 64, 3) and _corr(low, high[0]) > 0.999


def test_tile_dataset_order_workers_and_transform(sample_slide):
    grid = tile_slide(sample_slide, mpp=1.0, tile_px=64)
    ds = TileDataset(grid.items(), mpp=1.0, tile_px=64)
    assert len(ds) == len(grid)
    first = ds[0]
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    loader = DataLoader(
        TileDataset(grid.items(), mpp=1.0, tile_px=64, transform=to_tensor_hwc),
        batch_size=8,
        num_workers=2,
        multiprocessing_context="fork",
    )
    stacked = torch.cat(list(loader))
    assert stacked.shape == (len(grid), 3, 64, 64)
    assert torch.equal(stacked[0], torch.from_numpy(first.transpose(2, 0, 1).copy()))


def test_sharded_iteration_covers_everything_once(sample_slide):
    grid = tile_slide(sample_slide, mpp=1.0, tile_px=64)
    base = TileDataset(grid.items(), mpp=1.0, tile_px=64, transform=lambda t: int(t.sum()))
    expect = [base[i] for i in range(len(base))]
    loader = DataLoader(
        ShardedTiles(base), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    got = list(loader)
    assert sorted(got) == sorted(expect) and len(got) == len(expect)
    ranks = [list(ShardedTiles(base, rank=r, world_size=3).shard()) for r in range(3)]
    assert [i for r in ranks for i in r] == list(range(len(base)))


def test_pair_dataset(sample_slide):
    grid = xmag_pairs(sample_slide, tile_px=32)
    ds = PairDataset(grid.items(), low_mpp=2.0, high_mpp=0.5, tile_px=32)
    low, high = ds[len(ds) - 1]
    assert low.shape == (32, 32, 3) and high.shape == (16, 32, 32, 3)
    ds2 = PairDataset(grid.items(), tile_px=32, transform=lambda lo, hi: (lo.mean(), hi.shape))
    assert ds2[0][1] == (16, 32, 32, 3)


def test_tile_folder_dataset(tmp_path):
    tiles = sample_tiles("tissue")
    ds = TileFolderDataset(tiles[0].parent, tile_px=96)
    assert len(ds) == len(tiles)
    t = ds[0]
    assert t.shape == (96, 96, 3) and t.dtype == np.uint8  # RGBA dropped, resized
    with pytest.raises(ConfigError, match="no tile images"):
        TileFolderDataset(tmp_path)
