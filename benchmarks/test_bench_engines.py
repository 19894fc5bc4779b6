"""One batch of 16 tiles per engine and precision (ViT-S/14 with random weights by default).

``EDGEPATH_BENCH_MODEL`` picks another student or an artifact folder. INT8 variants come from
``edgepath.quantize`` through ``edgepath.bench.throughput`` and are skipped if it is absent.
For the side-by-side numbers of the acceptance table use ``edgepath bench throughput`` instead:
it interleaves the variants in rounds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from benchmarks.conftest import THREADS

MODEL = os.environ.get("EDGEPATH_BENCH_MODEL", "vit-s14")
VARIANTS = [
    ("torch", "fp32"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "int8"),
]


@pytest.fixture(scope="module")
def model():
    from edgepath.bench.throughput import resolve_for_speed

    return resolve_for_speed(MODEL)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="edgepath-benchmarks-") as tmp:
        yield Path(tmp)


@pytest.mark.parametrize(("engine", "precision"), VARIANTS, ids=[f"{e}-{p}" for e, p in VARIANTS])
def test_batch16(benchmark, model, workdir: Path, engine: str, precision: str) -> None:
    from edgepath.bench.throughput import _batch, open_variants

    variants, skipped = open_variants(
        model, engines=[engine], precisions=[precision], threads=THREADS, workdir=workdir
    )
    if not variants:
        pytest.skip("; ".join(skipped))
    eng = variants[0].engine
    x = _batch(model, 16)
    eng(x)  # warm-up
    out = benchmark.pedantic(eng, args=(x,), rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == (16, model.spec.embedding.dim)
    benchmark.extra_info["tiles_per_s"] = 16 / benchmark.stats.stats.median
    eng.close()
