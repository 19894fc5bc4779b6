"""Where each tile's aligned twin ranks, for every PLISM slide pair: float32 or float16, fast.

For a pair (A, B) of aligned slides with n tiles, stack the rows as [A; B] (2n rows; A is the
pair's first slide). Row r's twin is the same tile on the other slide. The top-k accuracy is the
share of the 2n rows whose twin is among their k most similar rows. Two precisions:

**float32** (exact): cosine of float32 rows. The twin counts as found at k when fewer than k
other rows (the row itself excluded) are strictly more similar than the twin; ties favour the
twin.

**float16** (plismbench's numbers, its default "mixed precision"): the features are rounded to
float16 and every quantity is computed the way numpy computes it on float16 arrays, each result
rounded to float16: dot products (float32 accumulation of the exact products), row norms,
their products, and the cosines ``cos16 = dot16 / (norm16_i * norm16_j)``. The 2n rows of a
row's cosine list are ranked by cos16, largest first, and equal values by their position in
[A; B] (a stable sort: cupy's argpartition, which plismbench uses on GPU, is a full stable
sort, and numpy's on CPU selects these first positions in index order too). Position 0 is
taken to be the row itself and dropped, so the twin counts as found at k when its position p
is in 1..k. The pair's cosine is the float16 mean of the n twin cos16 values.

How it stays fast (no (2n)² matrix, float32 BLAS only):

- with unit rows and the twin's similarity t_r, the twin's position is
  p = #{rows more similar than the twin} (+ the rows tied with it that come first in [A; B],
  float16 only), counted separately over the row's own slide and over the other slide;
- each slide's most similar rows within itself (the top ``m``, with their indices) are found
  once per slide; per pair they answer the own-slide count for any threshold;
- per pair only A·Bᵀ is computed, in row chunks. Rows already out of the top-k race (their
  own slide alone puts ``cap`` rows above the twin) are left out of the row side, and columns
  (B rows) that are out of the race are left out of the column side;
- float16: an entry whose float32 cosine lies clearly above or below the twin's float16 value
  (by more than float16 rounding can move it) is counted from float32; only entries inside that
  narrow band are recomputed the float16 way, so ties and the order of equal values come out
  as plismbench's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgepath.errors import ConfigError

PRECISIONS: tuple[str, ...] = ("float16", "float32")
_F16_MAX = 65504.0


@dataclass
class Prepared:
    """One slide ready for pairing.

    Attributes:
        unit: (n, D) float32 rows divided by their norm (float16 mode: the float16 norm of the
            float16 rows).
        top_val: (n, m) float32, each row's ``m`` largest similarities within its own slide,
            descending (float32 mode: the row itself left out; float16 mode: included).
        top_idx: (n, m) int64, the rows those similarities are with.
        x16: (n, D) float16 rows (float16 mode).
        norm16: (n,) float16 row norms as numpy computes them on float16 (float16 mode).
    """

    unit: np.ndarray
    top_val: np.ndarray
    top_idx: np.ndarray
    x16: np.ndarray | None = None
    norm16: np.ndarray | None = None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def prepare(
    x: np.ndarray, *, precision: str = "float32", m: int = 32, chunk: int = 2048
) -> Prepared:
    """Unit rows, float16 rows and norms (float16 mode), and each row's top ``m`` within the slide."""
    check_precision(precision)
    x = np.asarray(x)
    if precision == "float32":
        x = np.asarray(x, dtype=np.float32)
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        val, idx = self_top(unit, m=m, include_self=False, chunk=chunk)
        return Prepared(unit, val, idx)
    x16 = np.asarray(x, dtype=np.float32).astype(np.float16)
    with np.errstate(over="ignore"):
        norm16 = np.linalg.norm(x16, axis=1)  # float16, as plismbench computes it
    _check_float16_range(norm16)
    unit = x16.astype(np.float32) / norm16.astype(np.float32)[:, None]
    val, idx = self_top(unit, m=m, include_self=True, chunk=chunk)
    return Prepared(unit, val, idx, x16=x16, norm16=norm16)


def _check_float16_range(norm16: np.ndarray) -> None:
    top = float(np.max(norm16.astype(np.float32)))
    low = float(np.min(norm16.astype(np.float32)))
    if not np.isfinite(top) or top * top > _F16_MAX:
        raise ConfigError(
            f"features with an L2 norm up to {top:.4g} overflow float16 (dot products above "
            f"{_F16_MAX:.0f}; plismbench's float16 metrics would be inf/NaN); "
            "use --precision float32"
        )
    if low * low < 2.0**-24:
        raise ConfigError(
            f"features with an L2 norm as small as {low:.3g} underflow float16 (products of "
            "norms round to 0; plismbench's float16 metrics would be NaN); use --precision float32"
        )


def self_top(
    unit: np.ndarray, *, m: int, include_self: bool, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``m`` largest similarities to rows of the same slide (descending) and their rows."""
    n = len(unit)
    m = min(m, n if include_self else n - 1)
    vals = np.empty((n, m), dtype=np.float32)
    idx = np.empty((n, m), dtype=np.int64)
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        g = unit[c0:c1] @ unit.T
        if not include_self:
            g[np.arange(c1 - c0), np.arange(c0, c1)] = -np.inf
        part = np.argpartition(g, n - m, axis=1)[:, n - m :]
        pv = np.take_along_axis(g, part, axis=1)
        order = np.argsort(-pv, axis=1, kind="stable")
        vals[c0:c1] = np.take_along_axis(pv, order, axis=1)
        idx[c0:c1] = np.take_along_axis(part, order, axis=1)
    return vals, idx


def cos16(s: np.ndarray, norm_i: np.ndarray, norm_j: np.ndarray) -> np.ndarray:
    """float16 cosines from float32 unit-row similarities ``s`` and float16 norms, as numpy
    computes ``dot16 / (norm16_i * norm16_j)`` on float16 arrays."""
    dot = (s * norm_i.astype(np.float32) * norm_j.astype(np.float32)).astype(np.float16)
    return dot / (norm_i * norm_j)


@dataclass
class _Thresholds:
    """Per-row thresholds of one slide in a pair (the twin's similarity and the float16 band)."""

    hi: np.ndarray  # above: surely more similar than the twin
    lo: np.ndarray  # at or below: surely not (float32 mode: lo == hi, no band)
    c16: np.ndarray | None = None  # float16 mode: the twin's float16 cosine
    norm16: np.ndarray | None = None  # float16 mode: this slide's row norms


def _twin_f32(pa: Prepared, pb: Prepared) -> tuple[float, _Thresholds, _Thresholds]:
    s = np.einsum("ij,ij->i", pa.unit, pb.unit)
    t = _Thresholds(hi=s, lo=s)
    return float(s.mean()), t, t


def _twin_f16(pa: Prepared, pb: Prepared) -> tuple[float, _Thresholds, _Thresholds]:
    assert pa.x16 is not None and pb.x16 is not None
    assert pa.norm16 is not None and pb.norm16 is not None
    dot = np.matmul(pa.x16[:, None, :], pb.x16[:, :, None])[:, 0, 0]  # numpy's float16 dot
    c16 = dot / (pa.norm16 * pb.norm16)
    cf = c16.astype(np.float32)
    nmin = min(float(pa.norm16.min()), float(pb.norm16.min()))
    ta = _Thresholds(*_band(cf, c16, pa.norm16, nmin), c16=c16, norm16=pa.norm16)
    tb = _Thresholds(*_band(cf, c16, pb.norm16, nmin), c16=c16, norm16=pb.norm16)
    return float(np.mean(c16)), ta, tb  # float16 mean, as numpy gives for float16 input


def _band(
    cf: np.ndarray, c16: np.ndarray, norm16: np.ndarray, nmin: float
) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) around each twin value: how far float16 rounding can move a float32 cosine.

    ``cos16 = q(q(d) / q(n_i n_j))`` with q rounding to float16 (relative error 2^-12, or an
    absolute 2^-25 below float16's normal range); with den = n_i n_j at least n_i * nmin, it
    lies within 2 (|c| + 0.01) (2^-12 + 2^-25 / den) of the float32 cosine, plus one float16
    step at c for the comparison itself, plus slack for the float32 GEMM.
    """
    den = norm16.astype(np.float32) * np.float32(nmin)
    rel = 2.0**-12 + 2.0**-25 / den
    step = np.abs(np.spacing(c16)).astype(np.float32)
    h = 2 * step + 2 * (np.abs(cf) + 0.01) * rel / (1 - rel) + 2.0**-16
    return cf + h, cf - h


def _tally(
    s: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    t: _Thresholds,
    col_norm16: np.ndarray | None,
    g: np.ndarray,
    ties: np.ndarray,
    tie_rule: str,
) -> None:
    """Add to ``g`` (rows more similar than the twin) and ``ties`` (equal rows that come first).

    ``s[a, b]`` is the similarity of row ``rows[a]`` (whose thresholds are in ``t``) with row
    ``cols[b]`` of the other (or same) slide. ``tie_rule``: ``lower`` counts a tie when the
    other row's index is lower (the cross block), ``all`` or ``none`` (own slide, A or B).
    """
    above = np.count_nonzero(s > t.hi[rows][:, None], axis=1)
    g[rows] += above
    if t.c16 is None:
        return
    # float16: the few entries inside the band around the twin's value, recomputed as float16
    near = np.flatnonzero(np.count_nonzero(s > t.lo[rows][:, None], axis=1) > above)
    if not len(near):
        return
    sub, r = s[near], rows[near]
    a, b = np.nonzero((sub > t.lo[r][:, None]) & (sub <= t.hi[r][:, None]))
    gi = r[a]
    gj = cols[b] if cols.ndim == 1 else cols[near[a], b]
    assert t.c16 is not None and t.norm16 is not None and col_norm16 is not None
    v = cos16(sub[a, b], t.norm16[gi], col_norm16[gj])
    g += np.bincount(gi[v > t.c16[gi]], minlength=len(g))
    eq = v == t.c16[gi]
    if tie_rule == "lower":
        eq &= gj < gi
    if tie_rule != "none":
        ties += np.bincount(gi[eq], minlength=len(ties))


def _own_slide(p: Prepared, t: _Thresholds, cap: int, tie_rule: str) -> tuple[np.ndarray, ...]:
    """Counts over the row's own slide, from its top-``m`` list (full rows where that is short)."""
    n = len(p.unit)
    g = np.zeros(n, dtype=np.int64)
    ties = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    _tally(p.top_val, rows, p.top_idx, t, p.norm16, g, ties, tie_rule)
    if t.c16 is not None and p.top_val.shape[1] < n:
        # the list ends inside the band: rows below it may tie or win; count those rows in full
        short = np.flatnonzero((p.top_val[:, -1] > t.lo) & (g < cap))
        if len(short):
            g[short] = ties[short] = 0
            s = p.unit[short] @ p.unit.T
            _tally(s, short, rows, t, p.norm16, g, ties, tie_rule)
    return g, ties


def _other_slide(
    pa: Prepared,
    pb: Prepared,
    ta: _Thresholds,
    tb: _Thresholds,
    counts: tuple[np.ndarray, ...],
    *,
    cap: int,
    chunk: int,
) -> None:
    """Add the counts over the other slide: A rows against B, B rows against A, in row chunks."""
    ga, la, gb, lb = counts
    n = len(pa.unit)
    every = np.arange(n)
    for c0 in range(0, n, chunk):
        rows = np.arange(c0, min(c0 + chunk, n))
        live = ga[rows] < cap
        ra, rest = rows[live], rows[~live]
        if len(ra):  # rows in the race: against every B row (gives their columns too)
            s = pa.unit[ra] @ pb.unit.T
            s[np.arange(len(ra)), ra] = -np.inf  # the twin itself
            _tally(s, ra, every, ta, pb.norm16, ga, la, "lower")
            _tally(s.T, every, ra, tb, pa.norm16, gb, lb, "lower")
        cols = np.flatnonzero(gb < cap)
        if len(rest) and len(cols):  # rows out of the race: only B rows still in it need them
            s = pb.unit[cols] @ pa.unit[rest].T
            pos = np.minimum(np.searchsorted(rest, cols), len(rest) - 1)
            hit = rest[pos] == cols
            s[np.flatnonzero(hit), pos[hit]] = -np.inf
            _tally(s, cols, rest, tb, pa.norm16, gb, lb, "lower")


def pair_metrics(
    pa: Prepared,
    pb: Prepared,
    *,
    precision: str = "float32",
    ks: Sequence[int] = (1, 3, 5, 10),
    chunk: int = 2048,
) -> dict[str, float]:
    """``cosine`` and ``top{k}`` of one aligned pair, A = ``pa`` first in [A; B]."""
    check_precision(precision)
    if pa.unit.shape != pb.unit.shape:
        raise ValueError(
            f"slides must hold the same aligned tiles: {pa.unit.shape} vs {pb.unit.shape}"
        )
    n, kmax = len(pa.unit), max(ks)
    f16 = precision == "float16"
    cosine, ta, tb = (_twin_f16 if f16 else _twin_f32)(pa, pb)
    cap = kmax + 1 if f16 else kmax  # enough rows above the twin to miss every k
    for p in (pa, pb):
        if p.top_val.shape[1] < min(cap, n - (not f16)):
            raise ValueError(
                f"own-slide lists of {p.top_val.shape[1]} rows; top-{kmax} needs {cap}"
            )
    ga, la = _own_slide(pa, ta, cap, "all")  # A rows: all of A comes before the twin (in B)
    gb, lb = _own_slide(pb, tb, cap, "none")  # B rows: all of B comes after the twin (in A)
    _other_slide(pa, pb, ta, tb, (ga, la, gb, lb), cap=cap, chunk=chunk)
    out = {"cosine": cosine}
    for k in ks:
        if f16:
            pos = np.concatenate([ga + la, gb + lb])  # the twin's position, 0 = the row itself
            hits = np.count_nonzero((pos >= 1) & (pos <= k))
        else:
            hits = np.count_nonzero(ga < k) + np.count_nonzero(gb < k)
        out[f"top{k}"] = hits / (2 * n)
    return out
