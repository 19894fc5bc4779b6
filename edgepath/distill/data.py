"""Training and held-out items from slides (tissue tiles, XMAG regions) or from tile folders.

Items are level-0 boxes on a stride grid kept where the slide's tissue mask covers at least
``data.min_tissue`` of the box. Each slide's bottom band (``data.holdout`` of its height, at
least one box high) is held out for the final fidelity; training boxes never overlap it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgepath.distill.views import resize, to_float
from edgepath.errors import ConfigError, SlideReadError

log = logging.getLogger(__name__)

SLIDE_EXTS = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
}
TILE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass(frozen=True)
class Item:
    """One tile or region: its file and level-0 top-left corner (0, 0 for tile files)."""

    path: str
    x0: float = 0.0
    y0: float = 0.0


def list_slides(folder: str | Path) -> list[Path]:
    """Slide files in ``folder`` (or the one file given), sorted."""
    p = Path(folder)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError(f"{p}: no such slide folder; pass --slides DIR with your slides")
    found = sorted(f for f in p.rglob("*") if f.suffix.lower() in SLIDE_EXTS and f.is_file())
    if not found:
        raise ConfigError(
            f"{p}: no slides found ({', '.join(sorted(SLIDE_EXTS))}); pass --slides DIR"
        )
    return found


def _boxes(width: int, height: int, side: float, stride: float, y_lo: float, y_hi: float):
    """Top-left corners of side x side boxes on a stride grid with y0 in [y_lo, y_hi - side]."""
    step = max(side * stride, 1.0)
    xs = np.arange(0.0, width - side + 1e-6, step)
    ys = np.arange(y_lo, y_hi - side + 1e-6, step)
    if len(xs) == 0 or len(ys) == 0:
        return np.zeros((0, 2))
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def slide_items(
    path: Path,
    *,
    mpp: float,
    tile_px: int,
    stride: float,
    eval_stride: float,
    holdout: float,
    min_tissue: float,
) -> tuple[list[Item], list[Item]]:
    """Training and held-out boxes of ``tile_px`` at ``mpp`` on one slide's tissue."""
    from edgepath.slides.reader import open_slide
    from edgepath.slides.tissue import TissueParams, box_fractions, mask_mpp_for, tissue_mask

    with open_slide(path) as slide:
        if slide.mpp > mpp * 1.01:
            raise SlideReadError(
                f"{path}: base resolution {slide.mpp:.3f} mpp is coarser than the {mpp} mpp "
                "this recipe reads; use slides scanned at a higher magnification"
            )
        side = tile_px * mpp / slide.mpp
        params = TissueParams()
        mmpp = mask_mpp_for(tile_px * mpp, params, base_mpp=slide.mpp)
        mask = tissue_mask(slide.read_thumbnail(mmpp), TissueParams(mpp=mmpp))
        width, height = slide.dimensions
    scale = mask.shape[1] / width
    cut = height * (1 - holdout) if holdout > 0 else float(height)
    if holdout > 0 and height - cut < side:
        cut = height - side  # the band must hold at least one box
    out = []
    for lo, hi, st in ((0.0, cut, stride), (cut, float(height), eval_stride)):
        b = _boxes(width, height, side, st, lo, hi)
        if len(b):
            frac = box_fractions(mask, np.concatenate([b, b + side], axis=1), scale=scale)
            b = b[frac >= min_tissue]
        out.append([Item(str(path), float(x), float(y)) for x, y in b])
    if holdout <= 0:
        out[1] = []
    return out[0], out[1]


def folder_items(folder: str | Path, *, holdout: float) -> tuple[list[Item], list[Item]]:
    """Tile files of a folder: a stable hash of each name decides held-out (``holdout``) or not."""
    p = Path(folder)
    if not p.is_dir():
        raise ConfigError(f"{p}: no such tile folder; pass --tiles DIR with tile images")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in TILE_EXTS and f.is_file())
    if not files:
        raise ConfigError(f"{p}: no tile images found ({', '.join(sorted(TILE_EXTS))})")
    train, held = [], []
    for f in files:
        h = int(hashlib.sha256(f.relative_to(p).as_posix().encode()).hexdigest()[:8], 16)
        (held if h / 0xFFFFFFFF < holdout else train).append(Item(str(f)))
    return train, held


class Source:
    """Reads items as float [0, 1] CHW tensors, memoising decoded pixels (up to ``memo_mb``).

    Args:
        kind: ``tiles`` (one tile per item at ``mpp``) or ``regions`` (XMAG: a low tile at
            ``low_mpp`` and its k x k tiles at ``high_mpp``).
        train, heldout: The items.
        tile_px: Tile side in px.
        mpp, low_mpp, high_mpp: Resolutions.
        from_slides: Items are slide boxes (else tile files).
    """

    def __init__(
        self,
        kind: str,
        train: list[Item],
        heldout: list[Item],
        *,
        tile_px: int,
        mpp: float,
        low_mpp: float = 2.0,
        high_mpp: float = 0.5,
        from_slides: bool = True,
        memo_mb: int = 1024,
    ) -> None:
        if not train:
            raise ConfigError(
                "no training tiles found on tissue; lower data.min_tissue or add slides / tiles"
            )
        self.kind = kind
        self.train, self.heldout = train, heldout
        self.tile_px, self.mpp = tile_px, mpp
        self.low_mpp, self.high_mpp = low_mpp, high_mpp
        self.k = int(round(low_mpp / high_mpp))
        self.from_slides = from_slides
        self._memo: dict[tuple[str, Item], np.ndarray] = {}
        self._memo_left = memo_mb << 20
        self._slides: dict[str, object] = {}
        self._recent: OrderedDict[Item, np.ndarray] = OrderedDict()

    def fingerprint(self) -> dict:
        """What the tiling is: used to validate the teacher-feature cache."""
        h = hashlib.sha256(json.dumps([[i.path, i.x0, i.y0] for i in self.train]).encode())
        return {
            "kind": self.kind,
            "tile_px": self.tile_px,
            "mpp": self.mpp,
            "low_mpp": self.low_mpp,
            "high_mpp": self.high_mpp,
            "n": len(self.train),
            "items_sha256": h.hexdigest(),
        }

    def _slide(self, path: str):
        from edgepath.slides.reader import open_slide

        if path not in self._slides:
            self._slides[path] = open_slide(path)
        return self._slides[path]

    def _read(self, tag: str, item: Item, mpp: float, px: int) -> np.ndarray:
        key = (f"{tag}{mpp}:{px}", item)
        arr = self._memo.get(key)
        if arr is not None:
            return arr
        if self.from_slides:
            arr = self._slide(item.path).read_tile(item.x0, item.y0, mpp=mpp, tile_px=px)
        else:
            arr = _read_image(item.path, px)
        if arr.nbytes <= self._memo_left:
            self._memo[key] = arr
            self._memo_left -= arr.nbytes
        return arr

    def tile(self, item: Item) -> torch.Tensor:
        """The tile (3, tile_px, tile_px) at ``mpp`` in [0, 1]."""
        return to_float(self._read("t", item, self.mpp, self.tile_px))

    def low(self, item: Item) -> torch.Tensor:
        """XMAG student view: the region as one tile at ``low_mpp`` (3, px, px)."""
        return to_float(self._read("l", item, self.low_mpp, self.tile_px))

    def high(self, item: Item) -> torch.Tensor:
        """XMAG teacher view: the k x k tiles at ``high_mpp`` in row-major order (k², 3, px, px).

        The last 64 regions are kept (the cache computes every fixed view of a batch in turn).
        """
        k, px = self.k, self.tile_px
        big = self._recent.get(item)
        if big is None:
            big = self._slide(item.path).read_tile(
                item.x0, item.y0, mpp=self.high_mpp, tile_px=k * px
            )
            self._recent[item] = big
            if len(self._recent) > 64:
                self._recent.popitem(last=False)
        cells = big.reshape(k, px, k, px, 3).transpose(0, 2, 1, 3, 4).reshape(k * k, px, px, 3)
        return to_float(cells)

    def close(self) -> None:
        """Close the slide handles."""
        for s in self._slides.values():
            s.close()
        self._slides.clear()


def _read_image(path: str, px: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise SlideReadError(f"{path}: cannot read this tile image ({exc})") from None
    h, w = rgb.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = to_float(rgb[y : y + s, x : x + s])
    return resize(crop, px).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def build_source(
    kind: str, *, slides: str | Path | None, tiles: str | Path | None, data, mpp: float
) -> Source:
    """The item source of a run from ``--slides`` or ``--tiles`` and the recipe's data section.

    ``kind`` is the recipe's ``source_kind``: ``tiles`` (one tile per item, read at ``mpp``) or
    ``regions`` (a ``data.low_mpp`` tile and the same region at ``data.high_mpp``).
    """
    if (slides is None) == (tiles is None):
        raise ConfigError("pass exactly one of --slides DIR or --tiles DIR")
    if kind not in ("tiles", "regions"):
        raise ValueError(f"source kind {kind!r}: expected 'tiles' or 'regions'")
    if kind == "regions":
        if tiles is not None:
            raise ConfigError(
                "this recipe reads each region at two magnifications from the slide pyramid: "
                "pass --slides DIR, not --tiles"
            )
        train, held = [], []
        for p in list_slides(slides):
            t, h = slide_items(
                p,
                mpp=data.low_mpp,
                tile_px=data.tile_px,
                stride=data.stride,
                eval_stride=data.eval_stride,
                holdout=data.holdout,
                min_tissue=data.min_tissue,
            )
            train += t
            held += h
        src = Source(
            "regions",
            train,
            held,
            tile_px=data.tile_px,
            mpp=data.high_mpp,
            low_mpp=data.low_mpp,
            high_mpp=data.high_mpp,
        )
    elif slides is not None:
        train, held = [], []
        for p in list_slides(slides):
            t, h = slide_items(
                p,
                mpp=mpp,
                tile_px=data.tile_px,
                stride=data.stride,
                eval_stride=data.eval_stride,
                holdout=data.holdout,
                min_tissue=data.min_tissue,
            )
            train += t
            held += h
        src = Source("tiles", train, held, tile_px=data.tile_px, mpp=mpp)
    else:
        train, held = folder_items(tiles, holdout=data.holdout)
        src = Source("tiles", train, held, tile_px=data.tile_px, mpp=mpp, from_slides=False)
    if data.max_items and len(src.train) > data.max_items:  # an even, deterministic subset
        src.train = [src.train[i] for i in spread(len(src.train), data.max_items)]
    log.info("%d training and %d held-out %s", len(src.train), len(src.heldout), src.kind)
    return src


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k >= n``).

    Item lists run slide by slide, row by row: an even spread, not the first ``k``, samples every
    slide (training subsets, centring means, held-out evaluation).
    """
    if k >= n:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, k).round().astype(int))]
