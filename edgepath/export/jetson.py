"""Jetson bundles: precision-carrying ONNX + build_engine.sh + verify.py + tiles, built on the device.

TensorRT engines embed kernels chosen for one GPU architecture and one TensorRT version, so a
plan built on a workstation does not run on a Jetson (and one built under JetPack 6 does not run
under JetPack 7). The bundle therefore carries what the device needs to build and check its own
engine: ``model.onnx``, ``build_engine.sh`` (trtexec flags for the TensorRT major of the chosen
JetPack), ``verify.py`` (standalone), ``verify_tiles.npy`` + ``verify_reference.npy`` (real tiles
and the validated model's embeddings of them), and the manifest.
"""

from __future__ import annotations

import logging
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ConfigError
from edgepath.export.targets import JETPACK, ExportTarget, tensorrt_major
from edgepath.export.tensorrt import check_trtexec_args, command_line, fp32_layers, trtexec_args
from edgepath.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

FILES = {
    "onnx": "model.onnx",
    "build_script": "build_engine.sh",
    "verify": "verify.py",
    "tiles": "verify_tiles.npy",
    "reference": "verify_reference.npy",
    "plan": "model.plan",
}


def resolve_jetpack(target: ExportTarget, jetpack: str | None) -> tuple[str, str]:
    """The JetPack release and its TensorRT version for a Jetson target.

    Raises:
        ConfigError: A JetPack this SoC does not run.
    """
    if target.jetson is None:
        raise ConfigError(f"--target {target.name} is not a Jetson target")
    jp = jetpack or target.jetson.jetpack
    if jp not in target.jetson.jetpacks:
        raise ConfigError(
            f"--jetpack {jp} is not a JetPack for {target.name}; choose one of "
            f"{', '.join(target.jetson.jetpacks)}"
        )
    return jp, JETPACK[jp][0]


def build_script(
    target: ExportTarget,
    *,
    jetpack: str,
    trt_version: str,
    precision: str,
    input_name: str,
    input_shape: tuple[int, ...],
    keep_fp32: list[str],
) -> tuple[str, list[str]]:
    """The text of ``build_engine.sh`` and its trtexec arguments."""
    jet = target.jetson
    if jet is None:
        raise ConfigError(f"--target {target.name} is not a Jetson target")
    args = trtexec_args(
        onnx=FILES["onnx"],
        plan=FILES["plan"],
        trt_version=trt_version,
        precision=precision,
        input_name=input_name,
        input_shape=input_shape,
        batch=target.batch,
        workspace_mib=jet.workspace_mib,
        keep_fp32=keep_fp32,
    )
    check_trtexec_args(args, trt_version)
    major = tensorrt_major(trt_version)
    body = command_line(['"$TRTEXEC"', *args[1:]]).replace("'\"$TRTEXEC\"'", '"$TRTEXEC"')
    text = f"""#!/usr/bin/env bash
# Build the TensorRT engine of this bundle ON THE DEVICE: engines are specific to one GPU
# architecture and one TensorRT version and are not portable.
#   target:    {target.name} ({jet.gpu}, compute capability {jet.compute_capability})
#   JetPack:   {jetpack} (TensorRT {trt_version}.x)
#   precision: {precision} (carried by model.onnx: {_how(precision, major)})
# Then check it:  python3 verify.py
# Override the TensorRT version check with EDGEPATH_FORCE=1 (flags may then be invalid).
set -euo pipefail
cd "$(dirname "$0")"

EXPECTED_TRT_MAJOR={major}
TRTEXEC="${{TRTEXEC:-}}"
if [ -z "$TRTEXEC" ]; then
    if command -v trtexec >/dev/null 2>&1; then
        TRTEXEC=trtexec
    elif [ -x /usr/src/tensorrt/bin/trtexec ]; then
        TRTEXEC=/usr/src/tensorrt/bin/trtexec
    else
        echo "build_engine.sh: trtexec not found (JetPack puts it in /usr/src/tensorrt/bin); set TRTEXEC=/path/to/trtexec" >&2
        exit 2
    fi
fi

found="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || dpkg-query -W -f='${{Version}}' libnvinfer-bin 2>/dev/null || true)"
if [ -n "$found" ] && [ "${{found%%.*}}" != "$EXPECTED_TRT_MAJOR" ] && [ "${{EDGEPATH_FORCE:-0}}" != "1" ]; then
    echo "build_engine.sh: these trtexec flags are for TensorRT $EXPECTED_TRT_MAJOR.x (JetPack {jetpack}) but TensorRT $found is installed; re-export with: edgepath export MODEL --target {target.name} --jetpack <this device's JetPack>" >&2
    exit 2
fi

{body}

echo "build_engine.sh: wrote {FILES["plan"]}; now run: python3 verify.py" >&2
"""
    return text, args


def _how(precision: str, major: int) -> str:
    if precision == "fp16":
        how = "FP16 autocast, LayerNorm/Softmax in FP32"
    elif precision in ("int8", "fp8"):
        how = f"{precision.upper()} Q/DQ from edgepath quantize"
    else:
        how = "FP32, TF32 off"
    typing = "weakly typed + precision constraints" if major == 8 else "strongly typed"
    return f"{how}; {typing}"


def _write_verification(folder: Path, tiles: np.ndarray, reference: np.ndarray) -> None:
    """The bundle's ``verify.py`` and the real tiles + reference embeddings it checks against."""
    verify_src = Path(__file__).with_name("bundle_verify.py").read_text()
    write_text_atomic(folder / FILES["verify"], verify_src)
    for key, arr in (("tiles", tiles), ("reference", reference)):
        with atomic_path(folder / FILES[key], suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arr)


def write_bundle(
    folder: Path,
    *,
    target: ExportTarget,
    onnx_path: Path,
    precision: str,
    jetpack: str | None,
    tiles: np.ndarray,
    reference: np.ndarray,
    spec_input: dict[str, Any],
    input_name: str,
    input_format: str,
    embed_dim: int,
    min_cosine: float,
) -> dict[str, Any]:
    """Write a Jetson bundle into ``folder`` (the ONNX is copied in); returns its manifest table.

    Args:
        folder: Output folder (the export artifact).
        target: A Jetson export target.
        onnx_path: The precision-carrying ONNX.
        precision: fp32, fp16, int8 or fp8 (already accepted by the target).
        jetpack: JetPack release, or None for the target's default.
        tiles: uint8 (N, H, W, 3) real tiles shipped for verification.
        reference: float32 (N, D) embeddings of ``tiles`` by the validated model.
        spec_input: ``tile_px``, ``mean``, ``std``.
        input_name: The ONNX graph input.
        input_format: ``nchw-float32`` or ``nhwc-uint8``.
        embed_dim: Embedding dimension.
        min_cosine: verify.py's threshold.
    """
    jp, trt_version = resolve_jetpack(target, jetpack)
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / FILES["onnx"]
    if onnx_path.resolve() != dst.resolve():
        with atomic_path(dst, suffix=".onnx") as tmp:
            shutil.copyfile(onnx_path, tmp)
    px = int(spec_input["tile_px"])
    shape = (px, px, 3) if input_format == "nhwc-uint8" else (3, px, px)
    keep = fp32_layers(dst) if tensorrt_major(trt_version) == 8 else []
    text, args = build_script(
        target,
        jetpack=jp,
        trt_version=trt_version,
        precision=precision,
        input_name=input_name,
        input_shape=shape,
        keep_fp32=keep,
    )
    script = folder / FILES["build_script"]
    write_text_atomic(script, text)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    _write_verification(folder, tiles, reference)
    jet = target.jetson
    if jet is None:  # resolve_jetpack already refused non-Jetson targets
        raise ConfigError(f"--target {target.name} is not a Jetson target")
    return {
        "soc": jet.soc,
        "gpu": jet.gpu,
        "compute_capability": jet.compute_capability,
        "jetpack": jp,
        "tensorrt_expected": trt_version,
        "cuda_expected": JETPACK[jp][1],
        "precision": precision,
        "trtexec": args,
        "onnx": FILES["onnx"],
        "plan": FILES["plan"],
        "tiles": FILES["tiles"],
        "reference": FILES["reference"],
        "input_name": input_name,
        "input_format": input_format,
        "tile_px": px,
        "mean": list(spec_input["mean"]),
        "std": list(spec_input["std"]),
        "embed_dim": int(embed_dim),
        "min_cosine": float(min_cosine),
        "verify_batch": 4,
        "batch": {"min": target.batch.min, "opt": target.batch.opt, "max": target.batch.max},
    }
