"""The machine a benchmark ran on: CPU, cores, SIMD features, load, library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

#: CPU flags that decide which INT8 / FP32 kernels the engines can use.
_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimd")
_PACKAGES = ("edgepath", "torch", "onnxruntime", "openvino", "nncf", "timm", "numpy")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags", "Features") and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    return info


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_avg() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe(*, threads: int | None = None) -> dict[str, Any]:
    """A JSON-able description of this machine, stored with every benchmark result.

    ``gpu`` is the first CUDA GPU's name and ``cuda`` its capability, memory and the CUDA,
    cuDNN and fp32-matmul settings torch runs it with (both None without a CUDA GPU).

    Args:
        threads: The thread count the benchmark used, recorded alongside.
    """
    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    gpu, cuda = None, None
    try:
        import torch

        if torch.cuda.is_available():
            from edgepath.runtime.torch_engine import cuda_info

            cuda = cuda_info("cuda:0")
            gpu = cuda["device_name"]
    except Exception:  # pragma: no cover - torch missing or broken CUDA
        gpu, cuda = None, None
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cpu_features": sorted(f for f in _FLAGS if f in flags),
        "memory_gb": _memory_gb(),
        "gpu": gpu,
        "cuda": cuda,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "threads": threads,
        "load_avg": load_avg(),
        "versions": {p: v for p in _PACKAGES if (v := _version(p))},
    }


def peak_rss_reset() -> bool:
    """Reset the process's peak RSS (VmHWM) so the next reading covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(*, peak: bool = False) -> float | None:
    """Current (or peak since the last reset) resident memory of this process, in MiB."""
    key = "VmHWM:" if peak else "VmRSS:"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None
