"""Tiled TIFF pyramids (generic tiled TIFF, Aperio SVS) decoded without OpenSlide.

OpenSlide decodes a slide's JPEG tiles with libjpeg-turbo too, but each ``read_region`` goes
through its ARGB conversion, a cairo composite and a tile cache shared under a lock; on the
synthetic full-size slide (256 px JPEG tiles) that costs 1.46 ms per 256 px tile, against
0.28 ms for ``imagecodecs.jpeg8_decode`` (libjpeg-turbo) through tifffile, and 0.79 ms through
pyvips (measured side by side on this 2-core AMD EPYC, AVX2: see ``docs/embed.md``).

``TiffPyramid`` reads a tile's compressed bytes with one ``pread``, decodes them with tifffile's
decoder for the page (imagecodecs: JPEG, JPEG 2000, LZW, Deflate, ...) and keeps the decoded
tiles of the last rows in a small cache, so the tissue tiles of a grid row that share a TIFF
tile with the row above do not decode it again: each TIFF tile under the tissue is decoded once.
It serves only files whose pyramid tifffile and OpenSlide see alike (same levels, same sizes,
8-bit RGB, tiled); anything else is read by OpenSlide.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: OpenSlide vendors whose pyramid is the TIFF file's own tiled pages.
VENDORS = ("generic-tiff", "aperio")
#: Decoded tiles kept per process: this many rows of the widest level (at least 64 tiles) ...
CACHE_ROWS = 3
#: ... and never more than this many bytes.
CACHE_BYTES = 256 << 20
#: Glass colour outside the scanned area (as ``reader.BACKGROUND``).
_GLASS = 255

#: Decoded-tile buffers of pyramids whose cache was released, by shape, for the next slide this
#: process reads: its cache then fills without fresh pages. Each new full-size synthetic slide
#: took ~17,000 page faults (its 354 cached 256 px tiles, 69 MB) in every reader process, 0.04-0.08
#: s of a 1.4 s read (``tests/slides/test_pyramid.py`` counts them). At most ``CACHE_BYTES``.
_FREE: dict[tuple[int, ...], list[np.ndarray]] = {}
_HELD = [0]  # bytes in _FREE


class TiffPyramid:
    """The levels of a tiled TIFF as OpenSlide numbers them, read tile by tile.

    Args:
        path: The slide.
        level_dimensions: OpenSlide's (width, height) per level; the file must match them.

    Raises:
        ValueError: The file is not a tiled 8-bit RGB pyramid with exactly these levels.
    """

    def __init__(self, path: str | os.PathLike[str], level_dimensions: tuple) -> None:
        import tifffile

        self.path = Path(path)
        self._tf = tifffile.TiffFile(self.path)
        try:
            levels = self._tf.series[0].levels
            if len(levels) != len(level_dimensions):
                raise ValueError(
                    f"{len(levels)} TIFF levels, OpenSlide has {len(level_dimensions)}"
                )
            self._pages = [lv.keyframe for lv in levels]
            for page, (w, h) in zip(self._pages, level_dimensions, strict=True):
                self._check(page, int(w), int(h))
        except BaseException:
            self._tf.close()
            raise
        self._decoders = [decoder(p) for p in self._pages]
        self._fd = os.open(self.path, os.O_RDONLY)
        self._cache: dict[tuple[int, int], np.ndarray | None] = {}
        tw, th = self._pages[0].tilewidth, self._pages[0].tilelength
        across = math.ceil(self._pages[0].imagewidth / tw)
        self._cache_n = max(64, min(CACHE_ROWS * across, CACHE_BYTES // (tw * th * 3)))
        self._shape = (th, tw, 3)
        self._spare: np.ndarray | None = _take(self._shape)
        self.decode_s = 0.0
        self.decoded = 0

    @staticmethod
    def _check(page: Any, w: int, h: int) -> None:
        if not page.is_tiled or (page.imagewidth, page.imagelength) != (w, h):
            raise ValueError("level is not tiled or has another size than OpenSlide's")
        if page.samplesperpixel != 3 or page.dtype != np.uint8 or page.planarconfig != 1:
            raise ValueError("not 8-bit interleaved RGB")
        if page.imagedepth != 1:
            raise ValueError("volumetric TIFF")

    def tile(self, level: int, index: int) -> np.ndarray | None:
        """Decoded tile ``index`` (row-major) of ``level``: (tilelength, tilewidth, 3) uint8, or
        None for a tile the file leaves out (glass)."""
        key = (level, index)
        hit = self._cache.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        page = self._pages[level]
        n = int(page.databytecounts[index])
        t0 = time.perf_counter()
        if n == 0:
            arr = None
        else:
            data = os.pread(self._fd, n, int(page.dataoffsets[index]))
            if len(data) != n:
                raise OSError(f"tile {index} of level {level} is truncated")
            arr = self._decoders[level](data, index, self._spare)
            if arr is self._spare or self._spare is None:  # else not taken (other tile size)
                self._spare = _take(self._shape)
        self.decode_s += time.perf_counter() - t0
        self.decoded += 1
        if len(self._cache) >= self._cache_n:  # oldest out first: rows are read in order
            old = self._cache.pop(next(iter(self._cache)))
            if self._spare is not None:
                _give(old)
            elif old is not None and old.flags.c_contiguous:
                self._spare = old  # decoded into next: no fresh pages to fault in
        self._cache[key] = arr
        return arr

    def read_into(self, out: np.ndarray, level: int, x: int, y: int) -> None:
        """Fill ``out`` (h, w, 3) with ``level``'s pixels whose top-left corner is (x, y), in level
        pixels; glass where the region leaves the level."""
        page = self._pages[level]
        h, w = out.shape[:2]
        W, H = page.imagewidth, page.imagelength
        tw, th = page.tilewidth, page.tilelength
        across = -(-W // tw)
        x1, y1 = min(x + w, W), min(y + h, H)
        if x < 0 or y < 0 or x1 < x + w or y1 < y + h:
            out[:] = _GLASS
        for ty in range(max(y, 0) // th, (y1 - 1) // th + 1 if y1 > 0 else 0):
            sy0, sy1 = max(y, ty * th), min(y1, (ty + 1) * th)
            for tx in range(max(x, 0) // tw, (x1 - 1) // tw + 1 if x1 > 0 else 0):
                sx0, sx1 = max(x, tx * tw), min(x1, (tx + 1) * tw)
                t = self.tile(level, ty * across + tx)
                dst = out[sy0 - y : sy1 - y, sx0 - x : sx1 - x]
                if t is None:
                    dst[:] = _GLASS
                else:
                    dst[:] = t[sy0 - ty * th : sy1 - ty * th, sx0 - tx * tw : sx1 - tx * tw]

    def read_tiles(self, out: np.ndarray, level: int, xs: np.ndarray, ys: np.ndarray) -> None:
        """``read_into(out[k], level, xs[k], ys[k])`` for every k, with the per-tile Python work
        cut to the copies (a tile no larger than a TIFF tile has at most 2 x 2 parts): on the
        full-size synthetic slide ``read_into`` spent 0.18-0.20 s on 5,941 tiles (20,621
        parts) where the copies alone take 0.11 s."""
        page = self._pages[level]
        n, h, w = out.shape[:3]
        W, H = page.imagewidth, page.imagelength
        tw, th = page.tilewidth, page.tilelength
        if h > th or w > tw:  # more than 2 x 2 parts: the general path
            for k in range(n):
                self.read_into(out[k], level, int(xs[k]), int(ys[k]))
            return
        across = -(-W // tw)

        def tile(index: int) -> np.ndarray:
            t = self.tile(level, index)
            return _glass_tile(th, tw) if t is None else t

        for o, x, y in zip(out, np.asarray(xs).tolist(), np.asarray(ys).tolist(), strict=True):
            if x < 0 or y < 0 or x + w > W or y + h > H:  # glass at the edge: the general path
                self.read_into(o, level, x, y)
                continue
            ty, oy = divmod(y, th)
            tx, ox = divmod(x, tw)
            i = ty * across + tx
            hy, wx = min(th - oy, h), min(tw - ox, w)  # rows, columns in the top-left part
            a = tile(i)
            o[:hy, :wx] = a[oy : oy + hy, ox : ox + wx]
            if wx < w:
                o[:hy, wx:] = tile(i + 1)[oy : oy + hy, : w - wx]
            if hy < h:
                b = tile(i + across)
                o[hy:, :wx] = b[: h - hy, ox : ox + wx]
                if wx < w:
                    o[hy:, wx:] = tile(i + across + 1)[: h - hy, : w - wx]

    def covering(self, level: int, boxes: np.ndarray) -> np.ndarray:
        """Row-major indices of the tiles of ``level`` under ``boxes`` ((N, 4) x0, y0, x1, y1 in
        level pixels, end exclusive), each once."""
        page = self._pages[level]
        tw, th = page.tilewidth, page.tilelength
        across = -(-page.imagewidth // tw)
        down = -(-page.imagelength // th)
        keys: set[int] = set()
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64):
            for ty in range(max(y0, 0) // th, min((y1 - 1) // th, down - 1) + 1):
                for tx in range(max(x0, 0) // tw, min((x1 - 1) // tw, across - 1) + 1):
                    keys.add(ty * across + tx)
        return np.array(sorted(keys), dtype=np.int64)

    def clear_cache(self) -> None:
        """Drop the decoded tiles (reads of this slide are done for now); their buffers serve
        the next pyramid this process opens."""
        for arr in (*self._cache.values(), self._spare):
            _give(arr)
        self._cache.clear()
        self._spare = _take(self._shape)

    def close(self) -> None:
        self.clear_cache()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._tf.close()


def _take(shape: tuple[int, ...]) -> np.ndarray | None:
    """A released decode buffer of ``shape`` (``_FREE``), or None."""
    try:
        arr = _FREE[shape].pop()
    except (KeyError, IndexError):
        return None
    _HELD[0] -= arr.nbytes
    return arr


def _give(arr: np.ndarray | None) -> None:
    """Keep ``arr`` for ``_take`` if it is a whole buffer libjpeg-turbo can decode into again and
    the pool holds less than ``CACHE_BYTES``."""
    if arr is None or not arr.flags.c_contiguous or not arr.flags.writeable:
        return
    if arr.dtype != np.uint8 or not _decodes_fast_into(arr):
        return
    if _HELD[0] + arr.nbytes <= CACHE_BYTES:
        _FREE.setdefault(arr.shape, []).append(arr)
        _HELD[0] += arr.nbytes


@functools.cache
def _glass_tile(th: int, tw: int) -> np.ndarray:
    """A read-only TIFF tile of glass, for the tiles a file leaves out."""
    t = np.full((th, tw, 3), _GLASS, dtype=np.uint8)
    t.flags.writeable = False
    return t


def preload_decoders() -> list[str]:
    """Import the libraries that open and decode slides (OpenSlide, tifffile, imagecodecs) now,
    not on the first tile: a reader process that imported them on its first batch handed that
    batch over ~0.07 s late (0.078 s against 0.009 s per later batch, full-size synthetic
    slide). Returns the names imported; a missing one is left to fail where it is needed."""
    import importlib

    done = []
    for name in ("openslide", "tifffile", "imagecodecs", "imagecodecs._jpeg8"):
        try:
            importlib.import_module(name)
            done.append(name)
        except ImportError:  # reported by the reader that needs it, with the fix
            pass
    return done


def decode_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array of ``shape`` whose data start 16 bytes past a 64-byte
    boundary, for libjpeg-turbo to decode into.

    Decoding the 4,764 256-px JPEG tiles of the full-size synthetic slide into one reused buffer
    took 1.31 s when the buffer's address was 8, 16 or 48 bytes past a 32-byte boundary and
    1.62-1.69 s when it was on one (offsets 0, 32, 64, 96, 128 within a page; AMD EPYC, AVX2,
    imagecodecs' libjpeg-turbo), and ``np.empty`` lands on either. (Likely 4K aliasing between
    the decoder's aligned row buffers and the output rows, whose stride of 768 bytes keeps
    every row at the same alignment.)
    """
    n = math.prod(shape)
    raw = np.empty(n + 64, dtype=np.uint8)
    start = (16 - raw.ctypes.data) % 64
    return raw[start : start + n].reshape(shape)


def _decodes_fast_into(arr: np.ndarray) -> bool:
    """Whether libjpeg-turbo decodes at full speed into ``arr``: not on a 32-byte boundary
    (``decode_buffer``)."""
    return arr.ctypes.data % 32 != 0


def decoder(page: Any) -> Callable[[bytes, int, np.ndarray | None], np.ndarray]:
    """The fastest decoder of ``page``'s tiles: ``imagecodecs.jpeg8_decode`` (libjpeg-turbo)
    called directly for 8-bit JPEG tiles (tifffile's own wrapper adds ~30 % per 256 px tile),
    tifffile's decoder for every other compression. Returns (tilelength, tilewidth, 3) uint8,
    into ``out`` (a spare tile) where the decoder takes one."""
    th, tw = page.tilelength, page.tilewidth
    if page.compression == 7 and page.bitspersample == 8 and not page.extrasamples:
        import imagecodecs

        # tifffile's jpeg_decode_colorspace for these cases: YCbCr -> RGB; RGB JPEG without a
        # JFIF marker (Aperio) is decoded as RGB, not as YCbCr
        cs = 2 if page.photometric == 2 and not page.is_jfif else None
        tables = page.jpegtables

        def jpeg(data: bytes, index: int, out: np.ndarray | None) -> np.ndarray:
            if out is None or out.shape != (th, tw, 3) or not _decodes_fast_into(out):
                out = decode_buffer((th, tw, 3))
            return imagecodecs.jpeg8_decode(
                data, tables=tables, colorspace=cs, outcolorspace=2, shape=(th, tw), out=out
            )

        if page.photometric in (2, 6):
            return jpeg

    def other(data: bytes, index: int, out: np.ndarray | None) -> np.ndarray:
        seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        if seg is None:
            raise OSError(f"tile {index} cannot be decoded")
        return seg.reshape(th, tw, -1)[..., :3]

    return other


def open_pyramid(path: Path, vendor: str, level_dimensions: tuple) -> TiffPyramid | None:
    """A ``TiffPyramid`` of the slide, or None where OpenSlide must read it (another format, or
    a TIFF whose pyramid tifffile sees otherwise)."""
    if vendor not in VENDORS:
        return None
    try:
        return TiffPyramid(path, level_dimensions)
    except Exception as exc:  # any doubt: OpenSlide reads it, as before
        log.debug("%s: read by OpenSlide (%s)", path, exc)
        return None
