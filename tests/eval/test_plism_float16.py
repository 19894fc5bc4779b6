"""float16 mode against an independent brute force of its documented semantics.

The brute force builds the full (2n)² float16 cosine matrix of [A; B] the way numpy computes it
on float16 arrays (float16 inputs, float32-accumulated dot products rounded to float16, float16
norms, float16 products and quotients), ranks each row by a stable descending sort (equal values
in [A; B] order) and checks whether the twin sits at positions 1..k (position 0 being taken as
the row itself). The fast path never builds that matrix.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepath.errors import ConfigError
from edgepath.eval import plism, plism_rank

KS = (1, 3, 5, 10)


def brute_force_f16(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    n = len(a)
    ab = np.concatenate([a, b]).astype(np.float16)
    x = ab.astype(np.float32)
    dot = (x @ x.T).astype(np.float16)  # float32 sums of exact float16 products, rounded
    norm = np.linalg.norm(ab, axis=1)  # float16
    cos = dot / (norm[:, None] * norm[None, :])  # float16 product and quotient
    twin = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    position = np.empty(2 * n, dtype=np.int64)
    for r in range(2 * n):
        order = np.argsort(-cos[r].astype(np.float32), kind="stable")
        position[r] = int(np.flatnonzero(order == twin[r])[0])
    out = {"cosine": float(cos[np.arange(n), twin[:n]].mean())}  # float16 mean
    for k in KS:
        out[f"top{k}"] = float(np.mean((position >= 1) & (position <= k)))
    return out


def _cases():
    rng = np.random.default_rng(7)
    for i in range(15):
        n, d = int(rng.integers(20, 110)), int(rng.integers(2, 12))
        if i >= 12:  # tiny features: dot products below float16's normal range (subnormal)
            a = rng.normal(size=(n, d)) * 2e-3
            b = a + 1e-3 * rng.normal(size=(n, d))
        elif i % 3 == 0:  # small integers: many exactly equal cosines (ties)
            a = rng.integers(-3, 4, (n, d)).astype(np.float32)
            b = a + rng.integers(-2, 3, (n, d))
        elif i % 3 == 1:
            a = rng.normal(size=(n, d)).astype(np.float32)
            b = a + 0.8 * rng.normal(size=(n, d))
        else:  # a large shared direction: cosines crowd near 1, where float16 steps are coarse
            a = rng.normal(size=(n, d)) + 4.0
            b = a + 0.5 * rng.normal(size=(n, d))
        if min(np.abs(a).sum(1).min(), np.abs(b).sum(1).min()) == 0:
            a, b = a + 1, b + 1
        yield i, a.astype(np.float32), np.asarray(b, dtype=np.float32), int(rng.integers(3, 40))


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: f"case{c[0]}")
def test_float16_equals_brute_force(case) -> None:
    _, a, b, chunk = case
    pa = plism_rank.prepare(a, precision="float16", m=12, chunk=chunk)
    pb = plism_rank.prepare(b, precision="float16", m=12, chunk=chunk)
    got = plism_rank.pair_metrics(pa, pb, precision="float16", chunk=chunk)
    assert got == brute_force_f16(a, b)


def test_float16_ties_follow_the_order_of_a_and_b() -> None:
    """With ties, which slide comes first in [A; B] changes top-k; both orders match the rule."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, (60, 3)).astype(np.float32) + 1
    b = a + rng.integers(0, 2, (60, 3))
    ab = plism.pair_metrics(a, b, precision="float16")
    ba = plism.pair_metrics(b, a, precision="float16")
    assert ab == brute_force_f16(a, b) and ba == brute_force_f16(b, a)
    assert ab != ba  # ties resolved by position: the order is part of the definition
    assert ab["cosine"] == ba["cosine"]
    # float32 does not depend on the order (ties favour the twin there)
    assert plism.pair_metrics(a, b) == plism.pair_metrics(b, a)


def test_float16_cosine_is_the_float16_mean_of_float16_cosines() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(400, 16)).astype(np.float32)
    b = (a + 0.3 * rng.normal(size=a.shape)).astype(np.float32)
    got = plism.pair_metrics(a, b, precision="float16")["cosine"]
    a16, b16 = a.astype(np.float16), b.astype(np.float16)
    dot = np.array([a16[i] @ b16[i] for i in range(len(a))], dtype=np.float16)
    cos = dot / (np.linalg.norm(a16, axis=1) * np.linalg.norm(b16, axis=1))
    assert got == float(np.mean(cos)) and float(np.float16(got)) == got  # a float16 value
    assert got != plism.pair_metrics(a, b)["cosine"]  # float32 differs beyond float16 rounding


def test_float16_overflow_is_refused_with_the_fix() -> None:
    a = np.full((20, 4), 200.0, dtype=np.float32)  # norm 400: dot products overflow float16
    with pytest.raises(ConfigError, match="--precision float32"):
        plism_rank.prepare(a, precision="float16")
