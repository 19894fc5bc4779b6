"""Tissue detection on a low-resolution image: saturation + Otsu + morphology, minus pen and debris."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from edgepath.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TissueParams:
    """Tunable tissue detection (sizes in µm so they hold at any thumbnail resolution).

    Attributes:
        mpp: Resolution of the thumbnail the mask is computed on (µm/px).
        min_saturation: Lower clip of the Otsu saturation threshold (glass is < 0.03).
        max_saturation: Upper clip of the Otsu threshold, so an all-tissue image is kept.
        pen_saturation: Pixels more saturated than this are ink, not stain (H&E stays < 0.55).
        dark_value: Pixels darker than this (HSV value) are pen, debris or folds.
        pen_margin_um: Ink and debris are grown by this much to drop their blurred halos.
        smooth_um: Colours are averaged over this size before looking for ink.
        close_um: Morphological closing radius (joins tissue across small gaps).
        open_um: Opening radius (drops specks of dust).
        min_area_um2: Connected components smaller than this are dropped.
        fill_holes: Fill holes inside tissue (fat, lumens).
    """

    mpp: float = 8.0
    min_saturation: float = 0.05
    max_saturation: float = 0.15
    pen_saturation: float = 0.6
    dark_value: float = 0.3
    pen_margin_um: float = 24.0
    smooth_um: float = 24.0
    close_um: float = 16.0
    open_um: float = 8.0
    min_area_um2: float = 10_000.0
    fill_holes: bool = True

    def validate(self) -> None:
        if not self.mpp > 0:
            raise ConfigError(f"tissue mpp {self.mpp} must be positive")
        if not 0 <= self.min_saturation <= self.max_saturation <= 1:
            raise ConfigError("tissue saturation bounds must satisfy 0 <= min <= max <= 1")


def otsu(values: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximum between-class variance)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centers)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of a uint8 HxWx3 image."""
    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    delta = mx - mn
    s = np.divide(delta, mx, out=np.zeros_like(mx), where=mx > 0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.where(delta > 0, delta, 1.0)
    h = np.where(
        mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = np.where(delta > 0, h * 60.0, 0.0)
    return h, s, mx


def _disk(radius_px: int) -> np.ndarray:
    r = max(int(radius_px), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r + r


def ink_mask(rgb: np.ndarray, params: TissueParams = TissueParams()) -> np.ndarray:
    """Pixels of pen ink (green/blue, saturated red, over-saturated) or dark debris.

    Colours are averaged over ``smooth_um`` first, so single dark nuclei or red cells at a fine
    thumbnail resolution are not taken for ink; pen strokes are far wider.
    """
    from scipy import ndimage as ndi

    k = round(params.smooth_um / params.mpp)
    if k > 1:
        rgb = ndi.uniform_filter(rgb.astype(np.float32), size=(k, k, 1)).round().astype(np.uint8)
    h, s, v = hsv(rgb)
    green_blue = (h > 60) & (h < 225) & (s > 0.1)  # no H&E stain is green, cyan or pure blue
    red = ((h >= 340) | (h <= 20)) & (s > 0.25)  # red marker; eosin sits at 280-335 degrees
    return green_blue | red | (s > params.pen_saturation) | (v < params.dark_value)


def tissue_mask(rgb: np.ndarray, params: TissueParams = TissueParams()) -> np.ndarray:
    """Boolean tissue mask of a thumbnail taken at ``params.mpp``.

    Saturation separates stained tissue from glass (grey, white, black lines); the threshold is
    Otsu's clipped to [``min_saturation``, ``max_saturation``] so glass-only and tissue-only
    images both come out right. Pen ink and dark debris, grown by ``pen_margin_um``, are
    removed; then closing, opening, hole filling and a minimum component area clean up.
    """
    from scipy import ndimage as ndi

    params.validate()
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.size == 0:
        raise ConfigError(f"tissue_mask needs an HxWx3 image, got shape {rgb.shape}")
    _, s, _ = hsv(rgb)
    thr = min(max(otsu(s), params.min_saturation), params.max_saturation)
    mask = s > thr
    px = params.mpp
    ink = ink_mask(rgb, params)
    if ink.any():
        grow = round(params.pen_margin_um / px)
        if grow > 0:
            ink = ndi.binary_dilation(ink, structure=_disk(grow))
        mask &= ~ink
    r_close = round(params.close_um / px)
    if r_close > 0:
        padded = np.pad(mask, r_close, mode="edge")  # no erosion at the image border
        mask = ndi.binary_closing(padded, structure=_disk(r_close))[
            r_close:-r_close, r_close:-r_close
        ]
        mask &= ~ink
    r_open = round(params.open_um / px)
    if r_open > 0:
        mask = ndi.binary_opening(mask, structure=_disk(r_open))
    if params.fill_holes:
        mask = ndi.binary_fill_holes(mask) & ~ink
    min_px = params.min_area_um2 / (px * px)
    if min_px >= 1 and mask.any():
        labels, n = ndi.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= min_px
        keep[0] = False
        mask = keep[labels]
    return mask


def box_fractions(mask: np.ndarray, boxes: np.ndarray, *, scale: float) -> np.ndarray:
    """Tissue fraction of each level-0 box (x0, y0, x1, y1) on a mask at ``scale`` mask px/level-0 px.

    Uses a summed-area table; boxes are snapped to whole mask pixels (at least one).
    """
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    H, W = mask.shape
    b = np.asarray(boxes, dtype=np.float64) * scale
    x0 = np.clip(np.round(b[:, 0]).astype(np.int64), 0, W)
    y0 = np.clip(np.round(b[:, 1]).astype(np.int64), 0, H)
    x1 = np.clip(np.maximum(np.round(b[:, 2]).astype(np.int64), x0 + 1), 0, W)
    y1 = np.clip(np.maximum(np.round(b[:, 3]).astype(np.int64), y0 + 1), 0, H)
    area = (x1 - x0) * (y1 - y0)
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    full = np.maximum(np.round(b[:, 2] - b[:, 0]), 1) * np.maximum(np.round(b[:, 3] - b[:, 1]), 1)
    # a box cut by the slide edge counts the missing part as non-tissue
    return np.where(area > 0, inside / np.maximum(full, area), 0.0).astype(np.float32)


def mask_mpp_for(tile_um: float, params: TissueParams, *, base_mpp: float) -> float:
    """The thumbnail mpp: ``params.mpp`` but at least 8 mask px per tile side, never finer than base."""
    return max(min(params.mpp, tile_um / 8.0), base_mpp) if math.isfinite(tile_um) else params.mpp
