"""The torch engine on a CUDA GPU: fp32 / bf16 / fp16, torch.compile, the cuBLAS GEMM ceiling,
``bench throughput`` and ``embed`` with ``--device cuda`` (skipped without a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_cuda_precisions_match_cpu_fp32(tiny_encoder, tiles) -> None:
    import copy

    from edgepath.runtime.torch_engine import TorchEngine

    ref = TorchEngine(copy.deepcopy(tiny_encoder)).embed_tiles(tiles)
    for precision, floor in (("fp32", 0.99999), ("bf16", 0.995), ("fp16", 0.999)):
        eng = TorchEngine(copy.deepcopy(tiny_encoder), device="cuda", precision=precision)
        out = eng.embed_tiles(tiles)
        assert np.isfinite(out).all() and out.shape == ref.shape
        assert _cos(out, ref).min() > floor, precision
        d = eng.describe()
        assert d["device"] == "cuda" and d["precision"] == precision
        assert d["device_name"] and d["cuda"] and d["compute_capability"]


def test_cuda_takes_uint8_through_pinned_memory_one_batch_ahead(tiny_encoder, tiles) -> None:
    """On CUDA the torch engine takes uint8 tiles (normalised on the GPU), copies them through
    pinned buffers on a copy stream, and ``submit`` returns before the GPU has finished: three
    batches submitted before any result is read give the CPU's embeddings, in order, even with
    the host batch overwritten right after each submit."""
    import copy

    from edgepath.runtime.torch_engine import TorchEngine

    ref = TorchEngine(copy.deepcopy(tiny_encoder)).embed_tiles(tiles)
    eng = TorchEngine(copy.deepcopy(tiny_encoder), device="cuda")
    d = eng.describe()
    assert d["input_format"] == "nhwc-uint8" and d["host_to_device"].startswith("pinned")
    assert eng._feed._host == [None, None]
    batch = np.empty((2, *tiles.shape[1:]), np.uint8)
    fetches = []
    for i in range(3):
        batch[:] = tiles[2 * i : 2 * i + 2]
        fetches.append(eng.submit(batch, tiles=True))
        batch[:] = 0  # what a reader slot does next: the engine has its own copy
    out = np.concatenate([f() for f in fetches])
    assert all(b is not None and b.is_pinned() for b in eng._feed._host)
    assert _cos(out, ref).min() > 0.99999
    assert _cos(eng.embed_tiles(tiles), ref).min() > 0.99999


def test_compiled_engine_matches_eager(tiny_encoder, tiles) -> None:
    import copy

    from edgepath.runtime.torch_engine import TorchEngine

    eager = TorchEngine(copy.deepcopy(tiny_encoder), device="cuda", precision="bf16")
    comp = TorchEngine(copy.deepcopy(tiny_encoder), device="cuda", precision="bf16", compile=True)
    assert comp.describe()["compiled"] is True
    assert _cos(comp.embed_tiles(tiles), eager.embed_tiles(tiles)).min() > 0.995


def test_cublas_ceiling_per_precision() -> None:
    from edgepath.bench import gemm

    shapes = [(2048, 2048, 2048, 1)]
    rate = {}
    for p in ("fp32", "bf16", "fp16"):
        res = gemm.gemm_ceiling(
            "torch", p, shapes, threads=1, warmup=2, repeats=3, min_time=0.05, device="cuda"
        )
        assert res["device"] == "cuda" and "cuBLAS" in res["kernel"]
        rate[p] = res["gflops"]
    assert rate["bf16"] > rate["fp32"] and rate["fp16"] > rate["fp32"]


def test_bench_throughput_on_cuda(run_cli) -> None:
    code, out, err = run_cli(
        "bench", "throughput", "vit-test14", "--engines", "torch", "--device", "cuda",
        "--precision", "fp32,bf16,fp16", "--batch", "8", "--rounds", "1", "--per-round", "1",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    d = json.loads(out)
    assert {r["precision"] for r in d["rows"]} == {"fp32", "bf16", "fp16"}
    assert all(r["device"] == "cuda" and r["peak_gpu_mb"] > 0 for r in d["rows"])
    assert all(r["ceiling_fraction"] is not None for r in d["rows"])
    assert {c["precision"] for c in d["ceilings"]} == {"fp32", "bf16", "fp16"}
    assert d["machine"]["cuda"]["device_name"] == d["machine"]["gpu"]


def test_embed_on_cuda_bf16(run_cli, sample_slide: Path, tmp_path: Path) -> None:
    from edgepath.embed.features import read_features

    code, out, err = run_cli(
        "embed", "vit-test14", str(sample_slide), "-o", str(tmp_path), "--engine", "torch",
        "--device", "cuda", "--precision", "bf16", "--workers", "0", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["done"] == 1
    ff = read_features(next(tmp_path.glob("*.h5")))
    assert len(ff.features) > 0 and np.isfinite(ff.features).all()
