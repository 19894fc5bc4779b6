"""onnxruntime engine: ONNX files (float, FP16 or QDQ INT8) on CPU, CUDA or TensorRT providers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgepath.errors import ArtifactError, require
from edgepath.models.cards import EncoderSpec
from edgepath.runtime.base import Engine

log = logging.getLogger(__name__)

#: Execution providers tried for ``device`` (first available wins).
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


class OnnxRuntimeEngine(Engine):
    """An ONNX file run by onnxruntime; the graph's input dtype says whether it takes uint8 tiles.

    Args:
        path: The ``.onnx`` file.
        spec: The encoder spec from the manifest.
        precision: Precision label (the graph carries the real one).
        threads: Intra-op threads (default: onnxruntime's, one per physical core).
        device: ``cpu``, ``cuda`` (``cuda:N``) or ``tensorrt`` (the ORT TensorRT provider).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        spec: EncoderSpec,
        precision: str = "fp32",
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        ort = require("onnxruntime", "onnxruntime", purpose="the onnxruntime engine")
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: ONNX file not found; re-run edgepath export")
        device = device or "cpu"
        kind, _, index = device.partition(":")
        wanted = PROVIDERS.get(kind, PROVIDERS["cpu"])
        available = set(ort.get_available_providers())
        providers = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        if kind != "cpu" and providers[0] == "CPUExecutionProvider":
            log.warning("onnxruntime has no %s provider here; running on CPU", kind)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        provider_options = [
            {"device_id": int(index)} if index and p != "CPUExecutionProvider" else {}
            for p in providers
        ]
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=providers, provider_options=provider_options
        )
        inp = self.session.get_inputs()[0]
        input_format = "nhwc-uint8" if inp.type == "tensor(uint8)" else "nchw-float32"
        super().__init__(spec, precision=precision, input_format=input_format, device=device)
        self._input = inp.name
        self._output = self.session.get_outputs()[0].name
        self.path = path
        self.info = {
            "version": ort.__version__,
            "providers": self.session.get_providers(),
            "threads": threads,
            "file": str(path),
        }

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: batch})[0]

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
