"""torch engine: the reference ``Encoder`` in eager PyTorch (CPU or CUDA), FP32 unless asked."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from edgepath.errors import ConfigError
from edgepath.runtime.base import Engine

if TYPE_CHECKING:
    from edgepath.models.encoder import Encoder

log = logging.getLogger(__name__)

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchEngine(Engine):
    """A torch ``Encoder`` behind the ``Engine`` interface.

    Args:
        encoder: The encoder (put in eval mode, moved to ``device``).
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (CUDA only).
        threads: ``torch.set_num_threads`` (process-wide) when given.
        device: ``cpu`` or ``cuda`` / ``cuda:N`` (default: ``cpu``).
    """

    name = "torch"

    def __init__(
        self,
        encoder: Encoder,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        import torch

        device = device or "cpu"
        if precision not in _DTYPES:
            raise ConfigError(
                f"the torch engine runs {', '.join(_DTYPES)}, not '{precision}'; run quantized "
                "artifacts with --engine onnxruntime or openvino"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' asked for but torch sees no CUDA GPU; use cpu")
        if precision != "fp32" and not device.startswith("cuda"):
            raise ConfigError(f"the torch engine runs {precision} on CUDA only; use fp32 on CPU")
        if threads:
            torch.set_num_threads(int(threads))
        super().__init__(encoder.spec, precision=precision, device=device)
        self.encoder = encoder.eval().to(device)
        self._dtype = getattr(torch, _DTYPES[precision])
        self.info = {"version": torch.__version__, "threads": torch.get_num_threads()}

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=self.device.split(":")[0],
                dtype=self._dtype,
                enabled=self.precision != "fp32",
            ),
        ):
            y = self.encoder(x)
        return y.float().cpu().numpy()

    def close(self) -> None:
        self.encoder = None  # type: ignore[assignment]
