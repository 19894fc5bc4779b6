"""The gate: thresholds from the preset, NaN never passes, perturbations are caught."""

from __future__ import annotations

import numpy as np

from edgepath.quantize.gate import check
from edgepath.quantize.presets import GateSpec


def _emb(n: int = 64, d: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_small_noise_passes_large_noise_fails() -> None:
    ref = _emb()
    rng = np.random.default_rng(1)
    ok = check(ref + 0.01 * rng.standard_normal(ref.shape), ref, GateSpec())
    assert ok.passed and ok.figures["cosine"] > 0.999
    bad = check(ref + 0.5 * rng.standard_normal(ref.shape), ref, GateSpec())
    assert not bad.passed
    assert any(f.startswith("cosine ") for f in bad.failures)


def test_one_bad_tile_fails_the_p1_threshold_only() -> None:
    ref = _emb(n=200)
    q = ref.copy()
    q[:3] = -q[:3]  # three tiles flipped: mean stays >= 0.97, the 1st percentile does not
    res = check(q, ref, GateSpec(min_cosine=0.9, min_cosine_p1=0.97))
    assert [f.split()[0] for f in res.failures] == ["cosine_p1"]


def test_nan_embeddings_fail() -> None:
    ref = _emb()
    q = ref.copy()
    q[5] = np.nan
    res = check(q, ref, GateSpec(min_cosine=-1.0, min_cosine_p1=-1.0))
    assert not res.passed and "NaN" in res.failures[0]


def test_optional_thresholds_and_robustness_drop() -> None:
    ref = _emb()
    res = check(ref, ref, GateSpec(min_knn10=0.99, max_robustness_drop=0.01), robustness=(0.8, 0.7))
    assert res.figures["knn10_agreement"] == 1.0
    assert res.figures["robustness_drop"] == 0.8 - 0.7
    assert len(res.failures) == 1 and "robustness" in res.failures[0]
    assert check(ref, ref, GateSpec(), robustness=(0.8, 0.7)).passed  # reported, not gated


def test_collapsed_embeddings_are_named() -> None:
    ref = _emb()
    res = check(np.zeros_like(ref), ref, GateSpec())
    assert not res.passed and "collapsed to zero" in res.failures[0]
