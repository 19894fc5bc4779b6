"""The slide reader: sample SVS through OpenSlide, plain images, bad files, fork safety."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from edgepath.data import sample_tiles
from edgepath.errors import SlideReadError
from edgepath.slides import open_slide


def test_sample_slide_metadata(sample_slide):
    with open_slide(sample_slide) as s:
        assert s.vendor == "aperio"
        assert s.dimensions == (2220, 2967)
        assert s.mpp == 0.499 and s.mpp_source == "property"
        assert s.level_count == 1 and s.best_level_for_mpp(2.0) == 0
        region = s.read_region((0, 0), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8


def test_read_tile_exact_footprint(sample_slide):
    s = open_slide(sample_slide)
    tile = s.read_tile(500, 800, mpp=0.5, tile_px=224)
    assert tile.shape == (224, 224, 3) and tile.dtype == np.uint8
    # same level-0 square read at 4x the size and resized matches the tile
    big = s.read_tile(500, 800, mpp=0.125, tile_px=896, allow_upsample=True)
    small = np.asarray(Image.fromarray(big).resize((224, 224), Image.Resampling.BOX))
    corr = np.corrcoef(tile.ravel().astype(float), small.ravel().astype(float))[0, 1]
    assert corr > 0.97


def test_outside_the_slide_is_glass(sample_slide):
    s = open_slide(sample_slide)
    tile = s.read_tile(2200, 2950, mpp=0.5, tile_px=64)
    assert tile[-10:, -10:].min() == 255


def test_target_finer_than_base_is_refused(sample_slide):
    s = open_slide(sample_slide)
    with pytest.raises(SlideReadError, match=r"finer than the slide's base 0\.499.*allow-upsample"):
        s.read_tile(0, 0, mpp=0.25)
    s.read_tile(0, 0, mpp=0.497)  # within the 1 % calibration tolerance


def test_plain_png_with_and_without_mpp(tmp_path):
    src = Image.open(sample_tiles("tissue")[-1])  # RGBA
    p = tmp_path / "tile.png"
    src.save(p, dpi=(50800, 50800))  # 0.5 µm/px
    s = open_slide(p)
    assert s.vendor == "image/png" and s.mpp == pytest.approx(0.5, rel=1e-3)
    assert s.mpp_source == "tiff-resolution"
    assert s.read_tile(0, 0, mpp=1.0, tile_px=128).shape == (128, 128, 3)
    q = tmp_path / "nodpi.jpg"
    src.convert("RGB").save(q)
    with pytest.raises(SlideReadError, match=r"nodpi\.jpg: no mpp"):
        open_slide(q).open()
    assert open_slide(q, mpp=0.5).open().mpp == 0.5


def test_plain_tiff_72dpi_rejected(tmp_path):
    import tifffile

    p = tmp_path / "flat.tif"
    tifffile.imwrite(p, np.full((300, 400, 3), 200, np.uint8), resolution=(72, 72))
    with pytest.raises(SlideReadError, match=r"flat\.tif: implausible mpp 352\.8"):
        open_slide(p).open()
    s = open_slide(p, mpp=0.5)
    assert s.dimensions == (400, 300) and s.vendor == "image/tiff"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.svs", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "empty.svs").touch() or d / "empty.svs", r"empty file \(0 bytes\)"),
        (
            lambda d: (d / "notes.svs").write_text("hello, not a slide\n" * 20) and d / "notes.svs",
            "does not recognise this .svs file",
        ),
    ],
)
def test_bad_files(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SlideReadError, match=message):
        open_slide(path).open()


def test_truncated_slide(tmp_path, sample_slide):
    p = tmp_path / "cut.svs"
    p.write_bytes(sample_slide.read_bytes()[: sample_slide.stat().st_size // 3])
    with pytest.raises(SlideReadError, match=r"cut\.svs: .*(corrupt|truncated)"):
        s = open_slide(p).open()
        s.read_tile(0, 0, mpp=0.5)
        s.read_thumbnail(8.0)


def _child_read(slide):
    return int(slide.read_tile(300, 300, mpp=1.0, tile_px=32).sum())


def test_pickle_and_fork_reopen(tmp_path, sample_slide):
    path = tmp_path / "s.svs"
    shutil.copy(sample_slide, path)
    s = open_slide(path)
    expect = _child_read(s)  # handle opened in the parent
    assert pickle.loads(pickle.dumps(s))._backend is None
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply(_child_read, (s,)) == expect


def test_unsupported_format(tmp_path):
    p = tmp_path / "table.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(SlideReadError, match=r"table\.csv: unsupported or corrupt file"):
        open_slide(p).open()


def test_thumbnail_in_chunks_equals_one_read(sample_slide):
    s = open_slide(sample_slide)
    whole = s.read_thumbnail(4.0).astype(int)
    chunked = s.read_thumbnail(4.0, chunk_px=300).astype(int)
    assert whole.shape == chunked.shape == (round(2967 * 0.499 / 4), round(2220 * 0.499 / 4), 3)
    assert np.abs(whole - chunked).mean() < 1.0


def test_read_tiles_matches_read_tile(sample_slide):
    from edgepath.slides import tile_slide

    s = open_slide(sample_slide)
    grid = tile_slide(s, mpp=0.5, tile_px=224, min_tissue=0)
    one = np.stack([s.read_tile(x, y, mpp=0.5, tile_px=224) for x, y in grid.coords[:30]])
    many = s.read_tiles(grid.coords[:30], mpp=0.5, tile_px=224)
    assert many.shape == one.shape
    assert np.abs(many.astype(int) - one).max() <= 1  # rounding only
    shuffled = grid.coords[[5, 0, 17, 3]]  # any order works, runs or not
    assert np.abs(s.read_tiles(shuffled, mpp=0.5).astype(int) - one[[5, 0, 17, 3]]).max() <= 1
