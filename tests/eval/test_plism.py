"""PLISM metrics against an independent brute-force computation on a synthetic fixture."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgepath.eval import plism

STAININGS = ["GIV", "GM", "HR"]
SCANNERS = ["AT2", "P", "S60"]


def fixture_features(n: int = 60, d: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Aligned per-slide embeddings: a tile signal + staining and scanner shifts + noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    stain = {s: rng.normal(scale=0.6, size=d) for s in STAININGS}
    scan = {s: rng.normal(scale=0.4, size=(d, d)) * 0.3 + np.eye(d) for s in SCANNERS}
    out = {}
    for st, sc in itertools.product(STAININGS, SCANNERS):
        noise = rng.normal(scale=0.7, size=(n, d))
        out[f"{st}_{sc}_to_GMH_S60.tif"] = ((base + stain[st]) @ scan[sc] + noise).astype(
            np.float32
        )
    return out


def brute_force(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float]:
    """Cosine and top-k by the definition: full (2n)² matrix, sort every row, look for the twin."""
    n = len(a)
    z = np.concatenate([a, b]).astype(np.float64)
    hits = 0
    for i in range(2 * n):
        sims = [
            (float(z[i] @ z[j] / np.linalg.norm(z[i]) / np.linalg.norm(z[j])), j)
            for j in range(2 * n)
            if j != i
        ]
        sims.sort(reverse=True)
        twin = i + n if i < n else i - n
        hits += twin in [j for _, j in sims[:k]]
    cos = np.mean([a[i] @ b[i] / np.linalg.norm(a[i]) / np.linalg.norm(b[i]) for i in range(n)])
    return float(cos), hits / (2 * n)


def test_pair_metrics_equal_brute_force() -> None:
    feats = fixture_features(n=40)
    names = sorted(feats)
    for na, nb in [(names[0], names[1]), (names[0], names[-1]), (names[3], names[5])]:
        got = plism.pair_metrics(feats[na], feats[nb], chunk=7)  # chunks that do not divide n
        for k in plism.KS:
            cos, topk = brute_force(feats[na], feats[nb], k)
            assert got["cosine"] == pytest.approx(cos, abs=1e-5)
            assert got[f"top{k}"] == pytest.approx(topk), (na, nb, k)


def test_cached_grams_give_the_same_numbers() -> None:
    feats = fixture_features(n=50)
    a, b = (plism.normalize(feats[n]) for n in sorted(feats)[:2])
    plain = plism.pair_metrics(a, b, chunk=16)
    cached = plism.pair_metrics(
        a, b, chunk=16, gram_a=plism.self_gram(a), gram_b=plism.self_gram(b)
    )
    assert plain == cached


def test_groups_counts_and_score() -> None:
    feats = fixture_features(n=30)
    res = plism.evaluate(feats, memory_mb=1)  # tiny budget: exercises the uncached path too
    # 3 stainings x 3 scanners: 9 slides, 36 pairs; cross-scanner 3*C(3,2)=9,
    # cross-staining 3*C(3,2)=9, cross-both 36-18=18
    groups = res["groups"]
    assert res["n_pairs"] == 36
    assert groups["cross-scanner"]["cosine"]["n"] == 9
    assert groups["cross-staining"]["cosine"]["n"] == 9
    assert groups["cross-both"]["cosine"]["n"] == 18
    assert groups["all"]["cosine"]["n"] == 36
    # the score is the mean of the four medians, recomputed here from the pair rows
    rows = res["pairs"]
    med = lambda g, m: np.median([r[m] for r in rows if g == "all" or r["group"] == g])  # noqa: E731
    expect = np.mean(
        [
            med("all", "cosine"),
            med("cross-scanner", "top10"),
            med("cross-staining", "top10"),
            med("cross-both", "top10"),
        ]
    )
    assert res["score"] == pytest.approx(expect)
    # each row matches the brute force
    r = rows[5]
    cos, top10 = brute_force(feats[r["a"]], feats[r["b"]], 10)
    assert r["cosine"] == pytest.approx(cos, abs=1e-5)
    assert r["top10"] == pytest.approx(top10)


def test_plism_group_sizes_on_the_real_design() -> None:
    """91 PLISM slides give the published group sizes: 273 / 546 / 3,276 / 4,095."""
    stainings = ["GIV", "GIVH", "GM", "GMH", "GV", "GVH", "HR", "HRH", "KR", "KRH", "LM", "LMH"]
    stainings.append("MY")
    scanners = ["AT2", "GT450", "P", "S210", "S360", "S60", "SQ"]
    keys = [plism.SlideKey(f"{a}_{b}", a, b) for a in stainings for b in scanners]
    groups = [plism.pair_group(a, b) for a, b in itertools.combinations(keys, 2)]
    assert len(groups) == 4095
    assert groups.count("cross-scanner") == 273
    assert groups.count("cross-staining") == 546
    assert groups.count("cross-both") == 3276


def test_identical_slides_are_perfect_and_noise_is_chance() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(100, 8))
    same = plism.pair_metrics(a, a * 2.0)  # scale does not change cosine
    assert same["cosine"] == pytest.approx(1.0)
    # ties: the twin equals the row itself, nothing is strictly more similar
    assert same["top1"] == 1.0
    other = plism.pair_metrics(a, rng.normal(size=(100, 8)))
    assert other["top10"] < 0.25


def test_parse_name_and_subset() -> None:
    key = plism.parse_slide_name("GIVH_AT2_to_GMH_S60.tif")
    assert (key.staining, key.scanner) == ("GIVH", "AT2")
    idx = plism.subset_indices(100, 10, seed=0)
    assert len(set(idx.tolist())) == 10 and (np.diff(idx) > 0).all()
    assert (idx == plism.subset_indices(100, 10, seed=0)).all()
    assert len(plism.subset_indices(100, None)) == 100
