"""Embed uint8 tile arrays in batches, and name the model and engine a result measured."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgepath.models.resolver import ModelHandle

log = logging.getLogger(__name__)


def engine_info(model: ModelHandle, engine: Any) -> dict[str, Any]:
    """How a result names the model it measured and the engine it ran on.

    Args:
        model: The resolved model (``edgepath.models.resolve``).
        engine: The engine it was opened on (``edgepath.runtime.open_engine``).

    Returns:
        ``name``, ``source``, ``random_weights`` (stand-ins included), ``sha256`` (the model
        identity), ``engine``, ``precision``, ``device``, ``mpp``, ``tile_px``.
    """
    return {
        "name": model.name,
        "source": model.source,
        "random_weights": bool(model.random_weights or model.stand_in),
        "sha256": model.sha256,
        "engine": engine.name,
        "precision": str(getattr(engine, "precision", "fp32")),
        "device": str(getattr(engine, "device", "cpu")),
        "mpp": float(engine.spec.input.mpp),
        "tile_px": int(engine.spec.input.tile_px),
    }


def open_measured(
    ref: str,
    *,
    engine: str = "auto",
    threads: int | None = None,
    random_weights: bool = False,
    device: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Resolve ``ref`` (``edgepath.models.resolve``), open it, and name it: ``(engine, info)``.

    Teachers need their weights (robustness and fidelity measure what the weights learned)
    unless ``random_weights`` is set, which ``info`` then records. ``device`` is the torch
    engine's (``cpu``, ``cuda``, ``auto``; other engines run on their default).
    """
    from edgepath.models import resolve
    from edgepath.runtime import open_engine

    model = resolve(ref, random_weights=random_weights)
    eng = open_engine(model, engine=engine, threads=threads, device=device)
    return eng, engine_info(model, eng)


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
