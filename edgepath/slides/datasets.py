"""Torch datasets over slide tiles, cross-magnification pairs and tile folders (worker-safe)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from edgepath.errors import ConfigError
from edgepath.slides.reader import Slide, _to_rgb, open_slide

Item = tuple[str, float, float]

#: Image files ``TileFolderDataset`` reads.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


class _Handles:
    """Open slides of this process, keyed by path (rebuilt after fork or unpickling)."""

    def __init__(self, mpp_overrides: dict[str, float] | None = None) -> None:
        self.overrides = dict(mpp_overrides or {})
        self._pid = os.getpid()
        self._open: dict[str, Slide] = {}

    def get(self, path: str) -> Slide:
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        s = self._open.get(path)
        if s is None:
            from edgepath.slides.mpp import lookup_override

            s = self._open[path] = open_slide(path, mpp=lookup_override(self.overrides, path))
        return s

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {"overrides": self.overrides, "_pid": None, "_open": {}}


def _items(items: Sequence[Sequence[Any]]) -> list[Item]:
    out = []
    for it in items:
        if len(it) != 3:
            raise ConfigError(f"dataset items are (slide path, x0, y0); got {it!r}")
        out.append((str(it[0]), float(it[1]), float(it[2])))
    return out


class TileDataset(Dataset):
    """Tiles at ``mpp`` over (slide path, x0, y0) items, in the items' order.

    Each DataLoader worker opens its own slide handles on first use.

    Args:
        items: ``(slide path, x0, y0)`` with level-0 corners (``TileGrid.items()``).
        mpp: Tile resolution (µm/px).
        tile_px: Tile side.
        transform: Applied to the uint8 HxWx3 tile; its output is returned.
        mpp_overrides: Per-slide base mpp (``read_mpp_csv``) for slides lacking it.
    """

    def __init__(
        self,
        items: Sequence[Sequence[Any]],
        *,
        mpp: float,
        tile_px: int = 224,
        transform: Callable[[np.ndarray], Any] | None = None,
        mpp_overrides: dict[str, float] | None = None,
    ) -> None:
        self.items = _items(items)
        self.mpp, self.tile_px, self.transform = float(mpp), int(tile_px), transform
        self._handles = _Handles(mpp_overrides)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        path, x0, y0 = self.items[i]
        tile = self._handles.get(path).read_tile(x0, y0, mpp=self.mpp, tile_px=self.tile_px)
        return self.transform(tile) if self.transform else tile

    def close(self) -> None:
        self._handles.close()


class PairDataset(Dataset):
    """Cross-magnification pairs: ``(low, high)`` with high of shape (k*k, H, W, 3).

    Args:
        items: ``(slide path, x0, y0)`` corners of low tiles (``xmag_pairs(...).items()``).
        low_mpp: Low-magnification resolution (2.0 ≈ 5x).
        high_mpp: High-magnification resolution (0.5 ≈ 20x); ``low_mpp / high_mpp`` is k.
        tile_px: Side of every tile.
        transform: Called as ``transform(low, high)``; its output is returned.
        mpp_overrides: Per-slide base mpp.
    """

    def __init__(
        self,
        items: Sequence[Sequence[Any]],
        *,
        low_mpp: float = 2.0,
        high_mpp: float = 0.5,
        tile_px: int = 224,
        transform: Callable[[np.ndarray, np.ndarray], Any] | None = None,
        mpp_overrides: dict[str, float] | None = None,
    ) -> None:
        from edgepath.slides.xmag import xmag_factor

        self.k = xmag_factor(low_mpp, high_mpp)
        self.items = _items(items)
        self.low_mpp, self.high_mpp, self.tile_px = float(low_mpp), float(high_mpp), int(tile_px)
        self.transform = transform
        self._handles = _Handles(mpp_overrides)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        from edgepath.slides.xmag import read_pair

        path, x0, y0 = self.items[i]
        low, high = read_pair(
            self._handles.get(path),
            (x0, y0),
            low_mpp=self.low_mpp,
            high_mpp=self.high_mpp,
            tile_px=self.tile_px,
        )
        return self.transform(low, high) if self.transform else (low, high)

    def close(self) -> None:
        self._handles.close()


class TileFolderDataset(Dataset):
    """Image files of a folder (recursive, sorted), as uint8 ``tile_px``² RGB tiles.

    Alpha is composited over white; images of another size are resized once (antialiased).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        tile_px: int = 224,
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(f"{root}: not a folder of tiles; pass an existing folder")
        self.files = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self.files:
            raise ConfigError(f"{root}: no tile images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.tile_px, self.transform = int(tile_px), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            rgb = _to_rgb(im)
        if rgb.size != (self.tile_px, self.tile_px):
            rgb = rgb.resize((self.tile_px, self.tile_px), Image.Resampling.BILINEAR)
        tile = np.asarray(rgb)
        return self.transform(tile) if self.transform else tile


class ShardedTiles(IterableDataset):
    """Iterates a map-style dataset in contiguous shards, one per (rank, DataLoader worker).

    Each worker reads a contiguous run of items (neighbouring tiles share decoded slide tiles
    in OpenSlide's cache); concatenating the shards in worker order gives the items' order.

    Args:
        dataset: Any map-style dataset (``TileDataset``, ``PairDataset`` …).
        rank: This process's rank in a distributed job.
        world_size: Number of processes.
    """

    def __init__(self, dataset: Dataset, *, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} must lie in [0, world_size={world_size})")
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def shard(self) -> range:
        """The item indices of this (rank, worker)."""
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info else (1, 0)
        parts, part = self.world_size * workers, self.rank * workers + wid
        per = math.ceil(len(self.dataset) / parts)  # type: ignore[arg-type]
        start = min(part * per, len(self.dataset))  # type: ignore[arg-type]
        return range(start, min(start + per, len(self.dataset)))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        for i in self.shard():
            yield self.dataset[i]


def to_tensor_hwc(tile: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 → uint8 3xHxW tensor (a cheap default transform)."""
    return torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))
