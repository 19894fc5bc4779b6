"""Cross-magnification pairs: a low-magnification tile and the k×k high-magnification tiles under it."""

from __future__ import annotations

import math
import os

import numpy as np

from edgepath.errors import ConfigError, SlideReadError
from edgepath.slides.reader import Slide, level_origin, open_slide
from edgepath.slides.tiling import MIN_TISSUE, TileGrid, grid_coords, slide_tissue
from edgepath.slides.tissue import TissueParams, box_fractions, mask_mpp_for


def xmag_factor(low_mpp: float, high_mpp: float) -> int:
    """The integer k = low_mpp / high_mpp (4 for 2.0 / 0.5), or ``ConfigError``."""
    if not (low_mpp > 0 and high_mpp > 0):
        raise ConfigError(f"mpp values must be positive (low {low_mpp}, high {high_mpp})")
    ratio = low_mpp / high_mpp
    k = round(ratio)
    if k < 1 or abs(ratio - k) > 1e-6 * ratio:
        raise ConfigError(
            f"low mpp {low_mpp:g} / high mpp {high_mpp:g} = {ratio:.4g} is not a whole number "
            "k >= 1; pick mpps whose ratio is an integer (2.0 / 0.5 gives k = 4)"
        )
    return k


def _as_slide(slide: Slide | str | os.PathLike[str]) -> Slide:
    return slide if isinstance(slide, Slide) else open_slide(slide)


def high_offsets(k: int, high_fp: float) -> np.ndarray:
    """(k*k, 2) level-0 offsets of the high tiles inside a low tile, row-major."""
    j, i = np.meshgrid(np.arange(k), np.arange(k))
    return np.stack([j.ravel(), i.ravel()], axis=1) * high_fp


def xmag_pairs(
    slide: Slide | str | os.PathLike[str],
    *,
    low_mpp: float = 2.0,
    high_mpp: float = 0.5,
    tile_px: int = 224,
    min_tissue: float = MIN_TISSUE,
    tissue: TissueParams | None = TissueParams(),
    allow_upsample: bool = False,
) -> TileGrid:
    """Low-magnification tiles whose k×k high-magnification tiles all lie on tissue.

    Every high tile covers exactly 1/k of the low tile's level-0 side, so the k×k grid covers
    exactly the low tile; tiles that leave the slide or whose high tiles fall below
    ``min_tissue`` are dropped.

    Returns:
        A ``TileGrid`` at ``low_mpp`` with ``extra`` holding ``high_mpp``, ``xmag_k`` and
        ``high_level0_tile_size``.
    """
    s = _as_slide(slide)
    k = xmag_factor(low_mpp, high_mpp)
    s.check_mpp(high_mpp, allow_upsample=allow_upsample)
    low_fp = tile_px * low_mpp / s.mpp
    high_fp = low_fp / k
    W, H = s.dimensions
    coords = grid_coords(W, H, low_fp)
    # the floor() of a corner may leave the last high tile a fraction of a pixel past the edge
    coords = coords[(coords[:, 0] + low_fp <= W) & (coords[:, 1] + low_fp <= H)]
    if len(coords) == 0:
        raise SlideReadError(
            f"{s.path}: smaller than one {tile_px} px tile at {low_mpp:g} µm/px; "
            "use a smaller --tile-px or lower mpps"
        )
    mask = mask_mpp = None
    frac = np.ones(len(coords), dtype=np.float32)
    if tissue is not None:
        mask_mpp = mask_mpp_for(tile_px * high_mpp, tissue, base_mpp=s.mpp)
        mask, scale = slide_tissue(s, mpp=mask_mpp, params=tissue)
        mask_mpp = s.mpp / scale  # as read (capped for huge slides)
        corners = (coords[:, None, :] + high_offsets(k, high_fp)[None]).reshape(-1, 2)
        boxes = np.concatenate([corners, corners + high_fp], axis=1)
        per_high = box_fractions(mask, boxes, scale=scale).reshape(len(coords), k * k)
        frac = per_high.min(axis=1)
        keep = frac >= min_tissue
        if not keep.any():
            raise SlideReadError(
                f"{s.path}: no {low_mpp:g} µm/px tile has all its {k}x{k} {high_mpp:g} µm/px "
                f"tiles on tissue (>= {min_tissue:.0%}); check the slide or lower --min-tissue"
            )
        coords, frac = coords[keep], frac[keep]
    return TileGrid(
        coords=coords,
        tile_px=int(tile_px),
        mpp=float(low_mpp),
        level0_tile_size=float(low_fp),
        mpp_source=s.mpp_source,
        base_mpp=s.mpp,
        slide=str(s.path),
        level=s.best_level_for_mpp(low_mpp),
        tissue=frac,
        min_tissue=float(min_tissue),
        mask=mask,
        mask_mpp=mask_mpp,
        extra={"high_mpp": float(high_mpp), "xmag_k": k, "high_level0_tile_size": high_fp},
        dimensions=(int(s.dimensions[0]), int(s.dimensions[1])),
    )


def read_pair(
    slide: Slide | str | os.PathLike[str],
    xy0: tuple[float, float],
    *,
    low_mpp: float = 2.0,
    high_mpp: float = 0.5,
    tile_px: int = 224,
    allow_upsample: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One low tile and its k×k high tiles, each read from its own pyramid level.

    The high tiles are cut from one read of the region at the high-magnification level (each
    resized once from its exact sub-pixel box); the low tile is read from the low level, never
    made by shrinking the high tiles.

    Returns:
        ``(low, high)``: uint8 (tile_px, tile_px, 3) and (k*k, tile_px, tile_px, 3), the high
        tiles in row-major order.
    """
    from PIL import Image

    s = _as_slide(slide)
    k = xmag_factor(low_mpp, high_mpp)
    s.check_mpp(high_mpp, allow_upsample=allow_upsample)
    x0, y0 = float(xy0[0]), float(xy0[1])
    low = s.read_tile(x0, y0, mpp=low_mpp, tile_px=tile_px, allow_upsample=allow_upsample)
    low_fp = tile_px * low_mpp / s.mpp
    level = s.best_level_for_mpp(high_mpp)
    d = s.level_downsamples[level]
    (ix, fx), (iy, fy) = level_origin(x0, d), level_origin(y0, d)
    w = low_fp / d / k  # one high tile, in level px
    size = (math.ceil(fx + k * w - 1e-9), math.ceil(fy + k * w - 1e-9))
    region = s._handle().read((ix, iy), level, size)
    exact = fx == 0 and fy == 0 and abs(w - tile_px) < 1e-6
    high = np.empty((k * k, tile_px, tile_px, 3), dtype=np.uint8)
    for n in range(k * k):
        i, j = divmod(n, k)
        bx, by = fx + j * w, fy + i * w
        if exact:
            tile = region.crop((j * tile_px, i * tile_px, (j + 1) * tile_px, (i + 1) * tile_px))
        else:
            tile = region.resize(
                (tile_px, tile_px), Image.Resampling.BILINEAR, box=(bx, by, bx + w, by + w)
            )
        high[n] = np.asarray(tile)
    return low, high
