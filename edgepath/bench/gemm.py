"""The machine's GEMM ceiling per engine and precision, measured at a model's own matmul shapes.

A transformer's FLOPs are almost all matrix multiplies, so the fastest a model can run on an
engine is bounded by how fast that engine multiplies matrices of the model's shapes. This module
times exactly those GEMMs (M = batch × tokens; K, N from each Linear layer) with the engine's own
kernels at the engine's precision:

- ``torch`` fp32: ``torch.matmul`` (oneDNN / MKL sgemm); on a CUDA device fp32, bf16 and fp16:
  ``torch.matmul`` on device tensors of that dtype (cuBLAS; fp32 as torch's float32 matmul
  precision allows, which the torch engine's fp32 runs too), timed with a device synchronisation
  at both ends of each sample, not after every product;
- ``onnxruntime`` fp32: an ONNX ``MatMul``; int8: the faster, shape by shape, of two kernels:
  ``MatMulInteger`` with uint8 activations and int8 weights (the u8s8 MLAS QGEMM kernel that
  ORT's static QDQ MatMuls run on x86; ORT docs, "Quantize ONNX models": U8S8 is the x86
  default) and ``com.microsoft.DynamicQuantizeMatMul`` (float in, float out: the fused dynamic
  INT8 MatMul that ORT-native INT8 models run, quantizing activations inside the kernel);
- ``openvino`` fp32: the same ``MatMul`` graph; int8: the faster, shape by shape, of two QDQ
  graphs (QuantizeLinear → DequantizeLinear on activations, int8 weights → DequantizeLinear) that
  OpenVINO's low-precision transformations turn into an int8 ``FullyConnected``, as they do for
  an NNCF-quantized model: one with a float output, one whose output is quantized again (int8
  out, as between the quantized layers of a model). OpenVINO's times are the ``FullyConnected``
  node's own, from OpenVINO's profiling (``PERF_COUNT``), not the call's wall time: a one-layer
  graph pays for copying its float input and output in and out of the plugin on every call
  (about a third of the call at ViT-S shapes on an AVX-512 VNNI CPU), which a model's inner
  layers never do. Timed by the wall clock, the int8 ceiling came out at 460-520 GFLOP/s while
  the model's own int8 layers ran at ~730 (profiled), so the per-op roofline read 106-120 %.

The ceiling is the FLOP-weighted rate over the shapes: Σ flops / Σ time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgepath.errors import ConfigError

log = logging.getLogger(__name__)

_KERNELS = {
    ("torch", "fp32"): "torch.matmul fp32",
    ("onnxruntime", "fp32"): "ORT MatMul fp32",
    ("openvino", "fp32"): "OpenVINO MatMul fp32 (node time)",
}

#: OpenVINO's node types that do a model's matmuls (after its transformations).
_OPENVINO_MATMUL_NODES = ("FullyConnected", "MatMul")

#: Engines/precisions timed with more than one kernel: the ceiling is the fastest per shape.
_ALT_KERNELS = {
    ("onnxruntime", "int8"): ("MatMulInteger", "DynamicQuantizeMatMul"),
    ("openvino", "int8"): ("QDQ", "QDQ-int8-out"),
}
_KERNEL_LABEL = {
    "MatMulInteger": "ORT MatMulInteger u8s8",
    "DynamicQuantizeMatMul": "ORT DynamicQuantizeMatMul s8",
    "QDQ": "OpenVINO int8 FullyConnected float out (node time)",
    "QDQ-int8-out": "OpenVINO int8 FullyConnected int8 out (node time)",
}


@dataclasses.dataclass(frozen=True)
class KernelTime:
    """What a runner returns when the engine timed its kernel itself (OpenVINO's profiling)."""

    seconds: float


PRECISIONS = {
    "torch": ("fp32",),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "int8"),
}

#: The same on a CUDA device (the torch engine's fp32 and its fp16 / bf16 autocast).
CUDA_PRECISIONS = {"torch": ("fp32", "bf16", "fp16")}

_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _on_cuda(device: str | None) -> bool:
    return str(device or "cpu").startswith("cuda")


def precisions(engine: str, device: str | None = "cpu") -> tuple[str, ...]:
    """Precisions with a GEMM ceiling benchmark for ``engine`` on ``device``."""
    table = CUDA_PRECISIONS if _on_cuda(device) else PRECISIONS
    return table.get(engine, ())


def _time(
    fn: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    min_time: float,
    sync: Callable[[], Any] | None = None,
) -> float:
    """Median seconds of one call (each sample runs enough calls to last ``min_time``).

    On the host (``sync`` None) a sample loops until ``min_time`` has passed; where ``fn``
    returns a ``KernelTime`` (the engine profiled its kernel), those times are the sample. On an
    asynchronous device (``sync``: its synchronisation) a loop on the host clock measures only
    how fast calls are *queued*: it keeps launching until the driver's launch queue (about a
    thousand kernels) is full, and the closing ``sync`` then waits for all of them, so with multi-millisecond
    GEMMs a sample lasts seconds instead of ``min_time``. That is the cause found in this code for
    the first H200 run (2026-12-04), whose bench throughput parts ran past their limits (75 s and
    150 s) without output. Here one synchronised call measures the call's duration first; a
    sample then runs the number of calls that fills ``min_time`` back to back and synchronises
    once (launches still overlap).
    """
    for _ in range(warmup):
        fn()
    n_calls = None
    if sync is not None:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        n_calls = max(1, math.ceil(min_time / max(time.perf_counter() - t0, 1e-9)))
    samples = []
    for _ in range(repeats):
        if sync is not None:
            sync()
            t0 = time.perf_counter()
            for _ in range(n_calls):
                fn()
            sync()
            samples.append((time.perf_counter() - t0) / n_calls)
            continue
        n, t0, kernel = 0, time.perf_counter(), 0.0
        while True:
            ret = fn()
            if isinstance(ret, KernelTime):  # the engine's own timing of the kernel
                kernel += ret.seconds
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        samples.append((kernel or dt) / n)
    return statistics.median(samples)


def _sync(engine: str, device: str | None) -> Callable[[], Any] | None:
    if engine == "torch" and _on_cuda(device):
        import torch

        return torch.cuda.synchronize
    return None


def _onnx_matmul(
    m: int, k: int, n: int, precision: str, rng: np.random.Generator, kernel: str = "MatMulInteger"
):
    """An ONNX model of one matmul at ``precision`` (int8: with ``kernel``) and its feed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    opsets = [helper.make_opsetid("", 17)]
    if precision == "fp32":
        w = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "W")
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        nodes, inits = [node], [w]
        feed = {"A": rng.standard_normal((m, k), dtype=np.float32)}
    elif kernel == "DynamicQuantizeMatMul":
        inits = [
            numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "W"),
            numpy_helper.from_array(np.array([0.01], dtype=np.float32), "w_scale"),
            numpy_helper.from_array(np.array([0], dtype=np.int8), "w_zp"),
        ]
        nodes = [
            helper.make_node(
                "DynamicQuantizeMatMul",
                ["A", "W", "w_scale", "w_zp"],
                ["Y"],
                domain="com.microsoft",
            )
        ]
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        feed = {"A": rng.standard_normal((m, k), dtype=np.float32)}
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    else:
        w = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "W")
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
        azp = numpy_helper.from_array(np.array(128, dtype=np.uint8), "azp")
        wzp = numpy_helper.from_array(np.array(0, dtype=np.int8), "wzp")
        nodes = [helper.make_node("MatMulInteger", ["A", "W", "azp", "wzp"], ["Y"])]
        inits = [w, azp, wzp]
        feed = {"A": rng.integers(0, 256, (m, k), dtype=np.uint8)}
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("A", a_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if len(opsets) == 1:  # the checker does not know contrib ops
        onnx.checker.check_model(model)
    return model, feed


def _onnx_qdq_matmul(m: int, k: int, n: int, rng: np.random.Generator, *, int8_out: bool = False):
    """Float in, QDQ on activations and int8 weights, float out: OpenVINO's int8 pattern. With
    ``int8_out`` the product is quantized again (QuantizeLinear → DequantizeLinear), as where a
    quantized layer feeds another: OpenVINO then fuses that quantization into the matmul."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "Wq"),
        numpy_helper.from_array(np.array(0.02, dtype=np.float32), "a_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.uint8), "a_zp"),
        numpy_helper.from_array(np.full(n, 0.01, dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(n, dtype=np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, dtype=np.uint8), "y_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["A", "a_scale", "a_zp"], ["Aq"]),
        helper.make_node("DequantizeLinear", ["Aq", "a_scale", "a_zp"], ["Ad"]),
        helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["Wd"], axis=1),
        helper.make_node("MatMul", ["Ad", "Wd"], ["P" if int8_out else "Y"]),
    ]
    if int8_out:
        nodes += [
            helper.make_node("QuantizeLinear", ["P", "y_scale", "y_zp"], ["Pq"]),
            helper.make_node("DequantizeLinear", ["Pq", "y_scale", "y_zp"], ["Y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "gemm_qdq",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feed = {"A": np.abs(rng.standard_normal((m, k), dtype=np.float32))}
    return model, feed


def _runner(
    engine: str,
    precision: str,
    m: int,
    k: int,
    n: int,
    *,
    threads: int,
    seed: int = 0,
    kernel: str = "MatMulInteger",
    device: str | None = "cpu",
) -> Callable[[], Any]:
    rng = np.random.default_rng(seed)
    if engine == "torch":
        import torch

        torch.set_num_threads(threads)
        if _on_cuda(device):  # random operands: zeros run faster than real data on some GPUs
            gen = torch.Generator(device=device).manual_seed(seed)
            dtype = getattr(torch, _TORCH_DTYPES[precision])
            a = torch.randn(m, k, device=device, dtype=dtype, generator=gen)
            w = torch.randn(k, n, device=device, dtype=dtype, generator=gen)
        else:
            a = torch.randn(m, k)
            w = torch.randn(k, n)

        def run() -> Any:
            with torch.inference_mode():
                return torch.matmul(a, w)

        return run
    if engine == "onnxruntime":
        import onnxruntime as ort

        model, feed = _onnx_matmul(m, k, n, precision, rng, kernel)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # no busy-waiting after a run: it would steal cycles from the model timed next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        return lambda: sess.run(None, feed)
    if engine == "openvino":
        if precision == "int8":
            model, feed = _onnx_qdq_matmul(m, k, n, rng, int8_out=kernel == "QDQ-int8-out")
        else:
            model, feed = _onnx_matmul(m, k, n, precision, rng)
        return _openvino_runner(model, next(iter(feed.values())), threads)
    raise ConfigError(
        f"no GEMM benchmark for engine '{engine}'; expected one of {list(PRECISIONS)}"
    )


def _openvino_runner(model: Any, arr: np.ndarray, threads: int) -> Callable[[], KernelTime]:
    """One OpenVINO inference of ``model`` per call, returning the matmul node's own time from
    OpenVINO's profiling (see the module docstring)."""
    from edgepath.runtime.openvino_engine import shared_core

    core = shared_core()
    ov_model = core.read_model(model.SerializeToString(), b"")
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "PERF_COUNT": True,
    }
    compiled = core.compile_model(ov_model, "CPU", config)
    request = compiled.create_infer_request()

    def run() -> KernelTime:
        request.infer({0: arr})
        secs = [
            p.real_time.total_seconds()
            for p in request.profiling_info
            if p.node_type.startswith(_OPENVINO_MATMUL_NODES)
        ]
        if not secs:  # a plugin that renames its matmul: a wrong ceiling must not pass quietly
            raise RuntimeError(
                "OpenVINO's profile has no FullyConnected/MatMul node: "
                + ", ".join(sorted({p.node_type for p in request.profiling_info}))
            )
        return KernelTime(sum(secs))

    return run


def gemm_ceiling(
    engine: str,
    precision: str,
    shapes: Sequence[tuple[int, int, int, int]],
    *,
    threads: int,
    warmup: int = 2,
    repeats: int = 5,
    min_time: float = 0.2,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Measured GEMM rate of ``engine`` at ``precision`` over (M, K, N, count) shapes.

    Args:
        engine: ``torch``, ``onnxruntime`` or ``openvino``.
        precision: ``fp32`` or ``int8`` (where the engine has it); torch on CUDA: ``fp32``,
            ``bf16`` or ``fp16``.
        shapes: (M, K, N, count): count is how many such GEMMs one forward pass runs.
        threads: Intra-op threads.
        warmup: Untimed calls per shape.
        repeats: Timed samples per shape (median kept).
        min_time: Each sample loops for at least this many seconds.
        device: ``cpu``, or ``cuda`` / ``cuda:N`` for the torch engine.

    Returns:
        ``gflops`` (FLOP-weighted over the shapes), per-shape ``shapes`` rows, ``engine``,
        ``precision``, ``threads``, ``kernel``, ``device``.
    """
    _check(engine, precision, device)
    sync = _sync(engine, device)
    kernels = _kernels(engine, precision)
    rows, total_flops, total_time = [], 0.0, 0.0
    per_kernel = {kn: [0.0, 0.0] for kn in kernels}
    for m, k, n, count in shapes:
        flops = 2.0 * m * k * n
        secs = {}
        for kn in kernels:
            run = _runner(engine, precision, m, k, n, threads=threads, kernel=kn, device=device)
            secs[kn] = _time(run, warmup=warmup, repeats=repeats, min_time=min_time, sync=sync)
            per_kernel[kn][0] += flops * count
            per_kernel[kn][1] += secs[kn] * count
        sec = min(secs.values())
        rows.append({"m": m, "k": k, "n": n, "count": count, "gflops": flops / sec / 1e9})
        if len(kernels) > 1:
            rows[-1]["kernel"] = _KERNEL_LABEL[min(secs, key=secs.__getitem__)]
        total_flops += flops * count
        total_time += sec * count
    out = {
        "engine": engine,
        "precision": precision,
        "threads": threads,
        "device": device or "cpu",
        "kernel": _label(engine, precision, device),
        "gflops": total_flops / total_time / 1e9,
        "shapes": rows,
    }
    if len(kernels) > 1:
        out["kernels"] = {_KERNEL_LABEL[kn]: f / t / 1e9 for kn, (f, t) in per_kernel.items()}
    return out


def _check(engine: str, precision: str, device: str | None) -> None:
    has = precisions(engine, device)
    if precision not in has:
        raise ConfigError(
            f"no {precision} GEMM kernel benchmark for engine '{engine}' on {device or 'cpu'} "
            f"(has: {', '.join(has) or 'none'})"
        )


def _kernels(engine: str, precision: str) -> tuple[str, ...]:
    return _ALT_KERNELS.get((engine, precision), ("MatMulInteger",))


def _label(engine: str, precision: str, device: str | None = "cpu") -> str:
    if engine == "torch" and _on_cuda(device):
        import torch

        kind = precision
        if precision == "fp32":
            kind = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32 (no tf32)"
        return f"torch.matmul {kind} (cuBLAS, {torch.cuda.get_device_name(device)})"
    kernels = _ALT_KERNELS.get((engine, precision))
    if not kernels:
        return _KERNELS[(engine, precision)]
    return " | ".join(_KERNEL_LABEL[k] for k in kernels) + " (faster per shape)"


class Ceiling:
    """A GEMM ceiling prepared once and sampled many times (interleaved with model timings).

    Sampling it right after a model's batches, round after round, exposes both to the same
    machine load, so the fraction model/ceiling stays meaningful on a shared machine. Where an
    engine has more than one INT8 kernel, each is timed and the faster per shape is the ceiling.
    """

    def __init__(
        self,
        engine: str,
        precision: str,
        shapes: Sequence[tuple[int, int, int, int]],
        *,
        threads: int,
        min_time: float = 0.1,
        device: str | None = "cpu",
    ) -> None:
        _check(engine, precision, device)
        self.engine, self.precision, self.threads = engine, precision, threads
        self.device = device or "cpu"
        self._sync = _sync(engine, device)
        self.shapes = list(shapes)
        self.min_time = min_time
        self.kernels = _kernels(engine, precision)
        self._runs = [
            {
                kn: _runner(engine, precision, m, k, n, threads=threads, kernel=kn, device=device)
                for kn in self.kernels
            }
            for m, k, n, _ in shapes
        ]
        for runs in self._runs:
            for run in runs.values():
                run()  # warm-up
        self.samples: list[float] = []
        self.per_shape: list[list[float]] = [[] for _ in self.shapes]
        self.per_kernel: dict[str, list[float]] = {kn: [] for kn in self.kernels}

    def sample(self) -> float:
        """Time every shape once per kernel (each looped for ``min_time``); returns GFLOP/s."""
        total_flops = total_time = 0.0
        kern = {kn: [0.0, 0.0] for kn in self.kernels}
        for i, ((m, k, n, count), runs) in enumerate(zip(self.shapes, self._runs, strict=True)):
            flops = 2.0 * m * k * n
            secs = {}
            for kn, run in runs.items():
                secs[kn] = _time(run, warmup=0, repeats=1, min_time=self.min_time, sync=self._sync)
                kern[kn][0] += flops * count
                kern[kn][1] += secs[kn] * count
            sec = min(secs.values())
            self.per_shape[i].append(flops / sec / 1e9)
            total_flops += flops * count
            total_time += sec * count
        for kn, (f, t) in kern.items():
            self.per_kernel[kn].append(f / t / 1e9)
        self.samples.append(total_flops / total_time / 1e9)
        return self.samples[-1]

    def result(self) -> dict[str, Any]:
        """The median over samples, in ``gemm_ceiling``'s format."""
        out = {
            "engine": self.engine,
            "precision": self.precision,
            "threads": self.threads,
            "device": self.device,
            "kernel": _label(self.engine, self.precision, self.device),
            "gflops": statistics.median(self.samples),
            "samples": len(self.samples),
            "shapes": [
                {"m": m, "k": k, "n": n, "count": c, "gflops": statistics.median(g)}
                for (m, k, n, c), g in zip(self.shapes, self.per_shape, strict=True)
            ],
        }
        if len(self.kernels) > 1:
            out["kernels"] = {
                _KERNEL_LABEL[kn]: statistics.median(v) for kn, v in self.per_kernel.items()
            }
        return out


def model_shapes(cost: Any, batch: int) -> list[tuple[int, int, int, int]]:
    """(M, K, N, count) of a ``VitCost``'s Linear layers at ``batch`` tiles."""
    m = batch * cost.tokens
    return [(m, k, n, c) for k, n, c in cost.linear_shapes]
