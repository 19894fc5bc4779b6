"""``--device`` and the torch engine's precisions where torch sees no CUDA GPU (as on CI)."""

from __future__ import annotations

import pytest
import torch

from edgepath.errors import ConfigError
from edgepath.runtime import open_engine
from edgepath.runtime.torch_engine import TorchEngine, resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answers")


@no_cuda
def test_auto_is_cpu_and_cuda_is_one_line_with_the_fix() -> None:
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU here; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")


@no_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precisions_are_refused_on_cpu_naming_the_fix(tiny_encoder, precision) -> None:
    with pytest.raises(ConfigError, match=f"{precision} on CUDA only; use --precision fp32"):
        TorchEngine(tiny_encoder, precision=precision)
    with pytest.raises(ConfigError, match="--device cuda"):
        open_engine(tiny_encoder, device="auto", precision=precision)


@no_cuda
def test_open_engine_auto_device_and_artifact_precision(tiny_encoder, student_artifact) -> None:
    with open_engine(tiny_encoder, device="auto") as eng:
        assert eng.device == "cpu" and eng.precision == "fp32"
        assert eng.describe()["compiled"] is False and "device_name" not in eng.info
    with open_engine(student_artifact, device="auto") as eng:  # only torch weights: torch
        assert eng.name == "torch" and eng.device == "cpu"
    # asking for a torch-only option picks the torch engine of an artifact, then refuses bf16
    with pytest.raises(ConfigError, match="CUDA only"):
        open_engine(student_artifact, precision="bf16")


def test_gemm_precisions_by_device() -> None:
    from edgepath.bench import gemm

    assert gemm.precisions("torch", "cpu") == ("fp32",)
    assert gemm.precisions("torch", "cuda:0") == ("fp32", "bf16", "fp16")
    assert gemm.precisions("onnxruntime", "cuda") == ()
    with pytest.raises(
        ConfigError, match="no bf16 GEMM kernel benchmark for engine 'torch' on cpu"
    ):
        gemm.gemm_ceiling("torch", "bf16", [(8, 8, 8, 1)], threads=1)
    res = gemm.gemm_ceiling("torch", "fp32", [(8, 8, 8, 1)], threads=1, repeats=1, min_time=0.0)
    assert res["device"] == "cpu" and res["gflops"] > 0


def test_timer_synchronises_at_both_ends() -> None:
    from edgepath.bench.gemm import _time

    calls: list[str] = []
    sec = _time(
        lambda: calls.append("run"),
        warmup=1,
        repeats=2,
        min_time=0.0,
        sync=lambda: calls.append("sync"),
    )
    assert sec >= 0
    # warm-up; one synchronised call to size the samples; each sample synchronised at both ends
    assert calls == ["run", "sync", "run", "sync"] + ["sync", "run", "sync"] * 2


def test_compile_flag_is_recorded(tiny_encoder) -> None:
    eng = TorchEngine(tiny_encoder, compile=True)  # compiled lazily, on the first batch
    assert eng.describe()["compiled"] is True


def test_throughput_result_and_report_name_the_gpu_when_run_on_cuda() -> None:
    from edgepath.bench import report
    from edgepath.bench.throughput import run_throughput

    r = run_throughput(
        ["vit-test14"], engines=["torch"], precisions=["fp32"], batches=[2], threads=1,
        warmup=0, rounds=1, per_round=1, ceiling=False, device="auto",
    )  # fmt: skip
    assert r["settings"]["device"] == r["rows"][0]["device"]
    assert "peak_gpu_mb" in r["rows"][0]
    assert (r["machine"]["cuda"] is None) == (not torch.cuda.is_available())
    # as a CUDA run's result reads (the machine's GPU fields filled in by describe)
    r["settings"]["device"] = "cuda"
    r["machine"]["cuda"] = {"device_name": "NVIDIA H200", "cuda": "13.0"}
    md = "\n".join(report._md_throughput(r, "x.png"))
    assert "torch engine on NVIDIA H200 (torch" in md and "CUDA 13.0" in md
