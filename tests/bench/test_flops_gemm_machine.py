"""FLOPs per tile against published values; GEMM ceiling and machine description shape."""

from __future__ import annotations

import pytest

from edgepath.bench import flops, gemm
from edgepath.eval import machine
from edgepath.models.cards import Architecture, EmbeddingSpec, EncoderSpec, InputSpec, TokenLayout
from edgepath.models.students import student_spec

INPUT = InputSpec(224, 0.5, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _timm(name: str, patch: int, dim: int) -> EncoderSpec:
    return EncoderSpec(Architecture(name), INPUT, TokenLayout(patch), EmbeddingSpec("cls", dim))


def test_vit_b16_matches_the_published_17_6_g() -> None:
    """DeiT Table 1 / timm: ViT-B/16 at 224 px is 17.6 G multiply-adds (often labelled GFLOPs)."""
    cost = flops.vit_cost(_timm("vit_base_patch16_224", 16, 768))
    assert cost.tokens == 197 and cost.depth == 12 and cost.width == 768
    assert cost.macs / 1e9 == pytest.approx(17.6, rel=0.005)
    assert cost.gflops == pytest.approx(35.1, rel=0.005)


def test_vit_l16_and_hand_formula_for_vit_s14() -> None:
    # ViT-L/16 (UNI's architecture): 61.6 G MACs in timm's tables
    assert flops.vit_cost(_timm("vit_large_patch16_224", 16, 1024)).macs / 1e9 == pytest.approx(
        61.6, rel=0.005
    )
    # ViT-S/14 + 4 registers at 224: N = 256 + 5, D = 384, 12 blocks, MLP 4D
    n, d, layers = 261, 384, 12
    hand = layers * (4 * n * d * d + 2 * n * d * 4 * d + 2 * n * n * d) + 256 * 3 * 14 * 14 * d
    cost = flops.vit_cost(student_spec("vit-s14", input=INPUT))
    assert cost.macs == hand
    assert sorted(cost.linear_shapes) == [
        (384, 384, 12),
        (384, 1152, 12),
        (384, 1536, 12),
        (1536, 384, 12),
    ]


def test_gemm_ceiling_rows_and_errors() -> None:
    shapes = [(64, 32, 48, 2)]
    for engine, precision in [("torch", "fp32"), ("onnxruntime", "int8")]:
        res = gemm.gemm_ceiling(
            engine, precision, shapes, threads=1, warmup=1, repeats=1, min_time=0.0
        )
        assert res["gflops"] > 0 and res["shapes"][0]["m"] == 64
        assert res["engine"] == engine and res["precision"] == precision
    # ORT INT8: static (MatMulInteger) and fused dynamic (DynamicQuantizeMatMul) kernels are both
    # timed; the ceiling takes the faster per shape, so it is at least either kernel's rate
    assert set(res["kernels"]) == {"ORT MatMulInteger u8s8", "ORT DynamicQuantizeMatMul s8"}
    assert res["gflops"] >= max(res["kernels"].values()) * (1 - 1e-9)
    assert res["shapes"][0]["kernel"] in res["kernels"]
    from edgepath.errors import ConfigError

    with pytest.raises(ConfigError, match="int8"):
        gemm.gemm_ceiling("torch", "int8", shapes, threads=1)
    cost = flops.vit_cost(student_spec("vit-test14", input=INPUT))
    assert gemm.model_shapes(cost, 4)[0][0] == 4 * cost.tokens


def test_machine_description() -> None:
    d = machine.describe(threads=2)
    assert d["threads"] == 2 and d["cores"] >= 1
    assert "torch" in d["versions"] and "numpy" in d["versions"]
    assert isinstance(d["cpu_features"], list)
    assert machine.rss_mb(peak=True) > 0


def test_interleaved_ceiling_samples() -> None:
    c = gemm.Ceiling(
        "onnxruntime", "fp32", [(32, 16, 24, 3), (32, 24, 16, 1)], threads=1, min_time=0.0
    )
    for _ in range(3):
        assert c.sample() > 0
    r = c.result()
    assert r["samples"] == 3 and len(r["shapes"]) == 2 and r["kernel"] == "ORT MatMul fp32"
    # the FLOP-weighted rate lies between the per-shape rates
    rates = sorted(s["gflops"] for s in r["shapes"])
    assert rates[0] * 0.5 <= r["gflops"] <= rates[1] * 2
    c8 = gemm.Ceiling("onnxruntime", "int8", [(32, 16, 24, 1)], threads=1, min_time=0.0)
    c8.sample()
    r8 = c8.result()
    assert len(r8["kernels"]) == 2 and r8["gflops"] >= max(r8["kernels"].values()) * (1 - 1e-9)


class _FakeDevice:
    """An asynchronous device: a call queues ``cost`` seconds of work and returns at once;
    ``sync`` waits (sleeps) until the queue has run. No launch-queue limit, so a timing loop on
    the host clock would queue work without bound."""

    def __init__(self, cost: float) -> None:
        self.cost, self.queued, self.calls = cost, 0.0, 0

    def call(self) -> None:
        self.queued += self.cost
        self.calls += 1

    def sync(self) -> None:
        import time

        time.sleep(self.queued)
        self.queued = 0.0


def test_device_timing_is_bounded_by_min_time_not_by_the_queue() -> None:
    """The GEMM timer on an async device (CUDA) lasts about ``min_time`` per sample and reports
    the per-call device time; the host-clock loop it replaced queued ~10^5 calls here."""
    import time

    dev = _FakeDevice(cost=0.002)
    t0 = time.perf_counter()
    sec = gemm._time(dev.call, warmup=1, repeats=3, min_time=0.05, sync=dev.sync)
    wall = time.perf_counter() - t0
    assert sec == pytest.approx(0.002, rel=0.3)
    assert wall < 1.0, wall  # 1 + 3 samples of ~0.05 s, not queue x cost
    assert dev.calls < 200, dev.calls


def test_per_op_roofline_puts_each_class_at_its_own_ceiling() -> None:
    from edgepath.bench.flops import vit_cost
    from edgepath.bench.throughput import roofline

    cost = vit_cost(student_spec("vit-s14", input=INPUT))
    # every block Linear: 4 D² per token (qkv 3 D², proj D²) + 8 D² (MLP 4x): 12 D² MACs
    assert cost.linear_flops == 2 * cost.tokens * 12 * cost.width**2 * cost.depth
    assert cost.other_flops == cost.flops - cost.linear_flops > 2 * cost.attention_macs - 1
    int8, fp32 = {"gflops": 200.0}, {"gflops": 100.0}
    seconds = cost.linear_flops / 200e9 + cost.other_flops / 100e9
    r = roofline(cost, 10.0, "int8", int8, fp32)
    assert r["roofline_tiles_per_s"] == pytest.approx(1 / seconds)
    assert r["roofline_fraction"] == pytest.approx(10.0 * seconds)
    # the all-INT8 figure ("ceil%") credits attention with the INT8 rate: a lower fraction
    assert r["roofline_fraction"] > 10.0 * cost.flops / 200e9
    f = roofline(cost, 10.0, "fp32", fp32, None)  # float: one ceiling for all FLOPs
    assert f["roofline_fraction"] == pytest.approx(10.0 * cost.flops / 100e9)
    assert roofline(cost, 10.0, "int8", int8, None)["roofline_fraction"] is None


def test_a_kernel_time_reported_by_the_engine_is_the_sample() -> None:
    """Where the engine timed its kernel (``KernelTime``), that time is the sample, not the wall
    clock around the call (OpenVINO's one-layer graph spends a third of it on I/O copies)."""
    import time

    def run() -> gemm.KernelTime:
        time.sleep(0.002)
        return gemm.KernelTime(0.0005)

    assert gemm._time(run, warmup=0, repeats=2, min_time=0.0) == pytest.approx(0.0005)
    assert gemm._time(lambda: time.sleep(0.002), warmup=0, repeats=1, min_time=0.0) > 0.0015


def test_openvino_ceiling_times_its_matmul_node() -> None:
    pytest.importorskip("openvino")
    shapes = [(256, 64, 96, 1)]
    fp32 = gemm._runner("openvino", "fp32", 256, 64, 96, threads=1)
    t = fp32()
    assert isinstance(t, gemm.KernelTime) and t.seconds > 0
    res = gemm.gemm_ceiling("openvino", "int8", shapes, threads=1, warmup=1, repeats=1, min_time=0)
    # both int8 forms (float out, int8 out as between quantized layers) are timed, faster kept
    assert set(res["kernels"]) == {
        "OpenVINO int8 FullyConnected float out (node time)",
        "OpenVINO int8 FullyConnected int8 out (node time)",
    }
    assert res["gflops"] >= max(res["kernels"].values()) * (1 - 1e-9)
