"""``edgepath bench read``: the tile reader alone, without a model, against its own limits.

For each slide: tissue detection and tiling once (timed), then, ``repeats`` times and side by
side so that load from other processes hits all alike:

- ``baseline``: what a user would write, in one process: OpenSlide ``read_region`` of each
  tile's footprint at the best level, PIL resize to the tile size, ``np.asarray``;
- ``decode_limit``: the slide's compressed TIFF tiles under the tiles' regions, each decoded
  once with the fastest decoder (``edgepath.slides.pyramid.decoder``), bytes read beforehand:
  decoding and nothing else, as tiles/s of the requested tiles;
- one row per worker count: the embed reader (``TileReader``: worker processes, uint8 tiles
  straight into the shared-memory slots the engine reads, as for a fused-preprocessing export)
  over all tiles, timed from the first batch asked for to the last one handed over.

Each worker count has one reader pool for the whole run, as ``edgepath embed`` has one for all
its slides: its first pass (``first_pass``: the first slide of a run, whose reader processes
still fault in the memory they decode into) is reported on its own, the rows are the passes
after it (every later slide). A separate in-process pass of the same reader, after one pass to
warm it, gives the time split (decode, copy, resize). Figures are medians over the repeats,
except the decode limit, which is its fastest repeat (a limit is the best the decoder did).
Every value is kept.
"""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ConfigError


def baseline_read(path: Path, coords: np.ndarray, *, mpp: float, tile_px: int) -> float:
    """Seconds to read ``coords`` the plain way: OpenSlide ``read_region`` + PIL resize."""
    import openslide
    from PIL import Image

    from edgepath.slides import open_slide

    with open_slide(path) as s:
        level = s.best_level_for_mpp(mpp)
        d = s.level_downsamples[level]
        side = math.ceil(tile_px * mpp / s.mpp / d - 1e-9)
    osl = openslide.OpenSlide(str(path))
    try:
        t0 = time.perf_counter()
        for x, y in coords:
            img = osl.read_region((int(x), int(y)), level, (side, side)).convert("RGB")
            np.asarray(img.resize((tile_px, tile_px), Image.Resampling.BILINEAR))
        return time.perf_counter() - t0
    finally:
        osl.close()


def decode_limit(path: Path, coords: np.ndarray, *, mpp: float, tile_px: int) -> dict[str, Any]:
    """Seconds to decode, once each, the TIFF tiles under ``coords`` (None where the slide is not
    a tiled TIFF pyramid), and how many there are."""
    import os

    from edgepath.slides import open_slide
    from edgepath.slides.pyramid import decode_buffer, decoder

    with open_slide(path) as s:
        pyr = s._pyramid()
        if pyr is None:
            return {"seconds": None, "tiff_tiles": None, "reason": "not a tiled TIFF pyramid"}
        level, w, _ = s.read_plan(mpp, tile_px)
        d = s.level_downsamples[level]
        xy = np.floor(np.asarray(coords, dtype=np.float64) / d + 1e-9).astype(np.int64)
        side = round(w) if round(w) == tile_px else math.ceil(w + 1)
        keys = pyr.covering(level, np.concatenate([xy, xy + side], axis=1))
        page = pyr._pages[level]
        fd = os.open(path, os.O_RDONLY)
        try:
            data = [
                os.pread(fd, int(page.databytecounts[k]), int(page.dataoffsets[k])) for k in keys
            ]
        finally:
            os.close(fd)
        dec = decoder(page)
        # one output buffer, reused, placed where libjpeg-turbo decodes fastest (decode_buffer:
        # a buffer on a 32-byte boundary made this limit 25 % slower from one call to the next)
        buf = decode_buffer((page.tilelength, page.tilewidth, 3))
        t0 = time.perf_counter()
        for k, b in zip(keys, data, strict=True):
            if b:
                dec(b, int(k), buf)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tiff_tiles": int(len(keys)), "level": int(level)}


def reader_pool(*, mpp: float, tile_px: int, workers: int, batch: int) -> Any:
    """The embed reader as `embed` runs it for a fused-preprocessing engine (uint8, shared
    memory)."""
    from edgepath.embed.reader import Preprocess, TileReader

    pre = Preprocess(mpp=mpp, tile_px=tile_px, mean=(0.5,) * 3, std=(0.5,) * 3, uint8=True)
    return TileReader(pre, batch=batch, workers=workers)  # prefetch as `embed` has it


def reader_pass(reader: Any, path: Path, coords: np.ndarray) -> tuple[float, dict[str, float]]:
    """Seconds for ``reader`` (``reader_pool``) to hand all ``coords`` over, and the time split
    of this pass where it reads in this process (``workers=0``)."""
    reader.timing.clear()
    t0 = time.perf_counter()
    n = 0
    for _, x in reader.batches(path, coords):
        n += len(x)
    seconds = time.perf_counter() - t0
    assert n == len(coords)
    return seconds, dict(reader.timing)


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _rate(n: int, seconds: float | None) -> float | None:
    return None if not seconds else n / seconds


def _rows(
    runs: dict[str, list[Any]],
    first: dict[int, float],
    workers: Sequence[int],
    *,
    n: int,
    base: float | None,
    dec: float | None,
) -> list[dict[str, Any]]:
    """One row per worker count: medians of its passes against the baseline's (``base``) and the
    decode limit's (``dec``) tiles/s, and the scaling against one worker."""
    rows = []
    for w in workers:
        tps = _rate(n, _median(runs[f"w{w}"]))
        per = tps / w if tps else None
        rows.append(
            {
                "workers": w,
                "tiles_per_s": tps,
                "tiles_per_s_per_worker": per,
                "per_worker_vs_baseline": per / base if per and base else None,
                "per_worker_vs_decode_limit": per / dec if per and dec else None,
                "seconds": runs[f"w{w}"],
                "first_pass": {"tiles_per_s": _rate(n, first[w]), "seconds": first[w]},
            }
        )
    one = next((r["tiles_per_s"] for r in rows if r["workers"] == 1), None)
    ones = runs.get("w1")
    for r in rows:
        r["scaling_vs_1"] = r["tiles_per_s"] / one if one and r["tiles_per_s"] else None
        # each repeat's pair, run a few seconds apart: the spread the median hides
        r["scaling_per_repeat"] = (
            [a / b for a, b in zip(ones, r["seconds"], strict=True)] if ones else None
        )
    return rows


def _one_slide(
    path: Path,
    *,
    mpp: float,
    tile_px: int,
    workers: Sequence[int],
    batch: int,
    repeats: int,
    max_tiles: int | None,
    step: Callable[[str], None],
) -> dict[str, Any]:
    from edgepath.slides import open_slide, tile_slide

    step(f"{path.name}: tissue detection and tiling")
    with open_slide(path) as s:
        s.open()
        t0 = time.perf_counter()
        grid = tile_slide(s, mpp=mpp, tile_px=tile_px)
        tissue_s = time.perf_counter() - t0
        plan = s.read_plan(mpp, tile_px)
    coords = grid.coords[:max_tiles] if max_tiles else grid.coords
    n = len(coords)
    runs: dict[str, list[Any]] = {"baseline": [], "decode": [], **{f"w{w}": [] for w in workers}}
    limit: dict[str, Any] = {}
    first: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        pools = {
            w: stack.enter_context(reader_pool(mpp=mpp, tile_px=tile_px, workers=w, batch=batch))
            for w in workers
        }
        for w, pool in pools.items():
            step(f"{path.name}: first pass, reader with {w} worker(s)")
            first[w] = reader_pass(pool, path, coords)[0]
        for r in range(repeats):
            step(f"{path.name}: repeat {r + 1}/{repeats}: baseline (read_region + PIL resize)")
            runs["baseline"].append(baseline_read(path, coords, mpp=mpp, tile_px=tile_px))
            step(f"{path.name}: repeat {r + 1}/{repeats}: decode limit")
            limit = decode_limit(path, coords, mpp=mpp, tile_px=tile_px)
            runs["decode"].append(limit["seconds"])
            for w, pool in pools.items():
                step(f"{path.name}: repeat {r + 1}/{repeats}: reader, {w} worker(s)")
                runs[f"w{w}"].append(reader_pass(pool, path, coords)[0])
    step(f"{path.name}: time split (reader in this process)")
    with reader_pool(mpp=mpp, tile_px=tile_px, workers=0, batch=batch) as pool:
        reader_pass(pool, path, coords)
        split_s, split = reader_pass(pool, path, coords)
    base = _rate(n, _median(runs["baseline"]))
    dec = _rate(n, min((v for v in runs["decode"] if v is not None), default=None))
    rows = _rows(runs, first, workers, n=n, base=base, dec=dec)
    return {
        "slide": str(path),
        "tiles": n,
        "level": plan[0],
        "level_footprint_px": plan[1],
        "resize": not plan[2],
        "tissue_s": tissue_s,
        "rows": rows,
        "baseline": {"tiles_per_s": base, "seconds": runs["baseline"]},
        "decode_limit": {
            "tiles_per_s": dec,
            "seconds": runs["decode"],
            **{k: v for k, v in limit.items() if k != "seconds"},
        },
        "split_s": {"tissue": tissue_s, **split, "total_in_process": split_s},
    }


def run_read(
    slides: Sequence[str | Path],
    *,
    mpp: float = 0.5,
    tile_px: int = 224,
    workers: Sequence[int] = (1, 2),
    batch: int = 32,
    repeats: int = 3,
    max_tiles: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure the reader on ``slides`` (see the module docstring); the first slide's figures are
    the top-level ``rows``, ``baseline`` and ``decode_limit``, each slide's are in ``slides``."""
    from edgepath.eval.machine import describe, rss_mb

    if not slides:
        raise ConfigError("give at least one SLIDE")
    if repeats < 1 or batch < 1 or any(w < 1 for w in workers):
        raise ConfigError("--repeats, --batch and --workers must be at least 1")
    step = on_step or (lambda text: None)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    per_slide = [
        _one_slide(
            Path(s),
            mpp=mpp,
            tile_px=tile_px,
            workers=list(workers),
            batch=batch,
            repeats=repeats,
            max_tiles=max_tiles,
            step=step,
        )
        for s in slides
    ]
    first = per_slide[0]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "kind": "read",
        "date": started,
        "machine": describe(),
        "settings": {
            "mpp": mpp,
            "tile_px": tile_px,
            "workers": list(workers),
            "batch": batch,
            "repeats": repeats,
            "max_tiles": max_tiles,
            "handoff": "uint8 NHWC into shared memory (TileReader)",
        },
        "rows": first["rows"],
        "baseline": first["baseline"],
        "decode_limit": first["decode_limit"],
        "split_s": first["split_s"],
        "slides": per_slide,
        "peak_rss_mb": {"main": rss_mb(peak=True), "largest_reader": children},
    }
