"""Embedding agreement between two models on the same tiles: cosine, centered cosine, kNN, CKA.

Used by distillation (student vs teacher), the quantization gate (quantized vs float) and
``edgepath bench fidelity``. numpy only, chunked so that tens of thousands of tiles fit in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_i) for every row i."""
    return np.sum(_l2n(a) * _l2n(b), axis=1)


def knn_indices(x: np.ndarray, k: int, *, chunk: int = 2048) -> np.ndarray:
    """Indices of the ``k`` nearest rows of each row by cosine, excluding the row itself."""
    z = _l2n(x)
    n = len(z)
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        sim = z[s : s + chunk] @ z.T
        rows = np.arange(s, min(s + chunk, n))
        sim[rows - s, rows] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(-sim)[:, :k]
        out[s : s + chunk] = part
    return out


def knn_agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean overlap |NN_k^A(i) ∩ NN_k^B(i)| / k: do both models see the same neighbourhoods?

    Works across embedding dimensions (student vs teacher).
    """
    if len(a) != len(b):
        raise ValueError("both embeddings must cover the same tiles")
    if len(a) <= k:
        raise ValueError(f"kNN agreement needs more than k={k} tiles, got {len(a)}")
    na, nb = knn_indices(a, k), knn_indices(b, k)
    hits = [len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(na, nb, strict=True)]
    return float(np.mean(hits) / k)


def knn_agreement_centered(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """kNN-k agreement after subtracting each side's own mean over the tiles.

    Raw embeddings share one dominant direction, so raw-cosine neighbours rank tiles by the
    small part orthogonal to it, its length included; centred, the neighbours follow the
    direction of what is specific to each tile (the geometry the centred cosine measures).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return knn_agreement(a - a.mean(0), b - b.mean(0), k)


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019), across dimensions."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    hsic = np.linalg.norm(y.T @ x) ** 2
    return float(hsic / max(np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y), 1e-12))


def fidelity(
    a: np.ndarray, b: np.ndarray, *, k: int = 10, center: np.ndarray | None = None
) -> dict[str, Any]:
    """Agreement of embeddings ``a`` (candidate) with ``b`` (reference) on the same tiles.

    Args:
        a: (N, D) candidate embeddings (student, quantized model).
        b: (N, D') reference embeddings (teacher, float model).
        k: Neighbourhood size for kNN agreement.
        center: Mean reference embedding to subtract before the centered cosine (defaults to
            ``b``'s own mean). Raw cosine between pathology embeddings is high for any two tiles,
            so the centered cosine is the one that shows whether tile-specific content agrees.

    Returns:
        ``cosine`` (mean), ``cosine_p1`` (1st percentile), ``centered_cosine`` (mean) when the
        dimensions match (None otherwise), ``knn10_agreement``, ``cka`` and ``n_tiles``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"different tile counts: {a.shape[0]} vs {b.shape[0]}")
    out: dict[str, Any] = {"n_tiles": int(a.shape[0])}
    if a.shape[1] == b.shape[1]:
        cos = rowwise_cosine(a, b)
        c = b.mean(0) if center is None else np.asarray(center, dtype=np.float64)
        ccos = rowwise_cosine(a - c, b - c)
        out.update(
            cosine=float(cos.mean()),
            cosine_p1=float(np.percentile(cos, 1)),
            centered_cosine=float(ccos.mean()),
        )
    else:
        out.update(cosine=None, cosine_p1=None, centered_cosine=None)
    out["knn10_agreement" if k == 10 else f"knn{k}_agreement"] = (
        knn_agreement(a, b, k) if len(a) > k else None
    )
    out["cka"] = linear_cka(a, b)
    return out
