"""PLISM robustness metrics: per slide pair cosine and top-k retrieval, pair groups, the score.

PLISM (Ochi et al. 2024; owkin's ``plismbench`` release, arXiv:2505.16807): 91 slides of one
tissue block, 13 stainings × 7 scanners, registered to one grid of 16,278 aligned 224 px tiles.
For every unordered slide pair (A, B) with n aligned tiles:

- ``cosine``: mean over i of cos(a_i, b_i);
- ``top{k}``: stack A and B (2n rows); for each row, are its k nearest rows by cosine (itself
  excluded) holding its aligned twin? Averaged over all 2n rows.

Pairs are grouped as *cross-scanner* (same staining, different scanner: 273 pairs in PLISM),
*cross-staining* (same scanner, different staining: 546), *cross-both* (3,276) and *all*
(4,095). The score is the mean of four medians: cosine over all pairs and top-10 over the three
cross groups.

The computation avoids the (2n)² similarity matrix per pair: with unit rows and the twin
similarity s_i = a_i·b_i, the rank of row i's twin is #{j≠i: a_i·a_j > s_i} + #{j: a_i·b_j > s_i};
the self-Gram matrices A·Aᵀ are computed once per slide (cached under a memory budget) and only
A·Bᵀ is computed per pair, in row chunks, in float32 BLAS.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 3, 5, 10)
GROUPS: tuple[str, ...] = ("cross-scanner", "cross-staining", "cross-both", "all")
#: PLISM's full grid and plismbench's default metric subset (16,278 // 6).
PLISM_TILES = 16_278
DEFAULT_SUBSET = PLISM_TILES // 6


@dataclass(frozen=True)
class SlideKey:
    """A slide (or synthetic domain) by its staining and scanner labels."""

    name: str
    staining: str
    scanner: str


def parse_slide_name(name: str) -> SlideKey:
    """PLISM names are ``{staining}_{scanner}_to_GMH_S60.tif``: the first two ``_`` fields."""
    parts = name.split("_")
    if len(parts) < 2:
        return SlideKey(name, name, "")
    return SlideKey(name, parts[0], parts[1])


def pair_group(a: SlideKey, b: SlideKey) -> str:
    """The PLISM group of a pair: ``cross-scanner``, ``cross-staining``, ``cross-both``, or
    ``same`` for two slides with identical labels (counted only in ``all``)."""
    same_stain, same_scanner = a.staining == b.staining, a.scanner == b.scanner
    if same_stain and not same_scanner:
        return "cross-scanner"
    if same_scanner and not same_stain:
        return "cross-staining"
    if not same_stain and not same_scanner:
        return "cross-both"
    return "same"


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def self_gram(z: np.ndarray) -> np.ndarray:
    """Z·Zᵀ of unit rows with -inf on the diagonal (a row never retrieves itself)."""
    g = z @ z.T
    np.fill_diagonal(g, -np.inf)
    return g


def pair_metrics(
    a: np.ndarray,
    b: np.ndarray,
    *,
    ks: Sequence[int] = KS,
    chunk: int = 2048,
    gram_a: np.ndarray | None = None,
    gram_b: np.ndarray | None = None,
) -> dict[str, float]:
    """Cosine and top-k accuracies of one aligned slide pair.

    Args:
        a: (n, D) embeddings of slide A, row i aligned with row i of ``b``.
        b: (n, D) embeddings of slide B.
        ks: The k of the top-k accuracies.
        chunk: Rows per block (memory is about chunk × n × 4 bytes × 3).
        gram_a: ``self_gram(normalize(a))`` if already computed (reused across pairs).
        gram_b: Same for ``b``.

    Returns:
        ``cosine`` and ``top{k}`` for each k.
    """
    if a.shape != b.shape:
        raise ValueError(f"slides must hold the same aligned tiles: {a.shape} vs {b.shape}")
    za, zb = normalize(a), normalize(b)
    n = len(za)
    s = np.sum(za * zb, axis=1)  # twin similarities
    above_a = np.zeros(n, dtype=np.int64)  # rows of A: rows of 2n ranked above the twin
    above_b = np.zeros(n, dtype=np.int64)
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        sab = za[c0:c1] @ zb.T  # (c, n): A rows vs all of B
        # the twin itself never counts (BLAS rounding may put a_i·b_i a hair above s_i)
        sab[np.arange(c1 - c0), np.arange(c0, c1)] = -np.inf
        above_a[c0:c1] += np.count_nonzero(sab > s[c0:c1, None], axis=1)
        above_b += np.count_nonzero(sab > s[None, :], axis=0)  # columns are B rows
        ga = gram_a[c0:c1] if gram_a is not None else _gram_rows(za, c0, c1)
        gb = gram_b[c0:c1] if gram_b is not None else _gram_rows(zb, c0, c1)
        above_a[c0:c1] += np.count_nonzero(ga > s[c0:c1, None], axis=1)
        above_b[c0:c1] += np.count_nonzero(gb > s[c0:c1, None], axis=1)
    out = {"cosine": float(s.mean())}
    for k in ks:
        # the twin is in the top k iff fewer than k other rows are strictly more similar
        hits = np.count_nonzero(above_a < k) + np.count_nonzero(above_b < k)
        out[f"top{k}"] = hits / (2 * n)
    return out


def _gram_rows(z: np.ndarray, c0: int, c1: int) -> np.ndarray:
    g = z[c0:c1] @ z.T
    g[np.arange(c1 - c0), np.arange(c0, c1)] = -np.inf
    return g


class _GramCache:
    """Self-Gram matrices per slide, least recently used dropped beyond a byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str, z: np.ndarray) -> np.ndarray | None:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        size = len(z) * len(z) * 4
        if size > self.budget:
            return None  # computed in chunks inside pair_metrics instead
        g = self_gram(z)
        self.items[key] = g
        while sum(v.nbytes for v in self.items.values()) > self.budget:
            self.items.popitem(last=False)
        return g


def all_pairs(
    features: dict[str, np.ndarray],
    *,
    keys: dict[str, SlideKey] | None = None,
    ks: Sequence[int] = KS,
    chunk: int = 2048,
    memory_mb: int = 2048,
    on_pair: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Metrics for every unordered pair of slides.

    Args:
        features: Slide name -> (n, D) aligned embeddings (same n for all).
        keys: Slide name -> labels; parsed from PLISM names when omitted.
        ks: The k of the top-k accuracies.
        chunk: Rows per block.
        memory_mb: Budget for cached self-Gram matrices.
        on_pair: Called with (pairs done, pairs total) for progress.

    Returns:
        One row per pair: ``a``, ``b``, ``group``, ``cosine``, ``top{k}``.
    """
    names = sorted(features)
    keys = keys or {n: parse_slide_name(n) for n in names}
    unit = {n: normalize(features[n]) for n in names}
    cache = _GramCache(memory_mb << 20)
    pairs = list(itertools.combinations(names, 2))
    rows = []
    for i, (na, nb) in enumerate(pairs):
        ga, gb = cache.get(na, unit[na]), cache.get(nb, unit[nb])
        m = pair_metrics(unit[na], unit[nb], ks=ks, chunk=chunk, gram_a=ga, gram_b=gb)
        rows.append({"a": na, "b": nb, "group": pair_group(keys[na], keys[nb]), **m})
        if on_pair is not None:
            on_pair(i + 1, len(pairs))
    return rows


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """Mean, std, median and IQR (plismbench's aggregation), with the count."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {
            "n": 0,
            "mean": float("nan"),
            "std": float("nan"),
            "median": float("nan"),
            "iqr": float("nan"),
        }
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(med),
        "iqr": float(q3 - q1),
    }


def group_stats(rows: list[dict[str, Any]], *, ks: Sequence[int] = KS) -> dict[str, Any]:
    """Per group (cross-scanner, cross-staining, cross-both, all): statistics of every metric."""
    metrics = ["cosine", *(f"top{k}" for k in ks)]
    out: dict[str, Any] = {}
    for group in GROUPS:
        sel = [r for r in rows if group == "all" or r["group"] == group]
        out[group] = {m: summarize(r[m] for r in sel) for m in metrics}
    return out


def score(stats: dict[str, Any]) -> float:
    """Mean of four medians: cosine over all pairs, top-10 cross-scanner / -staining / -both.

    A group with no pairs (e.g. a synthetic suite without cross-both pairs) is left out of the
    mean rather than counted as zero.
    """
    parts = [stats["all"]["cosine"]["median"]]
    parts += [stats[g]["top10"]["median"] for g in GROUPS[:3]]
    parts = [p for p in parts if not np.isnan(p)]
    return float(np.mean(parts)) if parts else float("nan")


def evaluate(
    features: dict[str, np.ndarray],
    *,
    keys: dict[str, SlideKey] | None = None,
    ks: Sequence[int] = KS,
    chunk: int = 2048,
    memory_mb: int = 2048,
    on_pair: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Pairs, group statistics and the score for aligned per-slide embeddings."""
    if len(features) < 2:
        raise ValueError("robustness needs at least two aligned slides or domains")
    sizes = {v.shape[0] for v in features.values()}
    if len(sizes) != 1:
        raise ValueError(f"slides hold different numbers of aligned tiles: {sorted(sizes)}")
    if min(sizes) <= max(ks):
        raise ValueError(f"top-{max(ks)} needs more than {max(ks)} aligned tiles, got {min(sizes)}")
    rows = all_pairs(features, keys=keys, ks=ks, chunk=chunk, memory_mb=memory_mb, on_pair=on_pair)
    stats = group_stats(rows, ks=ks)
    return {
        "n_slides": len(features),
        "n_tiles": sizes.pop(),
        "n_pairs": len(rows),
        "score": score(stats),
        "groups": stats,
        "pairs": rows,
    }


def subset_indices(n_total: int, n: int | None, *, seed: int = 0) -> np.ndarray:
    """A fixed, seeded, sorted subset of ``n`` of ``n_total`` aligned tile indices (all if None)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))
