"""Robustness runs: PLISM from disk, or the synthetic stain/scanner domain suite.

PLISM on disk, either layout (owkin's release ships the first):

- ``DIR/*.h5``: one HDF5 per slide named ``{staining}_{scanner}_to_GMH_S60.tif.h5``, one
  (224, 224, 3) uint8 dataset per tile keyed by its tile id (a single 4-D ``tiles``/``imgs``
  dataset is read too, rows being the aligned tiles);
- ``DIR/{slide}/*.png|jpg``: one folder per slide, tile files named by tile id.

Tiles are aligned by id across slides (the ids every slide has) and ordered as plismbench
orders them, by the numeric (x, y) of ids ``<prefix>_<c0>_<c1>_<c2>``; plismbench's subset
files then pick the scored rows (``edgepath.eval.plismbench``). Ids without coordinates, or a
tile count other than PLISM's 16,278, fall back to ids sorted as text and a seeded subset, and
the result's ``protocol`` says so.

plismbench's own features (``--features``: its extractor's folder of ``features.npy``) are
scored directly, without a model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ConfigError, SlideReadError
from edgepath.eval import plism
from edgepath.eval import plismbench as PB

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


def aligned_ids(slides: list[PlismSlide]) -> list[str]:
    """Tile ids present in every slide (sorted as text)."""
    common = set(slides[0].ids)
    for s in slides[1:]:
        common &= set(s.ids)
    if not common:
        raise ConfigError("the PLISM slides share no tile id; are they from the same release?")
    return sorted(common)


def plism_tiles(
    slides: list[PlismSlide], *, n_tiles: int | None, seed: int = 0
) -> tuple[list[str], np.ndarray | None, np.ndarray, dict[str, Any]]:
    """The aligned tiles in plismbench's row order, the rows the metrics use, and the protocol.

    Returns:
        ``(ids, coords, rows, protocol)``: every aligned tile id in row order; their
        ``(c0, c1, c2)`` (None when the ids carry no coordinates); the rows to score
        (``plismbench.select_rows``); how they were chosen.
    """
    common = aligned_ids(slides)
    ordered = PB.plismbench_order(common)
    if ordered is not None:
        ids, coords = ordered
        order = "plismbench: tile ids by their numeric (x, y)"
    else:
        ids, coords = common, None
        order = "tile ids sorted as text (no <prefix>_<c0>_<c1>_<c2> ids)"
    rows, proto = PB.select_rows(len(ids), n_tiles, plismbench_rows=ordered is not None, seed=seed)
    return ids, coords, rows, {**proto, "order": order}


def _embed_slide(engine: Any, slide: PlismSlide, ids: list[str], *, batch: int) -> np.ndarray:
    """Embeddings of ``ids`` of one slide, read and embedded a block of tiles at a time."""
    from edgepath.eval.embedding import embed_array

    block = max(batch, 1024)
    parts = [
        embed_array(engine, slide.read(ids[i : i + block]), batch=batch)
        for i in range(0, len(ids), block)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


def plism_robustness(
    engine: Any,
    folder: str | Path,
    *,
    n_tiles: int | None = None,
    seed: int = 0,
    batch: int = 32,
    chunk: int = 2048,
    precision: str = "float16",
    save_features: str | Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed the aligned PLISM tiles of every slide and compute the robustness metrics.

    ``n_tiles`` None: plismbench's 8,139 where its protocol applies (else all aligned tiles).
    ``save_features``: also write every aligned tile's embedding as plismbench's
    ``OUT/{slide}/features.npy`` (all 16,278 rows, so plismbench's ``evaluate`` can subset
    them), which needs tile ids with coordinates.
    """
    slides = find_plism(folder)
    ids, coords, rows, proto = plism_tiles(slides, n_tiles=n_tiles, seed=seed)
    if save_features is not None and coords is None:
        raise ConfigError(
            f"{folder}: --save-features needs tile ids <prefix>_<c0>_<c1>_<c2> (plismbench's "
            "features.npy starts each row with them); these slides' ids have no coordinates"
        )
    todo = ids if save_features is not None else [ids[i] for i in rows]
    feats: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for i, s in enumerate(slides):
        f = _embed_slide(engine, s, todo, batch=batch)
        if save_features is not None:
            assert coords is not None
            PB.write_feature_file(Path(save_features) / s.name / "features.npy", coords, f)
            f = f[rows]
        feats[s.name] = f
        if on_progress:
            on_progress("embedding slides", i + 1, len(slides))
    t_embed = time.perf_counter() - t0
    res = _metrics(feats, precision=precision, chunk=chunk, order=None, on_progress=on_progress)
    res.update(suite="plism", source=str(folder), protocol=proto)
    res["seconds"]["embed"] = t_embed
    if save_features is not None:
        res["saved_features"] = {"folder": str(save_features), "rows": len(ids)}
    return res


def _metrics(
    feats: Mapping[str, np.ndarray],
    *,
    precision: str,
    chunk: int,
    order: list[str] | None,
    on_progress: Callable[[str, int, int], None] | None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = plism.evaluate(
        feats,
        chunk=chunk,
        precision=precision,
        order=order,
        on_slide=(lambda d, n: on_progress("preparing slides", d, n)) if on_progress else None,
        on_pair=(lambda d, n: on_progress("slide pairs", d, n)) if on_progress else None,
    )
    res["seconds"] = {"metrics": time.perf_counter() - t0}
    return res


def features_robustness(
    folder: str | Path,
    *,
    n_tiles: int | None = None,
    seed: int = 0,
    chunk: int = 2048,
    precision: str = "float16",
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The robustness metrics of plismbench features (its extractor's folder), no model run.

    ``folder`` holds one subfolder per slide with ``features.npy`` (``[c0, c1, c2, feature…]``
    rows in plismbench's order). Slides pair in directory order, as plismbench's glob lists
    them, so float16 ties resolve as plismbench's would on the same folder.
    """
    files = PB.feature_slides(folder)
    n_rows, _ = PB.check_aligned(files)
    rows, proto = PB.select_rows(n_rows, n_tiles, plismbench_rows=True, seed=seed)
    proto["order"] = "plismbench: the rows of features.npy as written"
    proto["pair_order"] = "directory order of the slide folders (as plismbench's glob)"
    feats = PB.FeatureFolder(files, rows)
    res = _metrics(
        feats, precision=precision, chunk=chunk, order=list(feats), on_progress=on_progress
    )
    res.update(suite="plism", source=str(folder), protocol=proto)
    return res


def synthetic_robustness(
    engine: Any,
    *,
    n_tiles: int | None = None,
    base_px: int = 224,
    seed: int = 0,
    batch: int = 32,
    precision: str = "float32",
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The synthetic domain suite on the shipped real tissue tiles (see ``eval.domains``)."""
    from edgepath.eval import domains as D
    from edgepath.eval.embedding import embed_array

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
    res = plism.evaluate(feats, keys={d.name: d.key for d in doms}, precision=precision)
    res.update(
        suite="synthetic",
        source=f"{len(tiles)} real tissue tiles of {base_px} px (edgepath.data), seed {seed}",
        domains=[{"name": d.name, "kind": d.kind} for d in doms],
        protocol={"subset": "seeded", "subset_seed": seed, "order": "domain order"},
        seconds={"embed": t_embed},
    )
    return res


def as_result(res: dict[str, Any], info: dict[str, Any], *, threads: int | None) -> dict[str, Any]:
    """A robustness run as a result row set (``kind`` robustness, model label, machine)."""
    from edgepath.eval.machine import describe

    out = {"kind": "robustness", "model": info, "machine": describe(threads=threads), **res}
    diffs = PB.protocol_differences(out)
    out["leaderboard"] = {
        "source": PB.LEADERBOARD_SOURCE,
        "comparable": not diffs,
        "differences": diffs,
        "place": PB.place(out["score"]) if not diffs else None,
        "of": len(PB.LEADERBOARD),
        "components": PB.components(out),
    }
    return out


def write_results_csv(result: dict[str, Any], out_dir: str | Path, label: str) -> Path:
    """plismbench's ``results.csv`` for a PLISM result, where plismbench's evaluate puts it:
    ``OUT/plismbench/{n_tiles}_tiles/{label}/results.csv``."""
    import re

    from edgepath.io import write_text_atomic

    label = re.sub(r"[^A-Za-z0-9.@+-]+", "_", label).strip("_")[:80] or "model"
    path = Path(out_dir) / "plismbench" / f"{result['n_tiles']}_tiles" / label / "results.csv"
    names = {p[k] for p in result["pairs"] for k in ("a", "b")}
    keys = {n: plism.parse_slide_name(n) for n in names}
    ks = [int(k[3:]) for k in result["groups"]["all"] if k.startswith("top")]
    write_text_atomic(path, PB.results_csv(result["pairs"], keys, ks))
    return path
