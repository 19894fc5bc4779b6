"""Robustness runs: PLISM from disk, or the synthetic stain/scanner domain suite.

PLISM on disk, either layout (owkin's release ships the first):

- ``DIR/*.h5``: one HDF5 per slide named ``{staining}_{scanner}_to_GMH_S60.tif.h5``, one
  (224, 224, 3) uint8 dataset per tile keyed by its tile id (a single 4-D ``tiles``/``imgs``
  dataset is read too, rows being the aligned tiles);
- ``DIR/{slide}/*.png|jpg``: one folder per slide, tile files named by tile id.

Tiles are aligned by id across slides (the ids every slide has, sorted), then a fixed seeded
subset is taken (``n_tiles``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.bench import plism
from edgepath.errors import ConfigError, SlideReadError

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_STACK_KEYS = ("tiles", "imgs", "images")


class PlismSlide:
    """One PLISM slide on disk: its tile ids and a reader for a list of ids."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._ids: list[str] | None = None

    @property
    def ids(self) -> list[str]:
        """Tile ids in this slide."""
        if self._ids is None:
            if self.path.is_dir():
                self._ids = sorted(
                    p.stem for p in self.path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES
                )
            else:
                import h5py

                with h5py.File(self.path, "r") as f:
                    stack = next((k for k in _STACK_KEYS if k in f and f[k].ndim == 4), None)
                    if stack is not None:
                        self._ids = [f"{i:06d}" for i in range(f[stack].shape[0])]
                    else:
                        self._ids = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
        return self._ids

    def read(self, ids: list[str]) -> np.ndarray:
        """uint8 (len(ids), H, W, 3) tiles."""
        if self.path.is_dir():
            from PIL import Image

            files = {p.stem: p for p in self.path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
            out = []
            for i in ids:
                with Image.open(files[i]) as im:
                    out.append(np.asarray(im.convert("RGB")))
            return np.stack(out)
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                stack = next((k for k in _STACK_KEYS if k in f and f[k].ndim == 4), None)
                if stack is not None:
                    idx = np.asarray([int(i) for i in ids])
                    order = np.argsort(idx)
                    data = f[stack][idx[order].tolist()]
                    tiles = np.empty_like(data)
                    tiles[order] = data
                else:
                    tiles = np.stack([f[i][()] for i in ids])
        except OSError as exc:
            raise SlideReadError(f"{self.path}: cannot read PLISM tiles ({exc})") from None
        if tiles.ndim != 4 or tiles.shape[-1] < 3:
            raise SlideReadError(f"{self.path}: expected (H, W, 3) tiles, got {tiles.shape[1:]}")
        return np.ascontiguousarray(tiles[..., :3].astype(np.uint8))


def find_plism(folder: str | Path) -> list[PlismSlide]:
    """The slides of a PLISM folder (HDF5 files or one folder of tiles per slide)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: PLISM folder not found; pass the folder holding the slides")
    slides = [PlismSlide(p.name.removesuffix(".h5"), p) for p in sorted(folder.glob("*.h5"))]
    slides += [
        PlismSlide(p.name, p)
        for p in sorted(folder.iterdir())
        if p.is_dir() and any(q.suffix.lower() in _IMAGE_SUFFIXES for q in p.iterdir())
    ]
    if len(slides) < 2:
        raise ConfigError(
            f"{folder}: found {len(slides)} PLISM slides; expected *.h5 files or one folder of "
            "tiles per slide (owkin's PLISM release: 91 slides)"
        )
    return slides


def aligned_ids(slides: list[PlismSlide], *, n_tiles: int | None, seed: int = 0) -> list[str]:
    """Tile ids present in every slide, sorted, then a seeded subset of ``n_tiles``."""
    common = set(slides[0].ids)
    for s in slides[1:]:
        common &= set(s.ids)
    ids = sorted(common)
    if not ids:
        raise ConfigError("the PLISM slides share no tile id; are they from the same release?")
    idx = plism.subset_indices(len(ids), n_tiles, seed=seed)
    return [ids[i] for i in idx]


def plism_robustness(
    engine: Any,
    folder: str | Path,
    *,
    n_tiles: int | None = plism.DEFAULT_SUBSET,
    seed: int = 0,
    batch: int = 32,
    chunk: int = 2048,
    precision: str = "float32",
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed the aligned PLISM tiles of every slide and compute the robustness metrics."""
    from edgepath.bench.embedding import embed_array

    slides = find_plism(folder)
    ids = aligned_ids(slides, n_tiles=n_tiles, seed=seed)
    feats: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for i, s in enumerate(slides):
        feats[s.name] = embed_array(engine, s.read(ids), batch=batch)
        if on_progress:
            on_progress("embedding slides", i + 1, len(slides))
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = plism.evaluate(
        feats,
        chunk=chunk,
        precision=precision,
        on_pair=(lambda d, n: on_progress("slide pairs", d, n)) if on_progress else None,
    )
    res.update(
        suite="plism",
        source=str(folder),
        subset_seed=seed,
        seconds={"embed": t_embed, "metrics": time.perf_counter() - t0},
    )
    return res


def synthetic_robustness(
    engine: Any,
    *,
    n_tiles: int | None = None,
    base_px: int = 224,
    seed: int = 0,
    batch: int = 32,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The synthetic domain suite on the shipped real tissue tiles (see ``bench.domains``)."""
    from edgepath.bench import domains as D
    from edgepath.bench.embedding import embed_array

    tiles = D.base_tiles(base_px, n=n_tiles, seed=seed)
    doms = D.default_domains()
    images = D.make_domains(tiles, domains=doms, seed=seed)
    feats = {}
    t0 = time.perf_counter()
    for i, d in enumerate(doms):
        feats[d.name] = embed_array(engine, images[d.name], batch=batch)
        if on_progress:
            on_progress("embedding domains", i + 1, len(doms))
    t_embed = time.perf_counter() - t0
    res = plism.evaluate(feats, keys={d.name: d.key for d in doms})
    res.update(
        suite="synthetic",
        source=f"{len(tiles)} real tissue tiles of {base_px} px (edgepath.data), seed {seed}",
        domains=[{"name": d.name, "kind": d.kind} for d in doms],
        subset_seed=seed,
        seconds={"embed": t_embed},
    )
    return res


def as_result(res: dict[str, Any], info: dict[str, Any], *, threads: int | None) -> dict[str, Any]:
    """A robustness run as a result row set (``kind`` robustness, model label, machine)."""
    from edgepath.bench.machine import describe

    return {"kind": "robustness", "model": info, "machine": describe(threads=threads), **res}
