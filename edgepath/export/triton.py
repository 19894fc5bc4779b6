"""Triton Inference Server model repository: one model per backend, dynamic batching on.

Layout (Triton's model repository convention)::

    DIR/<name>_onnx/config.pbtxt       DIR/<name>_onnx/1/model.onnx          backend onnxruntime
    DIR/<name>_openvino/config.pbtxt   DIR/<name>_openvino/1/model.xml+.bin  backend openvino
    DIR/<name>_trt/config.pbtxt        DIR/<name>_trt/1/model.plan           platform tensorrt_plan

Input/output names, dims (without the batch axis, which ``max_batch_size`` > 0 adds) and data
types are read from the exported graph, so the configs cannot drift from the model.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from edgepath.errors import ConfigError
from edgepath.export.targets import BatchProfile, TritonSpec
from edgepath.io import write_text_atomic

log = logging.getLogger(__name__)

#: numpy dtype name -> Triton data type.
TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int64": "TYPE_INT64",
}

#: Backend -> (config key and value, model file names in version folder 1, instance kind).
BACKENDS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "onnxruntime": ("backend", "onnxruntime", ("model.onnx",), "KIND_CPU"),
    "openvino": ("backend", "openvino", ("model.xml", "model.bin"), "KIND_CPU"),
    "tensorrt_plan": ("platform", "tensorrt_plan", ("model.plan",), "KIND_GPU"),
}
SUFFIX = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt_plan": "trt"}


def model_name(name: str) -> str:
    """A Triton-safe model name (letters, digits, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "edgepath"


def config_pbtxt(
    name: str,
    backend: str,
    *,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    batch: BatchProfile,
    triton: TritonSpec,
    gpu: bool | None = None,
) -> str:
    """The ``config.pbtxt`` text of one model.

    Args:
        name: Model name (the folder name).
        backend: ``onnxruntime``, ``openvino`` or ``tensorrt_plan``.
        inputs: Graph inputs as ``describe_onnx`` gives them (batch axis first).
        outputs: Graph outputs, same form.
        batch: ``max`` becomes ``max_batch_size``; ``opt`` the preferred batch size.
        triton: Queue delay and instance count.
        gpu: Instance kind override (default: GPU for tensorrt_plan, else CPU).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown Triton backend '{backend}'; expected {', '.join(BACKENDS)}")
    key, value, _, kind = BACKENDS[backend]
    if gpu is not None:
        kind = "KIND_GPU" if gpu else "KIND_CPU"

    def tensor(t: dict[str, Any]) -> str:
        dtype = TRITON_TYPES.get(t["dtype"])
        if dtype is None:
            raise ConfigError(f"tensor {t['name']}: dtype {t['dtype']} has no Triton type")
        dims = t["shape"][1:]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            raise ConfigError(f"tensor {t['name']}: non-batch dims must be fixed, got {dims}")
        return (
            f'  {{\n    name: "{t["name"]}"\n    data_type: {dtype}\n'
            f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
        )

    preferred = sorted({b for b in (batch.opt, batch.max) if b <= batch.max})
    return (
        f'name: "{name}"\n'
        f'{key}: "{value}"\n'
        f"max_batch_size: {batch.max}\n"
        "input [\n" + ",\n".join(tensor(t) for t in inputs) + "\n]\n"
        "output [\n" + ",\n".join(tensor(t) for t in outputs) + "\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {triton.max_queue_delay_us}\n"
        "}\n"
        f"instance_group [\n  {{\n    count: {triton.instances}\n    kind: {kind}\n  }}\n]\n"
    )


def write_repository(
    folder: Path,
    *,
    name: str,
    models: dict[str, Path],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    batch: BatchProfile,
    triton: TritonSpec,
) -> dict[str, str]:
    """Write a model repository with one model per backend.

    Args:
        folder: Repository root.
        name: Base model name.
        models: Backend -> model file (``.onnx``, ``.xml`` with its ``.bin``, ``.plan``).
        inputs: Graph inputs (``describe_onnx`` form).
        outputs: Graph outputs.
        batch: Batch limits.
        triton: Triton settings.

    Returns:
        Backend -> model folder name, relative to ``folder``.
    """
    base = model_name(name)
    written: dict[str, str] = {}
    for backend, src in models.items():
        if backend not in BACKENDS:
            raise ConfigError(f"unknown Triton backend '{backend}'")
        mname = f"{base}_{SUFFIX[backend]}"
        version = folder / mname / "1"
        version.mkdir(parents=True, exist_ok=True)
        for fname in BACKENDS[backend][2]:
            source = (
                src if Path(fname).suffix == src.suffix else src.with_suffix(Path(fname).suffix)
            )
            shutil.copyfile(source, version / fname)
        text = config_pbtxt(
            mname, backend, inputs=inputs, outputs=outputs, batch=batch, triton=triton
        )
        write_text_atomic(folder / mname / "config.pbtxt", text)
        written[backend] = mname
    return written


def parse_pbtxt(text: str) -> dict[str, Any]:
    """A small reader for the configs written here (used by tests and ``doctor``): name, backend
    or platform, max batch, and the name/data_type/dims of each input and output."""
    out: dict[str, Any] = {
        "name": re.search(r'^name:\s*"([^"]+)"', text, re.M).group(1),  # type: ignore[union-attr]
        "max_batch_size": int(re.search(r"max_batch_size:\s*(\d+)", text).group(1)),  # type: ignore[union-attr]
        "dynamic_batching": "dynamic_batching" in text,
    }
    m = re.search(r'^(backend|platform):\s*"([^"]+)"', text, re.M)
    out[m.group(1) if m else "backend"] = m.group(2) if m else None
    for section in ("input", "output"):
        block = re.search(rf"^{section} \[(.*?)^\]", text, re.M | re.S)
        tensors = []
        for t in re.finditer(
            r'name:\s*"([^"]+)"\s*data_type:\s*(\w+)\s*dims:\s*\[([^\]]*)\]',
            block.group(1) if block else "",
        ):
            dims = [int(d) for d in t.group(3).replace(",", " ").split()]
            tensors.append({"name": t.group(1), "data_type": t.group(2), "dims": dims})
        out[section] = tensors
    return out
