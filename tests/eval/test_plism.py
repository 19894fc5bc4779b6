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


def brute_force_sorted(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The same definition by a full sort of each row of the (2n)² float64 cosine matrix."""
    n = len(a)
    z = np.concatenate([a, b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sims = z @ z.T
    np.fill_diagonal(sims, -np.inf)  # a row never retrieves itself
    ranked = np.argsort(-sims, axis=1)
    twin = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    out = {"cosine": float(np.mean(np.sum(z[:n] * z[n:], axis=1)))}
    for k in plism.KS:
        out[f"top{k}"] = float(np.mean(np.any(ranked[:, :k] == twin[:, None], axis=1)))
    return out


def test_pair_metrics_equal_brute_force() -> None:
    feats = fixture_features(n=40)
    names = sorted(feats)
    for na, nb in [(names[0], names[1]), (names[0], names[-1]), (names[3], names[5])]:
        got = plism.pair_metrics(feats[na], feats[nb], chunk=7)  # chunks that do not divide n
        for k in plism.KS:
            cos, topk = brute_force(feats[na], feats[nb], k)
            assert got["cosine"] == pytest.approx(cos, abs=1e-6)
            assert got[f"top{k}"] == pytest.approx(topk), (na, nb, k)


def test_prepared_slides_give_the_same_numbers_as_one_pair() -> None:
    """all_pairs prepares each slide once (its own-slide top list); pair_metrics does it inline."""
    feats = fixture_features(n=50)
    names = sorted(feats)[:3]
    rows = plism.all_pairs({n: feats[n] for n in names}, chunk=16)
    for r in rows:
        one = plism.pair_metrics(feats[r["a"]], feats[r["b"]], chunk=16)
        assert {k: r[k] for k in one} == one


def test_float32_is_exact_to_1e6_on_large_pairs_with_tiny_top_lists() -> None:
    """Own-slide top lists shorter than the slide and chunks that do not divide n: still exact."""
    from edgepath.eval import plism_rank as R

    feats = fixture_features(n=300, d=24, seed=4)
    names = sorted(feats)
    for na, nb in [(names[0], names[4]), (names[2], names[7]), (names[1], names[2])]:
        pa = R.prepare(feats[na], precision="float32", m=10, chunk=37)
        pb = R.prepare(feats[nb], precision="float32", m=10, chunk=37)
        got = R.pair_metrics(pa, pb, precision="float32", chunk=37)
        want = brute_force_sorted(feats[na], feats[nb])
        assert abs(got["cosine"] - want["cosine"]) < 1e-6
        assert {k: got[k] for k in want if k != "cosine"} == {
            k: v for k, v in want.items() if k != "cosine"
        }, (na, nb)
        assert 0 < got["top10"] < 1  # neither trivial nor hopeless: the counts matter


def test_groups_counts_and_score() -> None:
    feats = fixture_features(n=30)
    res = plism.evaluate(feats, chunk=7)
    assert res["precision"] == "float32"
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
