"""Tiling at a target resolution: exact level-0 footprints, tissue filtering, coordinate files."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ConfigError, SlideReadError
from edgepath.slides.reader import Slide, open_slide
from edgepath.slides.tissue import TissueParams, box_fractions, mask_mpp_for, tissue_mask

log = logging.getLogger(__name__)

#: Default minimum tissue fraction of a tile's area for it to be kept.
MIN_TISSUE = 0.5
#: Longest side of a tissue mask (16k px: 64 MB of thumbnail at most).
MAX_MASK_PX = 16_384
#: The ``coords`` attributes of TRIDENT's patch files (``trident.IO.coords_to_h5``) and CLAM's
#: ``patch_level``, as ``TileGrid.trident_attrs`` writes them.
TRIDENT_ATTRS = (
    "patch_size",
    "patch_size_level0",
    "level0_magnification",
    "target_magnification",
    "overlap",
    "name",
    "patch_level",
    "level0_width",
    "level0_height",
)


@dataclasses.dataclass(frozen=True, eq=False)
class TileGrid:
    """Tiles of one slide at one resolution.

    Attributes:
        coords: (N, 2) int64 level-0 top-left corners (x, y), row-major order.
        tile_px: Tile side in pixels at ``mpp``.
        mpp: Target µm/px of the tiles.
        level0_tile_size: Exact level-0 side of a tile, ``tile_px * mpp / base_mpp`` (float).
        mpp_source: Where the slide's base mpp came from (``property``, ``tiff-resolution``,
            ``override``).
        base_mpp: The slide's level-0 µm/px.
        slide: The slide's path.
        level: Pyramid level tiles are read from.
        tissue: (N,) float32 tissue fraction of each tile.
        min_tissue: The threshold used.
        mask: Tissue mask of the whole slide at ``mask_mpp`` (for overlays), or None.
        mask_mpp: Resolution of ``mask``.
        extra: Other attributes (the cross-magnification factor for pairs).
        dimensions: The slide's level-0 (width, height), when known.
    """

    coords: np.ndarray
    tile_px: int
    mpp: float
    level0_tile_size: float
    mpp_source: str
    base_mpp: float
    slide: str
    level: int = 0
    tissue: np.ndarray | None = None
    min_tissue: float = MIN_TISSUE
    mask: np.ndarray | None = dataclasses.field(default=None, repr=False)
    mask_mpp: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    dimensions: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def trident_attrs(self) -> dict[str, Any]:
        """The ``coords`` attributes TRIDENT's patching writes (``trident.IO.coords_to_h5``), with
        TRIDENT's values, and CLAM's ``patch_level``.

        TRIDENT's pixel size is 10 / magnification: ``target_magnification`` is 10 / mpp as an
        integer (TRIDENT's ``--mag``), ``level0_magnification`` TRIDENT's own rounding of the
        slide's mpp (``trident_magnification``). ``patch_size_level0`` is the tiles' true level-0
        side, rounded; TRIDENT's nominal ``patch_size * level0 // target`` differs from it only
        where a scanner's mpp is off its nominal magnification (e.g. 0.2527 µm/px: 443, not 448).
        """
        out: dict[str, Any] = {
            "patch_size": int(self.tile_px),
            "patch_size_level0": int(round(self.level0_tile_size)),
            "level0_magnification": trident_magnification(self.base_mpp),
            "target_magnification": max(1, int(round(10 / self.mpp))),
            "overlap": 0,
            "name": Path(self.slide).stem,
            "patch_level": int(self.level),  # CLAM: read patch_size px at this level
        }
        if self.dimensions is not None:
            out["level0_width"], out["level0_height"] = (int(v) for v in self.dimensions)
        return out

    def attrs(self) -> dict[str, Any]:
        """The tiling attributes written next to ``coords``: edgepath's, TRIDENT's and CLAM's."""
        return {
            "slide": self.slide,
            "mpp": self.mpp,
            "tile_px": self.tile_px,
            "level0_tile_size": self.level0_tile_size,
            "base_mpp": self.base_mpp,
            "mpp_source": self.mpp_source,
            "read_level": self.level,
            "min_tissue": self.min_tissue,
            **self.trident_attrs(),
            **self.extra,
        }

    def items(self) -> list[tuple[str, int, int]]:
        """``(slide, x0, y0)`` triples for ``TileDataset``."""
        return [(self.slide, int(x), int(y)) for x, y in self.coords]


def trident_magnification(mpp: float) -> int:
    """TRIDENT's magnification of a slide's level-0 mpp (``WSI._fetch_magnification``): < 0.16
    µm/px -> 80, < 0.2 -> 60, < 0.3 -> 40, < 0.6 -> 20, < 1.2 -> 10, < 2.4 -> 5. TRIDENT refuses
    coarser slides; here they get 10 / mpp, its pixel-size rule, as an integer."""
    for limit, mag in ((0.16, 80), (0.2, 60), (0.3, 40), (0.6, 20), (1.2, 10), (2.4, 5)):
        if mpp < limit:
            return mag
    return max(1, int(round(10 / mpp)))


def grid_coords(width: int, height: int, footprint: float) -> np.ndarray:
    """Row-major level-0 corners of the non-overlapping tiles that fit wholly in the slide."""
    nx, ny = int(math.floor(width / footprint + 1e-9)), int(math.floor(height / footprint + 1e-9))
    xs = np.floor(np.arange(nx) * footprint).astype(np.int64)
    ys = np.floor(np.arange(ny) * footprint).astype(np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)


def slide_tissue(slide: Slide, *, mpp: float, params: TissueParams) -> tuple[np.ndarray, float]:
    """The tissue mask of a slide at ``mpp`` and the level-0 → mask scale.

    The mask is kept under ``MAX_MASK_PX`` on its long side (coarser ``mpp`` if needed).
    """
    mpp = max(mpp, max(slide.dimensions) * slide.mpp / MAX_MASK_PX)
    thumb = slide.read_thumbnail(mpp)
    mask = tissue_mask(thumb, dataclasses.replace(params, mpp=mpp))
    return mask, mask.shape[1] / slide.dimensions[0]


def tile_slide(
    slide: Slide | str | os.PathLike[str],
    *,
    mpp: float,
    tile_px: int = 224,
    min_tissue: float = MIN_TISSUE,
    tissue: TissueParams | None = TissueParams(),
    allow_upsample: bool = False,
) -> TileGrid:
    """Tile a slide at ``mpp`` and keep tiles with at least ``min_tissue`` tissue.

    Args:
        slide: A ``Slide`` or a path.
        mpp: Target µm/px (0.5 ≈ 20x, 2.0 ≈ 5x).
        tile_px: Tile side at ``mpp``.
        min_tissue: Minimum tissue fraction of a tile (0 keeps every tile).
        tissue: Detection parameters; None keeps every tile without detection.
        allow_upsample: Allow a target finer than the slide's base resolution.

    Raises:
        SlideReadError: Unreadable slide, unusable mpp, target too fine, or no tissue.
    """
    if not isinstance(slide, Slide):
        slide = open_slide(slide)
    if tile_px < 1:
        raise ConfigError(f"tile_px {tile_px} must be a positive number of pixels")
    if not 0 <= min_tissue <= 1:
        raise ConfigError(f"min_tissue {min_tissue} must be a fraction between 0 and 1")
    slide.check_mpp(mpp, allow_upsample=allow_upsample)
    fp = tile_px * mpp / slide.mpp
    W, H = slide.dimensions
    coords = grid_coords(W, H, fp)
    if len(coords) == 0:
        raise SlideReadError(
            f"{slide.path}: {W}x{H} px at {slide.mpp:g} µm/px is smaller than one "
            f"{tile_px} px tile at {mpp:g} µm/px; use a smaller --tile-px or a finer --mpp"
        )
    mask = mask_mpp = None
    if tissue is not None:
        mask_mpp = mask_mpp_for(tile_px * mpp, tissue, base_mpp=slide.mpp)
        mask, scale = slide_tissue(slide, mpp=mask_mpp, params=tissue)
        mask_mpp = slide.mpp / scale  # as read (capped for huge slides)
        boxes = np.concatenate([coords, coords + fp], axis=1)
        frac = box_fractions(mask, boxes, scale=scale)
        keep = frac >= min_tissue if min_tissue > 0 else np.ones(len(coords), bool)
        if not keep.any():
            raise SlideReadError(
                f"{slide.path}: no tissue found (0 of {len(coords)} tiles have >= "
                f"{min_tissue:.0%} tissue); check the slide, or lower --min-tissue"
            )
        coords, frac = coords[keep], frac[keep]
    else:
        frac = np.ones(len(coords), dtype=np.float32)
    log.info("%s: %d tiles at %g µm/px (%s)", slide.path, len(coords), mpp, slide.mpp_source)
    return TileGrid(
        coords=coords,
        tile_px=int(tile_px),
        mpp=float(mpp),
        level0_tile_size=float(fp),
        mpp_source=slide.mpp_source,
        base_mpp=slide.mpp,
        slide=str(slide.path),
        level=slide.best_level_for_mpp(mpp),
        tissue=frac,
        min_tissue=float(min_tissue),
        mask=mask,
        mask_mpp=mask_mpp,
        dimensions=(int(W), int(H)),
    )


def write_coords(path: str | os.PathLike[str], grid: TileGrid) -> Path:
    """Write ``coords`` (N×2 int64, level-0 px) + tiling attributes + ``tissue`` to HDF5, atomically."""
    import h5py

    from edgepath.io import atomic_path

    out = Path(path)
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("coords", data=grid.coords.astype(np.int64))
        for k, v in grid.attrs().items():
            ds.attrs[k] = v
            f.attrs[k] = v
        if grid.tissue is not None:
            f.create_dataset("tissue", data=grid.tissue.astype(np.float32))
    return out


def read_coords(path: str | os.PathLike[str]) -> TileGrid:
    """Read a coordinates file written by ``write_coords``."""
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            coords = f["coords"][...].astype(np.int64)
            a = dict(f["coords"].attrs)
            tissue = f["tissue"][...] if "tissue" in f else None
    except (OSError, KeyError) as exc:
        raise SlideReadError(f"{p}: not an edgepath coordinates file ({exc})") from None

    def s(v: Any) -> Any:
        return v.decode() if isinstance(v, bytes) else v

    known = {"slide", "mpp", "tile_px", "patch_size", "level0_tile_size", "patch_size_level0"}
    known |= {"base_mpp", "mpp_source", "read_level", "min_tissue", *TRIDENT_ATTRS}
    dims = (int(a["level0_width"]), int(a["level0_height"])) if "level0_width" in a else None
    return TileGrid(
        coords=coords,
        tile_px=int(a["tile_px"]),
        mpp=float(a["mpp"]),
        level0_tile_size=float(a["level0_tile_size"]),
        mpp_source=str(s(a["mpp_source"])),
        base_mpp=float(a["base_mpp"]),
        slide=str(s(a["slide"])),
        level=int(a.get("read_level", 0)),
        tissue=tissue,
        min_tissue=float(a.get("min_tissue", MIN_TISSUE)),
        extra={k: s(v) for k, v in a.items() if k not in known},
        dimensions=dims,
    )


def _patch_side_level0(a: dict[str, Any], slide: Slide, path: Path) -> float:
    """A patch file's tile side in level-0 px: TRIDENT's (and edgepath's) ``patch_size_level0``,
    else CLAM's ``patch_size`` px at ``patch_level`` (times its ``downsample``)."""
    if "patch_size_level0" in a:
        return float(a["patch_size_level0"])
    if "patch_size" in a and "patch_level" in a:
        level = int(a["patch_level"])
        down = a.get("downsample")
        if down is None:
            if not 0 <= level < slide.level_count:
                raise SlideReadError(f"{path}: patch_level {level} is not a level of {slide.path}")
            down = slide.level_downsamples[level]
        return float(a["patch_size"]) * float(np.ravel(down)[0])
    raise SlideReadError(
        f"{path}: 'coords' has neither patch_size_level0 (TRIDENT) nor patch_size + patch_level "
        "(CLAM); pass a TRIDENT or CLAM patch file, or tile with edgepath"
    )


def read_patch_file(
    path: str | os.PathLike[str],
    slide: Slide,
    *,
    mpp: float,
    tile_px: int,
    tolerance: float = 0.05,
) -> TileGrid:
    """The tiles of an existing patch file, to be read at ``mpp`` and ``tile_px``: no retiling.

    Takes TRIDENT's ``patches/<slide>_patches.h5``, CLAM's ``patches/<slide>.h5`` and
    ``edgepath slides tile``'s files: ``coords`` (N×2, level-0 top-left corners) and the tile
    side in level-0 px (``patch_size_level0``, or CLAM's ``patch_size`` at ``patch_level``).

    Raises:
        SlideReadError: Not a patch file.
        ConfigError: Its tiles are not the model's (side off by more than ``tolerance``).
    """
    import h5py

    p = Path(path)
    try:
        with h5py.File(p, "r", locking=False) as f:
            coords = np.asarray(f["coords"][()], dtype=np.int64).reshape(-1, 2)
            a = {
                k: (v.decode() if isinstance(v, bytes) else v) for k, v in f["coords"].attrs.items()
            }
    except (OSError, KeyError) as exc:
        raise SlideReadError(f"{p}: not a patch file with a 'coords' dataset ({exc})") from None
    side = _patch_side_level0(a, slide, p)
    want = tile_px * mpp / slide.mpp
    if abs(side / want - 1) > tolerance:
        raise ConfigError(
            f"{p}: its patches are {side:g} level-0 px wide ({side * slide.mpp / tile_px:.3g} "
            f"µm/px at {tile_px} px), the model reads {tile_px} px at {mpp:g} µm/px ({want:.1f} "
            f"level-0 px): tile again at the model's resolution (TRIDENT: --mag "
            f"{max(1, round(10 / mpp))} --patch_size {tile_px})"
        )
    slide.check_mpp(mpp)
    return TileGrid(
        coords=coords,
        tile_px=int(tile_px),
        mpp=float(mpp),
        level0_tile_size=float(want),
        mpp_source=slide.mpp_source,
        base_mpp=slide.mpp,
        slide=str(slide.path),
        level=slide.best_level_for_mpp(mpp),
        min_tissue=0.0,
        extra={"coords_file": str(p)},
        dimensions=(int(slide.dimensions[0]), int(slide.dimensions[1])),
    )
