"""The reader's fast path (``Slide.read_batch``: tifffile + imagecodecs, TRIDENT's level and
resize rules, OpenCV resize) against the old one (OpenSlide + PIL, ``read_tile``).

Stated tolerance of the new path against ``read_tile``:
- decoding is exact: the same pixels as OpenSlide's ``read_region`` of the same level region;
- where the level footprint rounds to the tile size (a 0.499 µm/px scan read at 0.5), the new
  path does not resample (TRIDENT's rule) and ``read_tile`` does (a 224.45 → 224 px bilinear
  resize): per-tile mean absolute difference ≤ 10 grey levels at level 0, per-tile mean colour
  within 1 grey level;
- where a resize is needed, OpenCV's ``INTER_AREA`` on the whole-pixel box against PIL's bilinear
  on the exact box (the box moves by up to half a level pixel): per-tile mean absolute
  difference ≤ 6 at level 0 and ≤ 12 at level 1 (finer detail per pixel), mean colour within 1
  grey level.
The tiny model's embeddings of both agree to cosine ≥ 0.999 (``tests/embed``).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepath.errors import SlideReadError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from edgepath.slides import synthesize_slide

    return synthesize_slide(tmp_path_factory.mktemp("pyr") / "s.tiff", tiles=30, seed=3)


def _grid(slide, mpp, n=24):
    from edgepath.slides import tile_slide

    return tile_slide(slide, mpp=mpp, tile_px=224, min_tissue=0.3).coords[:n]


def test_decoding_equals_openslide_pixels(synthetic, sample_slide):
    import openslide

    from edgepath.slides import open_slide

    for path in (synthetic, sample_slide):
        with open_slide(path) as s:
            assert s._pyramid() is not None  # generic TIFF and Aperio SVS take the fast path
            coords = _grid(s, 0.5)
            assert s.read_plan(0.5, 224)[::2] == (0, True)  # 224.45 px rounds to 224: no resize
            new = s.read_batch(coords, mpp=0.5, tile_px=224, decoder="tifffile")
        o = openslide.OpenSlide(str(path))
        raw = [
            np.asarray(o.read_region((int(x), int(y)), 0, (224, 224)).convert("RGB"))
            for x, y in coords
        ]
        o.close()
        np.testing.assert_array_equal(new, np.stack(raw))


@pytest.mark.parametrize(
    ("mpp", "resized", "bound"), [(0.5, False, 10), (0.75, True, 6), (1.3, True, 12)]
)
def test_new_path_equals_read_tile_within_tolerance(synthetic, mpp, resized, bound):
    from edgepath.slides import open_slide

    with open_slide(synthetic) as s:
        coords = _grid(s, mpp)
        assert s.read_plan(mpp, 224)[2] is not resized
        timing: dict[str, float] = {}
        new = s.read_batch(coords, mpp=mpp, tile_px=224, timing=timing).astype(float)
        old = np.stack([s.read_tile(x, y, mpp=mpp, tile_px=224) for x, y in coords]).astype(float)
    per_tile = np.abs(new - old).mean(axis=(1, 2, 3))
    assert per_tile.max() <= bound
    assert np.abs(new.mean(axis=(1, 2)) - old.mean(axis=(1, 2))).max() <= 1.0
    assert timing["decode"] > 0 and (timing["resize"] > 0) is resized


def test_openslide_decoder_is_read_tiles(synthetic):
    from edgepath.slides import open_slide

    with open_slide(synthetic) as s:
        coords = _grid(s, 0.5, n=12)
        np.testing.assert_array_equal(
            s.read_batch(coords, mpp=0.5, decoder="openslide"), s.read_tiles(coords, mpp=0.5)
        )


def test_glass_outside_the_level_and_in_missing_tiles(synthetic):
    from edgepath.slides import open_slide

    with open_slide(synthetic) as s:
        pyr = s._pyramid()
        W, H = s.level_dimensions[0]
        out = np.zeros((64, 64, 3), np.uint8)
        pyr.read_into(out, 0, W - 32, H - 32)  # three quarters outside the slide
        assert (out[32:] == 255).all() and (out[:, 32:] == 255).all()
        inside = np.asarray(s.read_region((W - 32, H - 32), 0, (32, 32)))
        np.testing.assert_array_equal(out[:32, :32], inside)
        assert len(pyr.covering(0, np.array([[0, 0, 300, 10]]))) == 2  # 256 px TIFF tiles


def test_plain_images_fall_back_and_tifffile_is_refused(tmp_path):
    from PIL import Image

    from edgepath.slides import open_slide

    img = (np.random.default_rng(0).random((300, 300, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png", dpi=(25400 / 0.5, 25400 / 0.5))
    with open_slide(tmp_path / "x.png") as s:
        assert s._pyramid() is None
        a = s.read_batch(np.array([[0, 0]]), mpp=0.5, tile_px=64)
        np.testing.assert_array_equal(a, s.read_tiles(np.array([[0, 0]]), mpp=0.5, tile_px=64))
        with pytest.raises(SlideReadError, match="not a tiled TIFF pyramid"):
            s.read_batch(np.array([[0, 0]]), mpp=0.5, tile_px=64, decoder="tifffile")
        with pytest.raises(SlideReadError, match="decoder 'x'"):
            s.read_batch(np.array([[0, 0]]), mpp=0.5, decoder="x")


def test_tiles_decode_into_buffers_off_32_byte_boundaries(synthetic):
    from edgepath.slides import open_slide
    from edgepath.slides.pyramid import decode_buffer, decoder

    for shape in [(256, 256, 3), (3,), (7, 5, 3)]:
        b = decode_buffer(shape)
        assert b.shape == shape and b.dtype == np.uint8 and b.flags.c_contiguous
        assert b.ctypes.data % 64 == 16
    with open_slide(synthetic) as s:
        pyr = s._pyramid()
        page = pyr._pages[0]
        dec = decoder(page)
        k = int(np.flatnonzero(np.asarray(page.databytecounts) > 0)[0])
        with open(synthetic, "rb") as f:
            f.seek(int(page.dataoffsets[k]))
            data = f.read(int(page.databytecounts[k]))
        raw = np.empty(256 * 256 * 3 + 64, dtype=np.uint8)
        start = (-raw.ctypes.data) % 32
        on_boundary = raw[start : start + 256 * 256 * 3].reshape(256, 256, 3)
        got = dec(data, k, on_boundary)  # refused: the decoder takes a buffer of its own
        assert got.ctypes.data % 32 != 0 and got is not on_boundary
        spare = decode_buffer((256, 256, 3))
        assert dec(data, k, spare) is spare  # a spare from decode_buffer is decoded into
        np.testing.assert_array_equal(spare, got)
        np.testing.assert_array_equal(got, pyr.tile(0, k))


@pytest.mark.parametrize("px", [224, 256, 300])
def test_read_tiles_equals_read_into_per_tile(synthetic, px):
    """The batched copy (at most 2 x 2 parts per tile; tiles larger than a TIFF tile take the
    general path) gives read_into's pixels: inside, across TIFF tile borders, at the slide's
    edges (glass) and over a tile the file leaves out (glass)."""
    from edgepath.slides import open_slide

    rng = np.random.default_rng(px)
    with open_slide(synthetic) as s:
        pyr = s._pyramid()
        W, H = s.level_dimensions[0]
        xs = np.r_[rng.integers(0, W - px, 40), -17, W - px // 2, 0, 256 - 5, 512]
        ys = np.r_[rng.integers(0, H - px, 40), 3, H - 40, -px // 3, 256 - 7, 255]
        real = pyr.tile
        gone = 1 * -(-W // 256) + 1  # the tile at TIFF row 1, column 1: "not in the file"
        pyr.tile = lambda level, i: None if i == gone else real(level, i)
        got = np.zeros((len(xs), px, px, 3), np.uint8)
        pyr.read_tiles(got, 0, xs, ys)
        for k, (x, y) in enumerate(zip(xs.tolist(), ys.tolist(), strict=True)):
            want = np.zeros((px, px, 3), np.uint8)
            pyr.read_into(want, 0, x, y)
            np.testing.assert_array_equal(got[k], want, err_msg=f"tile {k} at {x}, {y}")
        assert (got[-2][7:263, 5:261] == 255).all()  # rows 7+, columns 5+: the missing tile
        assert (got[-2][:7] != 255).any()


def test_preload_decoders_imports_them_before_the_first_tile():
    """Reader processes import the decoders before they say ready (their first batch was
    ~0.07 s late when they imported them on it)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edgepath.slides.pyramid import preload_decoders\n"
        "assert 'imagecodecs' not in sys.modules and 'tifffile' not in sys.modules\n"
        "done = preload_decoders()\n"
        "assert {'openslide', 'tifffile', 'imagecodecs'} <= set(done), done\n"
        "assert all(m in sys.modules for m in done)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import inspect

    from edgepath.embed import reader

    assert "preload_decoders()" in inspect.getsource(reader._worker)


@pytest.mark.parametrize("d", [1.0, 2.0, 4.000513, 3.9998])
def test_level_pixels_is_level_origin_for_arrays(d):
    from edgepath.slides.reader import level_origin, level_pixels

    xy = np.r_[np.random.default_rng(0).random(2000) * 1e5, 0.0, 224.449 * np.arange(1, 50)]
    want = [round(level_origin(float(v), d)[0] / d) for v in xy]
    assert level_pixels(xy, d).tolist() == want


def test_released_decode_buffers_decode_the_next_slide(synthetic, tmp_path):
    """The decoded tiles a slide kept for its next rows are, once it is done, the buffers the
    next slide of the process decodes into (no fresh pages), and its pixels are unchanged."""
    import shutil

    from edgepath.slides import open_slide
    from edgepath.slides import pyramid as P

    other = shutil.copy(synthetic, tmp_path / "other.tiff")
    coords = _grid(open_slide(synthetic), 0.5)
    P._FREE.clear()
    P._HELD[0] = 0
    with open_slide(synthetic) as a, open_slide(other) as b:
        want = a.read_batch(coords, mpp=0.5)
        kept = [t for t in a._pyramid()._cache.values() if t is not None]
        assert len(kept) > 4
        a.clear_cache()
        assert not a._pyramid()._cache
        assert P._HELD[0] == sum(t.nbytes for t in P._FREE[(256, 256, 3)])
        # every kept tile, but the one taken back to decode the next into
        assert P._HELD[0] >= (len(kept) - 1) * 256 * 256 * 3
        assert a._pyramid()._spare is not None
        addresses = {t.ctypes.data for t in P._FREE[(256, 256, 3)]}
        half = len(coords) // 2  # fewer TIFF tiles than the pool holds
        got = b.read_batch(coords[:half], mpp=0.5)
        reused = [t for t in b._pyramid()._cache.values() if t is not None]
        assert len(reused) > 4 and {t.ctypes.data for t in reused} <= addresses
        np.testing.assert_array_equal(got, want[:half])
        a.read_batch(coords, mpp=0.5)  # and read again from the start: the rest of the pool
        b.clear_cache()
        a.clear_cache()
        addresses = {t.ctypes.data for t in (*P._FREE[(256, 256, 3)], a._pyramid()._spare)}
        again = a.read_batch(coords, mpp=0.5)
        reused = [t for t in a._pyramid()._cache.values() if t is not None]
        assert {t.ctypes.data for t in reused} <= addresses
        np.testing.assert_array_equal(again, want)
    # a buffer the decoder would refuse (on a 32-byte boundary) or a view is not kept
    P._FREE.clear()
    P._HELD[0] = 0
    raw = np.empty(256 * 256 * 3 + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 32
    P._give(raw[start : start + 256 * 256 * 3].reshape(256, 256, 3))
    P._give(P.decode_buffer((256, 512, 3))[:, :256])
    assert not P._FREE and P._HELD[0] == 0
