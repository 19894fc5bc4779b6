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

Two precisions (``edgepath.eval.plism_rank`` has the exact definitions and how the pairs are
computed without the (2n)² matrix): ``float32`` is exact; ``float16`` gives plismbench's
numbers (its default computes everything in float16, which moves top-k by up to about 1e-3).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepath.eval import plism_rank as R

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 3, 5, 10)
GROUPS: tuple[str, ...] = ("cross-scanner", "cross-staining", "cross-both", "all")
#: PLISM's full grid and plismbench's default metric subset, its leaderboard's (16,278 // 2).
PLISM_TILES = 16_278


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


def pair_metrics(
    a: np.ndarray,
    b: np.ndarray,
    *,
    ks: Sequence[int] = KS,
    chunk: int = 2048,
    precision: str = "float32",
) -> dict[str, float]:
    """Cosine and top-k accuracies of one aligned slide pair (A first in [A; B]).

    Args:
        a: (n, D) embeddings of slide A, row i aligned with row i of ``b``.
        b: (n, D) embeddings of slide B.
        ks: The k of the top-k accuracies.
        chunk: Rows per block (memory is about chunk × n × 4 bytes × 3).
        precision: ``float32`` (exact) or ``float16`` (plismbench's float16 numbers).

    Returns:
        ``cosine`` and ``top{k}`` for each k.
    """
    if a.shape != b.shape:
        raise ValueError(f"slides must hold the same aligned tiles: {a.shape} vs {b.shape}")
    pa = R.prepare(a, precision=precision, chunk=chunk)
    pb = R.prepare(b, precision=precision, chunk=chunk)
    return R.pair_metrics(pa, pb, precision=precision, ks=ks, chunk=chunk)


def all_pairs(
    features: Mapping[str, np.ndarray],
    *,
    keys: dict[str, SlideKey] | None = None,
    ks: Sequence[int] = KS,
    chunk: int = 2048,
    precision: str = "float32",
    order: Sequence[str] | None = None,
    on_pair: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Metrics for every unordered pair of slides.

    Args:
        features: Slide name -> (n, D) aligned embeddings (same n for all). Each slide is read
            once, in ``order``, and only its prepared rows are kept (a lazy mapping that loads
            on access keeps one slide's raw features in memory at a time).
        keys: Slide name -> labels; parsed from PLISM names when omitted.
        ks: The k of the top-k accuracies.
        chunk: Rows per block.
        precision: ``float32`` or ``float16``.
        order: Slide order; pair (a, b) has a before b (float16 ties follow it). Default: sorted.
        on_pair: Called with (pairs done, pairs total) for progress.

    Returns:
        One row per pair: ``a``, ``b``, ``group``, ``cosine``, ``top{k}``.
    """
    names = list(order) if order is not None else sorted(features)
    prepared = prepare_all(features, names, ks=ks, precision=precision, chunk=chunk)
    return pairs_of(prepared, keys=keys, ks=ks, chunk=chunk, precision=precision, on_pair=on_pair)


def prepare_all(
    features: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    ks: Sequence[int] = KS,
    precision: str = "float32",
    chunk: int = 2048,
    on_slide: Callable[[int, int], None] | None = None,
) -> dict[str, R.Prepared]:
    """Each slide prepared once (in ``names`` order), checked to hold the same aligned tiles."""
    if len(names) < 2:
        raise ValueError("robustness needs at least two aligned slides or domains")
    out: dict[str, R.Prepared] = {}
    for name in names:
        p = R.prepare(features[name], precision=precision, chunk=chunk)
        if out and len(p.unit) != len(next(iter(out.values())).unit):
            sizes = sorted({len(p.unit), len(next(iter(out.values())).unit)})
            raise ValueError(f"slides hold different numbers of aligned tiles: {sizes}")
        if len(p.unit) <= max(ks):
            raise ValueError(
                f"top-{max(ks)} needs more than {max(ks)} aligned tiles, got {len(p.unit)}"
            )
        out[name] = p
        if on_slide is not None:
            on_slide(len(out), len(names))
    return out


def pairs_of(
    prepared: dict[str, R.Prepared],
    *,
    keys: dict[str, SlideKey] | None = None,
    ks: Sequence[int] = KS,
    chunk: int = 2048,
    precision: str = "float32",
    on_pair: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every pair (a, b) of prepared slides, a before b in the mapping's order."""
    names = list(prepared)
    keys = keys or {n: parse_slide_name(n) for n in names}
    pairs = list(itertools.combinations(names, 2))
    rows = []
    for i, (na, nb) in enumerate(pairs):
        m = R.pair_metrics(prepared[na], prepared[nb], precision=precision, ks=ks, chunk=chunk)
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
    features: Mapping[str, np.ndarray],
    *,
    keys: dict[str, SlideKey] | None = None,
    ks: Sequence[int] = KS,
    chunk: int = 2048,
    precision: str = "float32",
    order: Sequence[str] | None = None,
    on_pair: Callable[[int, int], None] | None = None,
    on_slide: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Pairs, group statistics and the score for aligned per-slide embeddings.

    ``order`` (default: sorted names) sets which slide of a pair comes first in [A; B]; it
    matters only for float16 ties. The result records ``precision``.
    """
    names = list(order) if order is not None else sorted(features)
    prepared = prepare_all(
        features, names, ks=ks, precision=precision, chunk=chunk, on_slide=on_slide
    )
    rows = pairs_of(prepared, keys=keys, ks=ks, chunk=chunk, precision=precision, on_pair=on_pair)
    stats = group_stats(rows, ks=ks)
    return {
        "n_slides": len(prepared),
        "n_tiles": len(next(iter(prepared.values())).unit),
        "n_pairs": len(rows),
        "precision": precision,
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
