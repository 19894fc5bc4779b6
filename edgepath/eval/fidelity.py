"""Fidelity runs: how closely two models' embeddings agree on the same real tiles."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ConfigError

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def load_tiles(
    source: str, *, tile_px: int = 224, max_tiles: int = 512, seed: int = 0
) -> tuple[np.ndarray, str]:
    """uint8 (N, tile_px, tile_px, 3) tiles and a description of where they came from.

    Args:
        source: ``sample`` (the shipped real tissue tiles), a folder of images (cut into
            ``tile_px`` tiles), or a slide (tissue tiles at 0.5 mpp, a seeded subset).
        tile_px: Tile side.
        max_tiles: At most this many (seeded subset).
        seed: Subset seed.
    """
    from edgepath.eval.domains import base_tiles

    if source == "sample":
        tiles = base_tiles(tile_px, n=max_tiles, seed=seed)
        return tiles, f"{len(tiles)} shipped real tissue tiles ({tile_px} px)"
    path = Path(source)
    if path.is_dir():
        from PIL import Image

        tiles = []
        for p in sorted(q for q in path.rglob("*") if q.suffix.lower() in _IMAGE_SUFFIXES):
            with Image.open(p) as im:
                img = np.asarray(im.convert("RGB"))
            h, w = img.shape[:2]
            if h < tile_px or w < tile_px:
                img = np.asarray(Image.fromarray(img).resize((tile_px, tile_px), Image.BILINEAR))
                h = w = tile_px
            for y in range(0, h - tile_px + 1, tile_px):
                for x in range(0, w - tile_px + 1, tile_px):
                    tiles.append(img[y : y + tile_px, x : x + tile_px])
        if not tiles:
            raise ConfigError(f"{path}: no images (png, jpg, tif) in this folder")
        out = np.stack(tiles)
    elif path.is_file():
        from edgepath.slides import open_slide, tile_slide

        with open_slide(path) as s:
            grid = tile_slide(s, mpp=0.5, tile_px=tile_px)
            coords = np.asarray(grid.coords)
            if len(coords) > max_tiles:
                coords = coords[
                    np.sort(
                        np.random.default_rng(seed).choice(len(coords), max_tiles, replace=False)
                    )
                ]
            out = np.stack(
                [s.read_tile(int(x), int(y), mpp=0.5, tile_px=tile_px) for x, y in coords]
            )
    else:
        raise ConfigError(f"--tiles {source}: not 'sample', a folder of images, or a slide file")
    if len(out) > max_tiles:
        out = out[np.sort(np.random.default_rng(seed).choice(len(out), max_tiles, replace=False))]
    return np.ascontiguousarray(out), f"{len(out)} tiles of {tile_px} px from {source}"


def fidelity_run(
    engine_a: Any, engine_b: Any, tiles: np.ndarray, *, batch: int = 32
) -> dict[str, Any]:
    """``edgepath.metrics.fidelity`` of A (candidate) against B (reference), with per-tile cosines.

    Both models see the same tiles (resized to each model's tile size). Per-tile raw and centered
    cosines are kept for the report's histograms (only when the dimensions match).
    """
    from edgepath.eval.embedding import embed_array
    from edgepath.metrics import fidelity, rowwise_cosine

    if len(tiles) <= 10:
        raise ConfigError(
            f"fidelity needs more than 10 tiles for kNN-10 agreement, got {len(tiles)}"
        )
    a = embed_array(engine_a, tiles, batch=batch)
    b = embed_array(engine_b, tiles, batch=batch)
    res = fidelity(a, b)
    if a.shape[1] == b.shape[1]:
        c = b.mean(0)
        res["per_tile"] = {
            "cosine": rowwise_cosine(a, b).round(5).tolist(),
            "centered_cosine": rowwise_cosine(a - c, b - c).round(5).tolist(),
        }
    return res


def as_result(
    res: dict[str, Any], candidate: dict[str, Any], reference: dict[str, Any], *, tiles: str
) -> dict[str, Any]:
    """A fidelity run as a result (``kind`` fidelity, both model labels, where the tiles came from)."""
    return {
        "kind": "fidelity",
        "candidate": candidate,
        "reference": reference,
        "tiles": tiles,
        **res,
    }
