"""Float vs quantized tiles/s on this machine, measured side by side (interleaved repeats)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def measure(
    engines: dict[str, Any],
    x: np.ndarray,
    *,
    repeats: int = 5,
    warmup: int = 2,
) -> dict[str, dict[str, float]]:
    """Median tiles/s of each engine on the same batch, runs interleaved so drift hits all alike.

    Args:
        engines: Label -> callable taking normalised float32 NCHW and returning embeddings
            (an ``edgepath.runtime.Engine``).
        x: The batch.
        repeats: Timed runs per engine (the median is reported).
        warmup: Untimed runs per engine first.

    Returns:
        Label -> ``{"tiles_per_s", "ms_per_batch"}`` (medians).
    """
    for _ in range(warmup):
        for eng in engines.values():
            eng(x)
    times: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(repeats):
        for k, eng in engines.items():
            t0 = time.perf_counter()
            eng(x)
            times[k].append(time.perf_counter() - t0)
    out = {}
    for k, ts in times.items():
        med = float(np.median(ts))
        out[k] = {"tiles_per_s": len(x) / med, "ms_per_batch": 1000 * med}
    return out
