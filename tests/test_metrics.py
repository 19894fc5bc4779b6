"""Fidelity metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from edgepath import metrics


def test_rowwise_cosine_hand_values() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0]])
    assert np.allclose(metrics.rowwise_cosine(a, b), [0.0, 1.0])


def test_knn_excludes_self_and_finds_neighbours() -> None:
    x = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    nn = metrics.knn_indices(x, 1)
    assert nn[:, 0].tolist() == [1, 0, 3, 2]


def test_fidelity_identical_and_scrambled() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16)) + 3.0  # a shared offset, as pathology embeddings have
    same = metrics.fidelity(a, a)
    assert same["cosine"] == pytest.approx(1.0)
    assert same["centered_cosine"] == pytest.approx(1.0)
    assert same["knn10_agreement"] == pytest.approx(1.0)
    assert same["cka"] == pytest.approx(1.0)
    other = metrics.fidelity(rng.normal(size=(200, 16)) + 3.0, a)
    assert other["cosine"] > 0.8  # raw cosine looks good for unrelated embeddings ...
    assert abs(other["centered_cosine"]) < 0.2  # ... the centered one does not
    assert other["knn10_agreement"] < 0.2


def test_fidelity_across_dimensions_skips_cosine() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 8))
    proj = rng.normal(size=(8, 32))
    f = metrics.fidelity(a @ proj, a)
    assert f["cosine"] is None
    assert f["knn10_agreement"] > 0.5
    assert f["cka"] > 0.5


def test_cka_invariant_to_rotation_and_scale() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(100, 10))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert metrics.linear_cka(3 * a @ q, a) == pytest.approx(1.0)


def test_centered_knn_ignores_a_shared_offset():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(60, 8))
    shifted = t + 50.0  # one dominant direction added to every row
    assert metrics.knn_agreement_centered(shifted, t) == 1.0
    assert metrics.knn_agreement(shifted, t) < 0.9  # raw cosine neighbours are scrambled
