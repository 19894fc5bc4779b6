"""torch engine: the reference ``Encoder`` in eager PyTorch (CPU or CUDA), FP32 unless asked."""

from __future__ import annotations

import functools
import logging
import os
import platform
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepath.errors import ConfigError
from edgepath.runtime.base import Engine

if TYPE_CHECKING:
    from edgepath.models.encoder import Encoder

log = logging.getLogger(__name__)

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

#: What ``--device`` takes for the torch engine (``cuda:N`` is accepted too).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

#: Precisions the torch engine runs: fp32 anywhere, fp16 / bf16 autocast on CUDA.
PRECISIONS: tuple[str, ...] = tuple(_DTYPES)


#: ``mallopt`` parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> str | None:
    """Make glibc's malloc keep freed memory for reuse instead of giving it back to the kernel;
    what was set, or None (not glibc, or ``EDGEPATH_MALLOC_TUNING=0``).

    Root cause of the torch engine's system time on CPU (FINDINGS: batch 32 spent 134-176 s per
    slide in the kernel against 18-31 s at batch 16): glibc serves every allocation above its
    mmap threshold (at most 32 MiB) with fresh pages from ``mmap`` and returns them with
    ``munmap`` when freed, and it trims the top of the heap likewise. torch allocates every
    forward pass's activations anew (ViT-S/14's attention scores alone are 26 MB per layer at
    batch 16, 52 MB at 32), so each batch page-faulted 0.6-1.7 GB of zeroed pages again:
    150,000-460,000 page faults per batch. With ``mmap`` off for allocations and trimming only
    above 2 GiB of free heap top, freed blocks are reused: 0 page faults, and ViT-S/14 FP32 on
    2 AVX2 cores went from 10.2-10.8 to 11.8-12.3 tiles/s at batch 16 and 32. The price is that
    the process keeps its peak heap (it needs it again at the next batch). Process-wide, once.
    """
    if os.environ.get("EDGEPATH_MALLOC_TUNING", "1") == "0":
        return None
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can be given
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, trim) != 1:
        return None
    return "glibc mallopt M_MMAP_MAX=0 M_TRIM_THRESHOLD=2GiB"


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when torch sees a GPU, else ``cpu``; checks ``cuda[:N]``.

    Raises:
        ConfigError: ``cuda`` asked for where torch sees no CUDA GPU, or an unknown device.
    """
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device {device!r}: expected {', '.join(DEVICES)} (or cuda:N)")
    return device


def cuda_info(device: str) -> dict[str, Any]:
    """Name, compute capability, memory and the torch / CUDA versions of a CUDA ``device``."""
    import torch

    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    return {
        "device_name": torch.cuda.get_device_name(index),
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gb": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "fp32_matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee fp32",
    }


class _CudaFeed:
    """Host-to-device copies of the torch engine on CUDA: pinned buffers and a copy stream.

    A batch is copied (on the CPU) into one of two page-locked host buffers, and from there to
    the GPU on a stream of its own, without waiting: the model then waits for that copy on the
    GPU, not the CPU. So, with ``Engine.submit``, the next batch's copy runs while the current
    batch's model runs. From pageable memory (what ``tensor.to("cuda")`` of a numpy batch
    does), CUDA copies through a staging buffer of its own and the CPU waits for the copy.
    """

    def __init__(self, device: str, slots: int = 2) -> None:
        import torch

        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self._host: list[Any] = [None] * slots
        self._copied: list[Any] = [None] * slots  # events: the copy out of that buffer is done
        self._next = 0

    def put(self, batch: np.ndarray) -> Any:
        """``batch`` on the GPU, for use on the current stream (``batch`` is free on return)."""
        import torch

        i, self._next = self._next, (self._next + 1) % len(self._host)
        buf = self._host[i]
        if buf is None or tuple(buf.shape) != batch.shape or buf.numpy().dtype != batch.dtype:
            buf = self._host[i] = torch.from_numpy(np.empty_like(batch)).pin_memory()
        elif self._copied[i] is not None:
            self._copied[i].synchronize()  # its previous batch has left for the GPU
        buf.numpy()[...] = batch
        with torch.cuda.stream(self.stream):
            x = buf.to(self.device, non_blocking=True)
            self._copied[i] = torch.cuda.Event()
            self._copied[i].record(self.stream)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(self._copied[i])
        x.record_stream(compute)  # made on the copy stream, used on this one
        return x


class TorchEngine(Engine):
    """A torch ``Encoder`` behind the ``Engine`` interface.

    On CUDA the engine takes uint8 NHWC tiles by default (``input_format`` ``nhwc-uint8``):
    they go to the GPU as they are, a quarter of float32's bytes, through pinned memory and a
    copy stream (``_CudaFeed``), and are normalised there with the card's mean and std
    (``edgepath.models.preprocess.standardize``, the same float32 operations as the CPU's).
    ``submit`` returns before the GPU has finished, so ``edgepath embed`` copies batch i+1 while
    batch i runs.

    Args:
        encoder: The encoder (put in eval mode, moved to ``device``).
        precision: ``fp32``, or ``fp16``/``bf16`` autocast (CUDA only).
        threads: ``torch.set_num_threads`` (process-wide) when given.
        device: ``cpu``, ``cuda`` / ``cuda:N`` or ``auto`` (default: ``cpu``).
        compile: Run the encoder through ``torch.compile`` (compiled on the first batch of each
            shape, so give the benchmark a warm-up batch).
        input_format: ``nhwc-uint8`` (normalised in the engine) or ``nchw-float32``; default:
            ``nhwc-uint8`` on CUDA, ``nchw-float32`` on the CPU (where the reader processes
            normalise in parallel).
    """

    name = "torch"

    def __init__(
        self,
        encoder: Encoder,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        device: str | None = None,
        compile: bool = False,
        input_format: str | None = None,
    ) -> None:
        import torch

        device = resolve_device(device or "cpu")
        self.check_precision(precision, device)
        if threads:
            torch.set_num_threads(int(threads))
        cuda = device.startswith("cuda")
        fmt = input_format or ("nhwc-uint8" if cuda else "nchw-float32")
        super().__init__(encoder.spec, precision=precision, input_format=fmt, device=device)
        self.encoder = encoder.eval().to(device)
        self._fn = torch.compile(self.encoder) if compile else self.encoder
        self._dtype = getattr(torch, _DTYPES[precision])
        self._feed = _CudaFeed(device) if cuda else None
        self.info = {
            "version": torch.__version__,
            "threads": torch.get_num_threads(),
            "compiled": bool(compile),
        }
        if cuda:
            self.info.update(cuda_info(device))
            self.info["host_to_device"] = "pinned memory, copy stream, 2 buffers"
        else:  # CPU activations live in glibc's heap: see keep_freed_memory
            self.info["malloc"] = keep_freed_memory()

    @staticmethod
    def check_precision(precision: str, device: str) -> None:
        """Refuse a precision the torch engine cannot run on ``device`` (one line, the fix)."""
        if precision not in _DTYPES:
            raise ConfigError(
                f"the torch engine runs {', '.join(_DTYPES)}, not '{precision}'; run quantized "
                "artifacts with --engine onnxruntime or openvino"
            )
        if precision != "fp32" and not device.startswith("cuda"):
            raise ConfigError(
                f"the torch engine runs {precision} on CUDA only; use --precision fp32 on "
                f"{device}, or --device cuda on a machine with an NVIDIA GPU"
            )

    def _prepare(self, x: np.ndarray, *, tiles: bool) -> tuple[np.ndarray, int]:
        if tiles or self.input_format != "nhwc-uint8":
            return super()._prepare(x, tiles=tiles)
        # normalised float32 NCHW goes to the model as it is (no round trip through uint8)
        t = np.asarray(x)
        self._check_shape(t.shape, "nchw")
        return np.ascontiguousarray(t, dtype=np.float32), len(t)

    def _input(self, batch: np.ndarray) -> Any:
        """The model's normalised float32 NCHW input, on the device: ``batch`` is that already,
        or uint8 NHWC tiles, normalised here."""
        import torch

        from edgepath.models.preprocess import standardize

        if self._feed is not None:
            x = self._feed.put(np.ascontiguousarray(batch))
        else:
            x = torch.from_numpy(np.ascontiguousarray(batch))
        if batch.dtype != np.uint8:
            return x
        # as edgepath.models.preprocess.normalize: float32 / 255, then (x - mean) / std
        x = x.permute(0, 3, 1, 2).contiguous().float() / 255.0
        return standardize(x, self.spec.input.mean, self.spec.input.std)

    def _launch(self, batch: np.ndarray) -> Any:
        import torch

        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=self.device.split(":")[0],
                dtype=self._dtype,
                enabled=self.precision != "fp32",
            ),
        ):
            y = self._fn(self._input(batch))
        if self._feed is None:
            out = y.float().numpy()
            return lambda: out
        host = y.float().to("cpu", non_blocking=True)  # into pinned memory, when it is done
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self._feed.device))

        def fetch() -> np.ndarray:
            done.synchronize()
            return host.numpy()

        return fetch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._launch(batch)()

    def close(self) -> None:
        self.encoder = None  # type: ignore[assignment]
        self._fn = None
        self._feed = None
