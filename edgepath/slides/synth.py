"""Synthetic pyramidal slides from real H&E: a JPEG-tiled, multi-level TIFF that OpenSlide reads."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgepath.errors import ConfigError

log = logging.getLogger(__name__)

#: TIFF tile side (Aperio and most scanners use 240-512).
TIFF_TILE = 256
#: Mosaic block side at level 0; a multiple of 2**(levels-1) so every level is block aligned.
BLOCK = 256
#: Glass (cover slip over an empty slide), as scanners record it.
GLASS = np.array([241, 241, 239], dtype=np.float32)
#: The synthetic slide's tissue counts are for this tiling (the embed default).
COUNT_MPP, COUNT_TILE_PX = 0.5, 224
#: Share of the slide's 0.5 mpp tiles that are tissue (real biopsies: 20-60 %).
TISSUE_SHARE = 0.45


def _source_pool(mpp: float, levels: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The sample slide's pixels at ``mpp`` for every level, and tissue-rich block origins."""
    from PIL import Image

    from edgepath.data import SAMPLE_SLIDE
    from edgepath.slides.reader import open_slide
    from edgepath.slides.tissue import TissueParams, box_fractions, tissue_mask

    with open_slide(SAMPLE_SLIDE) as s:
        W, H = s.dimensions
        img = Image.fromarray(s.read_region((0, 0), 0, (W, H)))
        thumb = s.read_thumbnail(8.0)
        base = s.mpp
    if abs(mpp - base) > 1e-9:
        img = img.resize((round(W * base / mpp), round(H * base / mpp)), Image.Resampling.LANCZOS)
    step = 2 ** (levels - 1)
    pw, ph = (img.width // step) * step, (img.height // step) * step
    img = img.crop((0, 0, pw, ph))
    pools = [np.asarray(img)]
    for lv in range(1, levels):
        pools.append(np.asarray(img.reduce(2**lv)))
    mask = tissue_mask(thumb, TissueParams(mpp=8.0))
    grid = np.arange(0, min(pw, ph), 32)
    ox, oy = np.meshgrid(grid[grid + BLOCK <= pw], grid[grid + BLOCK <= ph])
    origins = np.stack([ox.ravel(), oy.ravel()], axis=1)
    origins = origins - origins % step
    boxes = np.concatenate([origins, origins + BLOCK], axis=1) * (base / mpp if mpp else 1)
    frac = box_fractions(mask, boxes / (base / mpp), scale=mask.shape[1] / (pw * mpp / base))
    good = origins[frac >= 0.9]
    if len(good) < 8:
        good = origins[np.argsort(-frac)[:64]]
    return pools, good


def _layout(tiles: int, fp: float, rng: np.random.Generator) -> tuple[np.ndarray, int, int, float]:
    """A smooth tissue/glass mask of cells (4 per 0.5 mpp tile side) with about ``tiles`` tiles.

    Returns:
        ``(alpha, width, height, cell)``: float32 cell mask in [0, 1], level-0 size, cell side.
    """
    from scipy import ndimage as ndi

    total = tiles / TISSUE_SHARE
    nx = max(3, math.ceil(math.sqrt(total * 4 / 3)))
    ny = max(3, math.ceil(total / nx))
    cell = fp / 4
    cw, ch = nx * 4, ny * 4
    # islands: a few smooth blobs + small-scale texture, with empty margins like a real slide
    field = ndi.gaussian_filter(rng.standard_normal((ch, cw)), sigma=max(cw, ch) / 8, mode="wrap")
    field /= field.std() + 1e-9
    field += 0.5 * ndi.gaussian_filter(rng.standard_normal((ch, cw)), sigma=4) * 6
    yy, xx = np.mgrid[0:ch, 0:cw]
    r = np.hypot((xx + 0.5) / cw - 0.5, (yy + 0.5) / ch - 0.5) * 2
    field = (field - field.mean()) / (field.std() + 1e-9) - 12 * np.clip(r - 0.6, 0, None)
    lo, hi = float(field.min()), float(field.max())
    best = (lo, 1 << 62)

    def pieces(t: float) -> np.ndarray:  # tissue pieces of at least 2 tiles, no pinholes
        m = field > t
        labels, n = ndi.label(m)
        if n:
            sizes = np.bincount(labels.ravel())
            keep = sizes >= 32
            keep[0] = False
            m = keep[labels]
        return ndi.binary_fill_holes(m) if min(cw, ch) > 2 else m

    for _ in range(40):  # bisection on the threshold: tiles with >= half their cells in tissue
        t = (lo + hi) / 2
        m = pieces(t).astype(np.float32)
        per_tile = m[: ny * 4, : nx * 4].reshape(ny, 4, nx, 4).mean(axis=(1, 3))
        n = int((per_tile >= 0.5).sum())
        if abs(n - tiles) < abs(best[1] - tiles):
            best = (t, n)
        if n > tiles:
            lo = t
        elif n < tiles:
            hi = t
        else:
            break
    mask = pieces(best[0]).astype(np.float32)
    width = math.ceil(nx * fp / 8) * 8
    height = math.ceil(ny * fp / 8) * 8
    return mask, width, height, cell


class _Renderer:
    """Renders any region of any level of the synthetic slide (deterministic, block aligned)."""

    def __init__(self, tiles: int, *, mpp: float, levels: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.levels = levels
        self.pools, origins = _source_pool(mpp, levels)
        fp = COUNT_TILE_PX * COUNT_MPP / mpp
        self.mask, self.width, self.height, self.cell = _layout(tiles, fp, rng)
        self.bx, self.by = math.ceil(self.width / BLOCK), math.ceil(self.height / BLOCK)
        n = self.bx * self.by
        self.choice = origins[rng.integers(0, len(origins), size=n)].reshape(self.by, self.bx, 2)
        self.variant = rng.integers(0, 8, size=(self.by, self.bx))  # 4 rotations x flip
        self._mask_img = None

    def level_size(self, level: int) -> tuple[int, int]:
        d = 2**level
        return math.ceil(self.width / d), math.ceil(self.height / d)

    def alpha(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        from PIL import Image

        if self._mask_img is None:
            pad = np.zeros((self.mask.shape[0] + 8, self.mask.shape[1] + 8), np.float32)
            pad[: self.mask.shape[0], : self.mask.shape[1]] = self.mask
            self._mask_img = Image.fromarray(pad, mode="F")
        c = self.cell / 2**level  # level px per cell
        mw, mh = self._mask_img.size
        box = (x / c, y / c, min((x + w) / c, mw), min((y + h) / c, mh))
        return np.asarray(self._mask_img.resize((w, h), Image.Resampling.BILINEAR, box=box))

    def region(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        a = self.alpha(level, x, y, w, h)
        out = np.empty((h, w, 3), dtype=np.uint8)
        out[:] = GLASS.astype(np.uint8)
        if a.max() <= 0:
            return out
        b = BLOCK // 2**level
        pool = self.pools[level]
        tissue = np.empty((h, w, 3), dtype=np.uint8)
        tissue[:] = out
        for j in range(y // b, min(self.by, math.ceil((y + h) / b))):
            for i in range(x // b, min(self.bx, math.ceil((x + w) / b))):
                ox, oy = (self.choice[j, i] // 2**level).tolist()
                blk = pool[oy : oy + b, ox : ox + b]
                v = int(self.variant[j, i])
                blk = np.rot90(blk, v % 4)
                if v >= 4:
                    blk = blk[:, ::-1]
                x0, y0 = i * b, j * b
                sx, sy = max(x, x0), max(y, y0)
                ex, ey = min(x + w, x0 + b), min(y + h, y0 + b)
                tissue[sy - y : ey - y, sx - x : ex - x] = blk[sy - y0 : ey - y0, sx - x0 : ex - x0]
        if a.min() >= 1.0:  # inside the tissue: no blending (most tiles)
            return tissue
        a3 = a[..., None]
        blend = GLASS + (tissue.astype(np.float32) - GLASS) * a3
        return np.clip(blend + 0.5, 0, 255).astype(np.uint8)

    def tiles(self, level: int) -> Iterator[np.ndarray]:
        W, H = self.level_size(level)
        for ty in range(0, H, TIFF_TILE):
            for tx in range(0, W, TIFF_TILE):
                w, h = min(TIFF_TILE, W - tx), min(TIFF_TILE, H - ty)
                t = self.region(level, tx, ty, w, h)
                if (w, h) != (TIFF_TILE, TIFF_TILE):
                    full = np.empty((TIFF_TILE, TIFF_TILE, 3), dtype=np.uint8)
                    full[:] = GLASS.astype(np.uint8)
                    full[:h, :w] = t
                    t = full
                yield t


def synthesize_slide(
    out: str | os.PathLike[str],
    *,
    tiles: int,
    seed: int = 0,
    mpp: float | None = None,
    levels: int = 4,
    quality: int = 85,
) -> Path:
    """Write a synthetic pyramidal slide of real H&E content with about ``tiles`` tissue tiles.

    The content is a mosaic of blocks of the shipped CMU-1 region (flipped and rotated) laid out
    as tissue islands on glass; the tissue is sized so that ``tile_slide(mpp=0.5, tile_px=224)``
    finds about ``tiles`` tiles. The file is a BigTIFF with 256 px JPEG tiles, ``levels``
    levels (downsample 2 each) and resolution tags in pixels per centimetre, read by OpenSlide
    as ``generic-tiff``.

    Args:
        out: Output path (``.tif``/``.tiff``); written atomically.
        tiles: Approximate number of 0.5 mpp / 224 px tissue tiles.
        seed: Layout and mosaic seed (same seed, same file).
        mpp: Level-0 µm/px; default the sample's own 0.499 (real pixels, no resampling).
            Other values rescale the content so that cells keep their physical size.
        levels: Pyramid levels (1-8).
        quality: JPEG quality.

    Returns:
        The path written.
    """
    import tifffile

    from edgepath.data import SAMPLE_SLIDE
    from edgepath.io import atomic_path
    from edgepath.slides.reader import open_slide

    if tiles < 1:
        raise ConfigError(f"tiles {tiles} must be at least 1")
    if not 1 <= levels <= 8:
        raise ConfigError(f"levels {levels} must be between 1 and 8")
    if mpp is None:
        mpp = open_slide(SAMPLE_SLIDE).mpp
    if not 0.1 <= mpp <= 2.0:
        raise ConfigError(f"mpp {mpp} must be between 0.1 and 2.0 µm/px for a synthetic slide")
    r = _Renderer(tiles, mpp=mpp, levels=levels, seed=seed)
    path = Path(out)
    log.info("synthesizing %s: %dx%d px, %d levels", path, r.width, r.height, levels)
    desc = f"edgepath synthetic slide: seed={seed} tiles={tiles} mpp={mpp}"
    with (
        atomic_path(path, suffix=path.suffix or ".tiff") as tmp,
        tifffile.TiffWriter(tmp, bigtiff=True) as tw,
    ):
        for level in range(levels):
            W, H = r.level_size(level)
            per_cm = 1e4 / (mpp * 2**level)
            tw.write(
                r.tiles(level),
                shape=(H, W, 3),
                dtype=np.uint8,
                tile=(TIFF_TILE, TIFF_TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                description=desc if level == 0 else None,
                metadata=None,
            )
    return path
