"""TensorRT: precision-carrying ONNX, ``trtexec`` flags per TensorRT major, strongly typed builds.

Precision lives in the ONNX graph, not in builder flags:

- FP16: the FP32 graph autocast to FP16 with LayerNorm and Softmax kept in FP32 (Cast nodes
  around them), see ``edgepath.export.onnx.convert_fp16``;
- INT8 / FP8: the Q/DQ graph written by ``edgepath quantize`` (explicit quantization);
- FP32: the graph as exported, TF32 disabled so that FP32 means FP32.

``trtexec`` flags by TensorRT major (NVIDIA migration guides 8.x→10.x and 10.x→11.x):

- 8.6 (JetPack 6.0) has no strongly typed mode: ``--fp16`` / ``--int8`` with
  ``--precisionConstraints=obey --layerPrecisions=<LayerNorm and Softmax layers>:fp32``.
- 10.x (JetPack 6.1/6.2/7.0): ``--stronglyTyped``; the weak-typing flags still exist but are
  deprecated since 10.12 and not used.
- 11.x (JetPack 7.2.2+): strong typing is always on; ``--fp16``, ``--int8``, ``--fp8``,
  ``--best`` and ``--calib`` are removed (implicit INT8 calibration is gone), so none is passed.

``--workspace`` was removed in 10.x: every major gets ``--memPoolSize=workspace:<MiB>``.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgepath.errors import ConfigError, require
from edgepath.export.targets import BatchProfile, tensorrt_major

log = logging.getLogger(__name__)

#: ONNX ops whose TensorRT layers stay FP32 in a TensorRT 8.6 FP16 build (no strong typing there).
FP32_OPS = ("LayerNormalization", "Softmax")

#: Flags that must never appear for a TensorRT major (removed or meaningless there).
FORBIDDEN: dict[int, tuple[str, ...]] = {
    8: ("--stronglyTyped", "--workspace", "--best"),
    10: (
        "--fp16",
        "--int8",
        "--fp8",
        "--best",
        "--workspace",
        "--calib",
        "--precisionConstraints",
        "--layerPrecisions",
    ),
    11: (
        "--fp16",
        "--int8",
        "--fp8",
        "--bf16",
        "--best",
        "--calib",
        "--workspace",
        "--precisionConstraints",
        "--layerPrecisions",
    ),
}


def fp32_layers(onnx_path: str | Path) -> list[str]:
    """Names of the LayerNorm/Softmax nodes (TensorRT's ONNX parser names layers after nodes)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in FP32_OPS and n.name]


def trtexec_args(
    *,
    onnx: str,
    plan: str,
    trt_version: str,
    precision: str,
    input_name: str,
    input_shape: Sequence[int],
    batch: BatchProfile,
    workspace_mib: int = 2048,
    timing_cache: str | None = "timing.cache",
    keep_fp32: Sequence[str] = (),
) -> list[str]:
    """The ``trtexec`` arguments that build ``plan`` from ``onnx`` on a given TensorRT version.

    Args:
        onnx: Path of the precision-carrying ONNX (as the script will see it).
        plan: Path of the engine to write.
        trt_version: TensorRT version on the build machine (``8.6``, ``10.3``, ``11.4``).
        precision: ``fp32``, ``fp16``, ``int8`` or ``fp8``.
        input_name: The graph input.
        input_shape: Per-sample input shape, e.g. (3, 224, 224).
        batch: min/opt/max batch of the optimisation profile.
        workspace_mib: Builder memory pool.
        timing_cache: Timing cache file (speeds up rebuilds), or None.
        keep_fp32: TensorRT 8.6 only: layers pinned to FP32 in an FP16/INT8 build.

    Raises:
        ConfigError: A precision this TensorRT major cannot build (FP8 needs TensorRT ≥ 10).
    """
    major = tensorrt_major(trt_version)
    if major not in FORBIDDEN:
        raise ConfigError(
            f"TensorRT {trt_version} is not supported; edgepath writes build scripts for 8.6, "
            "10.x and 11.x"
        )
    if precision == "fp8" and major < 10:
        raise ConfigError(f"FP8 engines need TensorRT >= 10, not {trt_version}")
    dims = "x".join(str(d) for d in input_shape)
    args = [
        "trtexec",
        f"--onnx={onnx}",
        f"--saveEngine={plan}",
        f"--minShapes={input_name}:{batch.min}x{dims}",
        f"--optShapes={input_name}:{batch.opt}x{dims}",
        f"--maxShapes={input_name}:{batch.max}x{dims}",
        f"--memPoolSize=workspace:{int(workspace_mib)}",
    ]
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    if major == 8:
        if precision == "fp16":
            args.append("--fp16")
        elif precision == "int8":
            args += ["--int8", "--fp16"]  # Q/DQ layers in INT8, the rest may use FP16
        if precision in ("fp16", "int8") and keep_fp32:
            args += [
                "--precisionConstraints=obey",
                "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in keep_fp32),
            ]
    elif major == 10:
        args.append("--stronglyTyped")
        args.append("--skipInference")
    else:  # 11.x: strongly typed always; no precision flags exist
        args.append("--skipInference")
    if precision == "fp32":
        args.append("--noTF32")
    return args


def check_trtexec_args(args: Sequence[str], trt_version: str) -> None:
    """Raise ``ConfigError`` if ``args`` use a flag removed in (or invalid for) this major."""
    major = tensorrt_major(trt_version)
    bad = [a for a in args if a.split("=")[0] in FORBIDDEN.get(major, ())]
    if bad:
        raise ConfigError(f"trtexec flags {bad} are not valid for TensorRT {trt_version}")


def command_line(args: Sequence[str]) -> str:
    """Shell-quoted command, one flag per line."""
    return " \\\n    ".join(shlex.quote(a) for a in args)


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    precision: str,
    batch: BatchProfile,
    workspace_mib: int = 4096,
    device: int = 0,
) -> dict[str, Any]:
    """Build a strongly typed TensorRT engine here with the Python API (TensorRT ≥ 10).

    The precision comes from the ONNX graph (FP16 autocast or Q/DQ); ``precision`` only decides
    whether TF32 is disabled (FP32). Implicit INT8 calibration is never used.

    Returns:
        ``{"version", "compute_capability", "gpu"}`` for the manifest: plans only run on this
        GPU architecture and TensorRT version.
    """
    trt = require("tensorrt", "tensorrt", purpose="building TensorRT engines")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("building a TensorRT engine needs a CUDA GPU; none is visible here")
    if tensorrt_major(trt.__version__) < 10:
        raise ConfigError(
            f"TensorRT {trt.__version__} has no strongly typed builds; install TensorRT >= 10 "
            "or build with the trtexec script of a Jetson bundle"
        )
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{onnx_path}: TensorRT cannot parse the ONNX ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(
        inp.name,
        (batch.min, *shape),
        (batch.opt, *shape),
        (batch.max, *shape),
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConfigError(f"{onnx_path}: TensorRT failed to build an engine; see its log above")
    from edgepath.io import atomic_path

    with atomic_path(plan_path, suffix=".plan") as tmp:
        Path(tmp).write_bytes(bytes(serialized))
    return {
        "version": trt.__version__,
        "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(device)),
        "gpu": torch.cuda.get_device_name(device),
        "strongly_typed": True,
        "profile": {"min": batch.min, "opt": batch.opt, "max": batch.max},
    }
