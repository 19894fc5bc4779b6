"""Open a model for embedding tiles in benchmarks, and embed uint8 tile arrays in batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def open_for_embedding(
    ref: str,
    *,
    engine: str = "auto",
    threads: int | None = None,
    random_weights: bool = False,
    device: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """An engine for ``ref`` (artifact folder, teacher card, ``student[@mpp]``) and its label.

    Teachers need their weights here (robustness and fidelity measure what the weights learned)
    unless ``random_weights`` is set, which is then recorded in the label. ``device`` is the
    torch engine's (``cpu``, ``cuda``, ``auto``; other engines run on their default).

    Returns:
        ``(engine, info)`` with ``name``, ``source``, ``random_weights``, ``engine``,
        ``precision``, ``device``, ``mpp``, ``tile_px``.
    """
    from edgepath.artifact import is_artifact, read_manifest
    from edgepath.runtime import open_engine

    if is_artifact(ref):
        manifest = read_manifest(ref)
        eng = open_engine(Path(ref), engine=engine, threads=threads, device=device)
        info = {
            "name": str(manifest.get("name", Path(ref).name)),
            "source": "artifact",
            "random_weights": bool(manifest.get("random_weights", False)),
        }
    else:
        from edgepath.bench.throughput import resolve_model
        from edgepath.models.students import STUDENTS

        if str(ref).partition("@")[0] in STUDENTS:
            m = resolve_model(str(ref))
            encoder, info = m.encoder, {"name": m.name, "source": "student", "random_weights": True}
        else:
            from edgepath.models import load_model

            encoder, linfo = load_model(str(ref), random_weights=random_weights)
            info = {
                "name": str(linfo.get("name", ref)),
                "source": str(linfo.get("source", "teacher")),
                "random_weights": bool(linfo.get("random_weights") or linfo.get("stand_in")),
            }
        eng = open_engine(encoder, engine=engine, threads=threads, device=device)
    info.update(
        engine=eng.name,
        precision=str(getattr(eng, "precision", "fp32")),
        device=str(getattr(eng, "device", "cpu")),
        mpp=float(eng.spec.input.mpp),
        tile_px=int(eng.spec.input.tile_px),
    )
    return eng, info


def resize_tiles(tiles: np.ndarray, tile_px: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, tile_px, tile_px, 3), bilinear (no-op when already that size)."""
    if tiles.shape[1] == tile_px and tiles.shape[2] == tile_px:
        return tiles
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(t).resize((tile_px, tile_px), Image.BILINEAR)) for t in tiles]
    )


def embed_array(
    engine: Any,
    tiles: np.ndarray,
    *,
    batch: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embed uint8 tiles (N, H, W, 3) with ``engine`` in batches (resized to its tile size)."""
    px = int(engine.spec.input.tile_px)
    out = np.empty((len(tiles), int(engine.embed_dim)), dtype=np.float32)
    for s in range(0, len(tiles), batch):
        chunk = resize_tiles(np.asarray(tiles[s : s + batch]), px)
        out[s : s + len(chunk)] = engine.embed_tiles(np.ascontiguousarray(chunk))
        if on_batch is not None:
            on_batch(len(chunk))
    return out
