"""What this machine offers for edgepath: OpenSlide, engines and devices, CUDA/TensorRT, CPU features."""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: CPU flags (Linux /proc/cpuinfo names) that decide how fast INT8 and BF16 run on a CPU.
#: x86: AVX-512 VNNI / AVX-VNNI add the u8×s8 dot-product instruction INT8 GEMMs are built on;
#: AMX (Sapphire Rapids and later) adds tile matrix units for INT8 and BF16. Arm: dot product
#: (asimddp), int8 matrix multiply (i8mm), SVE, BF16.
CPU_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
    "i8mm",
    "sve",
    "bf16",
)


def _cpu_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and model in ("", platform.machine()):
                model = value.strip()
            if key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # not Linux
        pass
    return model, flags


def cpu_report() -> dict[str, Any]:
    """CPU model, cores and the features that matter for INT8 / BF16 inference."""
    model, flags = _cpu_flags()
    present = [f for f in CPU_FLAGS if f in flags]
    if {"amx_int8", "amx_tile"} <= flags:
        int8 = "AMX (tile INT8 matrix units)"
    elif flags & {"avx512_vnni", "avx_vnni"}:
        int8 = "VNNI (INT8 dot-product instructions)"
    elif flags & {"i8mm", "asimddp"}:
        int8 = "Arm dot product / i8mm"
    else:
        int8 = "none: INT8 runs on plain SIMD here, expect little speed-up over FP32"
    return {
        "model": model,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "features": present,
        "int8_acceleration": int8,
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}),
    }


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        from importlib.metadata import version

        return version({"openslide": "openslide-python"}.get(module, module))
    except Exception:
        return "installed"


def engines_report() -> dict[str, Any]:
    """Each engine: installed version and the devices/providers it can use here."""
    out: dict[str, Any] = {}
    torch_v = _version("torch")
    if torch_v:
        import torch

        gpus = (
            [
                {
                    "name": torch.cuda.get_device_name(i),
                    "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(i)),
                }
                for i in range(torch.cuda.device_count())
            ]
            if torch.cuda.is_available()
            else []
        )
        out["torch"] = {
            "version": torch.__version__,
            "devices": ["cpu"] + [f"cuda:{i}" for i in range(len(gpus))],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "cuda": torch.version.cuda,
            "gpus": gpus,
        }
    if _version("onnxruntime"):
        import onnxruntime as ort

        out["onnxruntime"] = {
            "version": ort.__version__,
            "providers": ort.get_available_providers(),
        }
    if _version("openvino"):
        try:
            import openvino as ov

            from edgepath.runtime.openvino_engine import shared_core

            core = shared_core()
            devices = {}
            for d in core.available_devices:
                try:
                    devices[d] = {
                        "name": str(core.get_property(d, "FULL_DEVICE_NAME")),
                        "capabilities": list(core.get_property(d, "OPTIMIZATION_CAPABILITIES")),
                    }
                except Exception:  # a device that cannot be queried is still listed
                    devices[d] = {}
            out["openvino"] = {"version": ov.get_version(), "devices": devices}
        except Exception as exc:  # broken plugin install: report, do not crash the doctor
            out["openvino"] = {"error": str(exc)}
    trt_v = _version("tensorrt")
    out["tensorrt"] = {"version": None} if not trt_v else _tensorrt()
    return out


def _tensorrt() -> dict[str, Any]:
    try:
        import tensorrt as trt

        return {"version": trt.__version__}
    except Exception as exc:  # libnvinfer missing behind the wheel
        return {"version": None, "error": str(exc)}


def openslide_report() -> dict[str, Any]:
    """openslide-python and the OpenSlide C library versions."""
    if importlib.util.find_spec("openslide") is None:
        return {"python": None, "library": None}
    try:
        import openslide

        return {"python": openslide.__version__, "library": openslide.__library_version__}
    except Exception as exc:  # the C library cannot be loaded
        return {"python": _version("openslide"), "library": None, "error": str(exc)}


def report() -> dict[str, Any]:
    """The whole doctor report, plus ``usable`` engines and ``notes`` for the user."""
    from edgepath import __version__
    from edgepath.runtime.select import available_engines

    engines = engines_report()
    cpu = cpu_report()
    notes: list[str] = []
    torch_info = engines.get("torch", {})
    gpus = torch_info.get("gpus", [])
    if not gpus:
        notes.append("no CUDA GPU: TensorRT exports go through Jetson bundles built on the device")
    elif engines["tensorrt"]["version"] is None:
        notes.append("CUDA GPU present but TensorRT missing: pip install 'edgepath[tensorrt]'")
    int8 = cpu["int8_acceleration"]
    if "VNNI" not in int8 and "AMX" not in int8 and cpu["arch"] in ("x86_64", "AMD64"):
        notes.append("CPU without VNNI/AMX: INT8 gains little on this CPU; measure with bench")
    if "openvino" not in engines:
        notes.append(
            "OpenVINO not installed (fastest CPU engine here): pip install 'edgepath[openvino]'"
        )
    slide = openslide_report()
    if slide.get("library") is None:
        notes.append("OpenSlide library not loadable: only plain images can be read")
    return {
        "edgepath": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "openslide": slide,
        "cpu": cpu,
        "engines": engines,
        "usable_engines": available_engines(),
        "cuda": {
            "torch_cuda": torch_info.get("cuda"),
            "gpus": gpus,
        },
        "notes": notes,
    }
