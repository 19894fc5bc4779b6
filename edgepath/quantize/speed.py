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


def machine() -> dict[str, Any]:
    """The CPU this was measured on (model name, cores, ISA features that matter for INT8)."""
    import os
    import platform

    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()
        info["int8_isa"] = [
            f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags
        ]
    except OSError:  # not Linux
        info["cpu"] = platform.processor()
    return info


def plot_speed(manifests: dict[str, dict[str, Any]], out: str) -> None:
    """Bar chart of FP32 vs quantized tiles/s per backend for several quantized artifacts.

    Args:
        manifests: Label (e.g. the student's name) -> a ``quantized`` artifact's manifest.
        out: PNG path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgepath.io import atomic_path

    labels, fp32, quant, names = [], [], [], []
    for label, m in manifests.items():
        for s in m["speed"]["backends"].values():
            labels.append(f"{label}\n{s['engine']}")
            fp32.append(s["fp32_tiles_per_s"])
            quant.append(s["quantized_tiles_per_s"])
            names.append(m["precision"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.6))
    ax.bar(x - 0.2, fp32, 0.4, label="fp32", color="#9aa5b1")
    ax.bar(x + 0.2, quant, 0.4, label=names[0] if names else "quantized", color="#2f6fb0")
    for i, (a, b) in enumerate(zip(fp32, quant, strict=True)):
        ax.text(i + 0.2, b, f"×{b / a:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("tiles/s (median, same batch)")
    cpu = next(iter(manifests.values()))["speed"]["machine"].get("cpu", "") if manifests else ""
    ax.set_title(f"FP32 vs quantized on {cpu}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
