"""OpenVINO engine: IR (``model.xml`` + ``.bin``) or ONNX, float, FP16-compressed or INT8."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ArtifactError, require
from edgepath.models.cards import EncoderSpec
from edgepath.runtime.base import Engine

log = logging.getLogger(__name__)


@functools.cache
def shared_core() -> Any:
    """The process's one ``openvino.Core``: created on first use, kept until the process exits.

    Every OpenVINO user in edgepath takes its Core from here, never ``ov.Core()``. Root cause of
    the SIGSEGV of the single-process test suite (issue #25): OpenVINO's CPU plugin
    (``SigAltStackSetup`` in ``src/plugins/intel_cpu/src/plugin.cpp``, added for AMX by
    openvinotoolkit/openvino#11894) gives the thread that loads it, once per Core, a new
    mmap'ed alternate signal stack. Releasing a Core restores the previous stack only if the
    Core's own is still current, and unmaps its own either way. Two Cores released first in,
    first out (or one released on another thread) therefore leave the thread's alternate signal
    stack pointing at unmapped memory. The next signal whose handler runs with ``SA_ONSTACK``
    (every Python-level handler: torch DataLoader's SIGCHLD handler, faulthandler) cannot be
    delivered, and the kernel kills the process with SIGSEGV (``si_code`` SI_KERNEL), e.g. in
    ``waitpid`` as a child exits. One Core for the life of the process means one plugin and one
    stack, never unmapped while the process runs (``tests/runtime/test_openvino_core.py``).
    """
    import openvino as ov

    return ov.Core()


class OpenVINOEngine(Engine):
    """A model compiled by OpenVINO for one device.

    On CPU the inference precision is pinned to f32 for float models: OpenVINO otherwise picks
    bf16 by itself on CPUs with AVX512-BF16 or AMX, which would change the embeddings of a model
    validated in FP32 (INT8 IRs run their quantized ops in INT8 either way).

    Args:
        path: ``model.xml`` (with its ``.bin`` beside it) or an ``.onnx`` file.
        spec: The encoder spec from the manifest.
        precision: Precision label of the artifact.
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's).
        device: OpenVINO device name (``CPU``, ``GPU``, ``NPU``, ``AUTO``; default ``CPU``).
    """

    name = "openvino"

    def __init__(
        self,
        path: str | Path,
        *,
        spec: EncoderSpec,
        precision: str = "fp32",
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        ov = require("openvino", "openvino", purpose="the OpenVINO engine")
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: model file not found; re-run edgepath export")
        if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
            raise ArtifactError(
                f"{path.with_suffix('.bin')}: IR weights missing beside {path.name}"
            )
        device = (device or "CPU").upper()
        core = shared_core()  # never ov.Core(): see shared_core for the crash one per engine caused
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if device == "CPU" and precision in ("fp32", "fp16"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        model = core.read_model(str(path))
        inp = model.inputs[0]
        input_format = "nhwc-uint8" if inp.get_element_type() == ov.Type.u8 else "nchw-float32"
        super().__init__(spec, precision=precision, input_format=input_format, device=device)
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.path = path
        self.info = {
            "version": ov.get_version(),
            "threads": self.compiled.get_property("INFERENCE_NUM_THREADS"),
            "inference_precision": str(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "file": str(path),
        }

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: batch})
        return np.asarray(out[self.compiled.outputs[0]])

    def close(self) -> None:
        self.request = None  # type: ignore[assignment]
        self.compiled = None  # type: ignore[assignment]
