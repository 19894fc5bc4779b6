"""Overlay thumbnails: the slide with its tissue mask and tile grid drawn on it, to check by eye."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgepath.slides.reader import Slide, open_slide
from edgepath.slides.tiling import TileGrid

#: Longest side of an overlay thumbnail in pixels.
OVERLAY_PX = 1200


def render_overlay(slide: Slide, grid: TileGrid, *, max_px: int = OVERLAY_PX):
    """A PIL image: slide thumbnail, non-tissue dimmed, tissue outlined, tiles boxed."""
    from PIL import Image, ImageDraw, ImageFilter

    W, H = slide.dimensions
    mpp = max(slide.mpp, max(W, H) * slide.mpp / max_px)
    thumb = Image.fromarray(slide.read_thumbnail(mpp))
    scale = thumb.width / W
    if grid.mask is not None:
        mask = Image.fromarray(grid.mask.astype(np.uint8) * 255).resize(
            thumb.size, Image.Resampling.NEAREST
        )
        dim = Image.blend(thumb, Image.new("RGB", thumb.size, (40, 40, 60)), 0.45)
        thumb = Image.composite(thumb, dim, mask)
        edge = mask.filter(ImageFilter.FIND_EDGES)
        thumb.paste((0, 170, 0), (0, 0), edge)
    draw = ImageDraw.Draw(thumb)
    side = grid.level0_tile_size * scale
    for x, y in grid.coords.tolist():
        x0, y0 = x * scale, y * scale
        draw.rectangle((x0, y0, x0 + side, y0 + side), outline=(255, 200, 0), width=1)
    return thumb


def write_overlay(
    grid: TileGrid,
    out: str | os.PathLike[str],
    *,
    slide: Slide | None = None,
    max_px: int = OVERLAY_PX,
) -> Path:
    """Write the overlay PNG of ``grid`` (atomically) and return its path."""
    from edgepath.io import atomic_path

    s = slide if slide is not None else open_slide(grid.slide)
    img = render_overlay(s, grid, max_px=max_px)
    path = Path(out)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG", optimize=True)
    return path
