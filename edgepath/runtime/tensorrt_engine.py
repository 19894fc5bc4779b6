"""TensorRT engine: a serialized ``.plan`` run with the TensorRT 10+ tensor API on one CUDA GPU.

Plans are not portable across GPU architectures or TensorRT versions (they embed kernels chosen
for the build machine), so the manifest records both and this engine refuses a mismatch with the
fix (rebuild on this machine) instead of failing deep inside TensorRT.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgepath.errors import ArtifactError, ConfigError, require
from edgepath.models.cards import EncoderSpec
from edgepath.runtime.base import Engine

log = logging.getLogger(__name__)


class TensorRTEngine(Engine):
    """A TensorRT plan (engine file) on a CUDA GPU; device buffers are torch CUDA tensors.

    Args:
        path: The ``.plan`` file.
        spec: The encoder spec from the manifest.
        precision: Precision the plan was built at.
        device: ``cuda`` or ``cuda:N``.
        built_with: The manifest's ``tensorrt`` record (``version``, ``compute_capability``),
            checked against this machine.
    """

    name = "tensorrt"

    def __init__(
        self,
        path: str | Path,
        *,
        spec: EncoderSpec,
        precision: str = "fp16",
        threads: int | None = None,
        device: str | None = None,
        built_with: dict | None = None,
    ) -> None:
        trt = require("tensorrt", "tensorrt", purpose="the TensorRT engine")
        import torch

        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: TensorRT plan not found; build it (edgepath export)")
        if not torch.cuda.is_available():
            raise ConfigError("the TensorRT engine needs a CUDA GPU; none is visible here")
        device = device or "cuda:0"
        if not device.startswith("cuda"):
            raise ConfigError(f"the TensorRT engine runs on cuda devices, not '{device}'")
        index = int(device.partition(":")[2] or 0)
        cc = "{}.{}".format(*torch.cuda.get_device_capability(index))
        if built_with:
            want_cc = built_with.get("compute_capability")
            want_v = str(built_with.get("version", ""))
            if want_cc and want_cc != cc:
                raise ArtifactError(
                    f"{path}: plan built for compute capability {want_cc}, this GPU is {cc}; "
                    "rebuild the engine on this machine"
                )
            if want_v and want_v.split(".")[:2] != trt.__version__.split(".")[:2]:
                raise ArtifactError(
                    f"{path}: plan built with TensorRT {want_v}, this is {trt.__version__}; "
                    "rebuild the engine on this machine"
                )
        self._torch = torch
        self._device = torch.device("cuda", index)
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{path}: TensorRT could not deserialize the plan; rebuild it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._input, self._output = inputs[0], outputs[0]
        in_dtype = self.engine.get_tensor_dtype(self._input)
        input_format = "nhwc-uint8" if in_dtype == trt.DataType.UINT8 else "nchw-float32"
        super().__init__(spec, precision=precision, input_format=input_format, device=device)
        self.stream = torch.cuda.Stream(self._device)
        self.info = {
            "version": trt.__version__,
            "compute_capability": cc,
            "gpu": torch.cuda.get_device_name(index),
            "file": str(path),
        }

    def _run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device, non_blocking=True)
        self.context.set_input_shape(self._input, tuple(x.shape))
        out = torch.empty((x.shape[0], self.embed_dim), dtype=torch.float32, device=self._device)
        self.context.set_tensor_address(self._input, x.data_ptr())
        self.context.set_tensor_address(self._output, out.data_ptr())
        torch.cuda.current_stream(self._device).synchronize()
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ArtifactError("TensorRT execution failed; see the TensorRT log above")
        self.stream.synchronize()
        return out.cpu().numpy()

    def close(self) -> None:
        self.context = None
        self.engine = None
