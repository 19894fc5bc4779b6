"""Time the PLISM metrics on PLISM's full design: 91 slides × 8,139 tiles, 4,095 pairs.

Synthetic features stand in for a model's (no PLISM download needed, and the metrics' cost
depends only on the slide count, tile count, dimension and how hard the retrieval is): a tile
signal drawn from tissue-like clusters, a shared offset (so cosines sit high, as real
features' do, which is where float16 ties are densest), one linear map per staining and per
scanner, and noise; some tiles are more distinctive than others. The features are scaled to a
median norm of about 13 (norms above 256 overflow float16, where plismbench's float16 metrics
turn to NaN and edgepath refuses float16). The strengths are set so the
medians land in the leaderboard's range (on 6 slides × 8,139 tiles at 384-d: top-10
cross-scanner 0.51, cross-staining 0.33, cross-both 0.10, cosine 0.65, score 0.40). Each slide's features are generated when the
metrics first read it, so only the prepared rows are held in memory.

Run (prints one JSON line per precision, appends it to --out)::

    python benchmarks/plism_metrics_speed.py --dim 384 --precision float32 float16 \
        --out docs/results/plism-metrics-speed.jsonl
    python benchmarks/plism_metrics_speed.py --dim 1536 --pairs 200    # a sample of pairs
    python benchmarks/plism_metrics_speed.py --dim 384 --plismbench-pair  # its CPU path, 1 pair
    python benchmarks/plism_metrics_speed.py --dim 384 --parity 12  # vs plismbench's protocol
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

STAININGS = ["GIV", "GIVH", "GM", "GMH", "GV", "GVH", "HR", "HRH", "KR", "KRH", "LM", "LMH", "MY"]
SCANNERS = ["AT2", "GT450", "P", "S210", "S360", "S60", "SQ"]
SLIDES = [f"{st}_{sc}_to_GMH_S60.tif" for st, sc in itertools.product(STAININGS, SCANNERS)]


class SyntheticPlism(Mapping[str, np.ndarray]):
    """Slide name -> (n, dim) float32 features, generated on access (seeded per slide)."""

    def __init__(self, n: int, dim: int, *, seed: int = 0, slides: list[str] = SLIDES) -> None:
        self.n, self.dim, self.seed, self.slides = n, dim, seed, slides
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(48, dim))
        labels = np.sort(rng.integers(0, len(centres), n))  # neighbouring tiles alike
        own = rng.normal(size=(n, dim)) * np.exp(rng.normal(scale=0.6, size=(n, 1)))
        self.signal = (centres[labels] + 0.9 * own).astype(np.float32)  # some tiles distinctive
        offset = rng.normal(size=dim)
        self.offset = (1.6 * np.sqrt(dim) * offset / np.linalg.norm(offset)).astype(np.float32)

    def _map(self, kind: str, index: int, scale: float) -> np.ndarray:
        rng = np.random.default_rng([self.seed, {"stain": 1, "scan": 2}[kind], index])
        m = np.eye(self.dim) + rng.normal(scale=scale / np.sqrt(self.dim), size=(self.dim,) * 2)
        return m.astype(np.float32)

    def __getitem__(self, name: str) -> np.ndarray:
        st, sc = name.split("_")[:2]
        i = self.slides.index(name)
        shift = np.random.default_rng([self.seed, 3, STAININGS.index(st)]).normal(
            scale=0.3, size=self.dim
        )
        x = self.signal @ self._map("stain", STAININGS.index(st), 0.7)
        x = (x + shift.astype(np.float32)) @ self._map("scan", SCANNERS.index(sc), 0.6)
        noise = np.random.default_rng([self.seed, 4, i]).normal(scale=0.6, size=x.shape)
        scale = 0.25 * np.sqrt(384 / self.dim)  # median norm about 13, the largest about 75
        return ((x + noise.astype(np.float32) + self.offset) * scale).astype(np.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self.slides)

    def __len__(self) -> int:
        return len(self.slides)


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            x.split(":", 1)[1].strip() for x in text.splitlines() if "model name" in x
        )
        flags = next(x.split(":", 1)[1].split() for x in text.splitlines() if x.startswith("flags"))
        keep = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")
        info["flags"] = [f for f in keep if f in flags]
    except (OSError, StopIteration):
        pass
    info["numpy"] = np.__version__
    info["load_avg"] = os.getloadavg()
    return info


def run(n: int, dim: int, precision: str, *, pairs: int | None, seed: int) -> dict:
    from edgepath.eval import plism, plism_rank

    feats = SyntheticPlism(n, dim, seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    prepared = plism.prepare_all(feats, SLIDES, precision=precision)
    t_prep, c_prep = time.perf_counter() - t0, time.process_time() - c0
    every = list(itertools.combinations(SLIDES, 2))
    if pairs is not None:  # an evenly spread sample of the 4,095 pairs
        every = [every[i] for i in np.linspace(0, len(every) - 1, pairs).round().astype(int)]
    t0, c0 = time.perf_counter(), time.process_time()
    rows = []
    for a, b in every:
        m = plism_rank.pair_metrics(prepared[a], prepared[b], precision=precision)
        group = plism.pair_group(plism.parse_slide_name(a), plism.parse_slide_name(b))
        rows.append({"a": a, "b": b, "group": group, **m})
    t_pairs, c_pairs = time.perf_counter() - t0, time.process_time() - c0
    stats = plism.group_stats(rows)
    return {
        "slides": len(SLIDES), "tiles": n, "dim": dim, "precision": precision,
        "pairs_timed": len(rows), "prepare_s": round(t_prep, 1), "pairs_s": round(t_pairs, 1),
        "prepare_cpu_s": round(c_prep, 1), "pairs_cpu_s": round(c_pairs, 1),
        "score": round(plism.score(stats), 4),
        "top10_medians": {g: round(stats[g]["top10"]["median"], 4) for g in plism.GROUPS},
        "cosine_median_all": round(stats["all"]["cosine"]["median"], 4),
    }  # fmt: skip


def plismbench_pair(n: int, dim: int, seed: int) -> dict:
    """One pair computed the way plismbench's CPU path does: numpy float16 on [A; B]."""
    feats = SyntheticPlism(n, dim, seed=seed)
    ab = np.concatenate([feats[SLIDES[0]], feats[SLIDES[8]]]).astype(np.float16)
    t0, c0 = time.perf_counter(), time.process_time()
    dot = ab @ ab.T  # numpy's float16 matmul: no BLAS
    norm = np.linalg.norm(ab, axis=1, keepdims=True)
    cos = dot / (norm * norm.T)
    np.argpartition(-cos, range(1, 11), axis=1)
    return {
        "plismbench_cpu_pair_s": round(time.perf_counter() - t0, 1),
        "plismbench_cpu_pair_cpu_s": round(time.process_time() - c0, 1),
        "dim": dim,
        "tiles": n,
    }


def protocol_pair(a: np.ndarray, b: np.ndarray, ks=(1, 3, 5, 10)) -> dict[str, float]:
    """plismbench's protocol on one pair, as its README and code describe it: the (2n)² float16
    cosine matrix of [A; B], positions 1..k of a partial sort (``argpartition``) per row.

    The dot products are float32 BLAS sums of the float16 products, rounded to float16 (numpy's
    own float16 matmul sums in order; the two round differently about once in 1,000 entries),
    so that a pair takes seconds rather than minutes.
    """
    n = len(a)
    ab = np.concatenate([a, b]).astype(np.float16)
    x = ab.astype(np.float32)
    dot = (x @ x.T).astype(np.float16)
    norm = np.linalg.norm(ab, axis=1, keepdims=True)
    cos = dot / (norm * norm.T)
    top = np.argpartition(-cos, range(1, max(ks) + 1), axis=1)[:, 1 : max(ks) + 1]
    twin = np.concatenate([np.arange(n, 2 * n), np.arange(n)])[:, None]
    out = {"cosine": float(np.diag(cos[:n, n:]).mean())}
    for k in ks:
        out[f"top{k}"] = float(np.mean(np.any(top[:, :k] == twin, axis=1)))
    return out


def parity(n: int, dim: int, pairs: int, seed: int) -> dict:
    """edgepath's float16 and float32 against ``protocol_pair`` on an even spread of pairs."""
    from edgepath.eval import plism_rank

    feats = SyntheticPlism(n, dim, seed=seed)
    every = list(itertools.combinations(SLIDES, 2))
    diffs: dict[str, list[float]] = {"float16": [], "float32": [], "float16, B first": []}
    for i in np.linspace(0, len(every) - 1, pairs).round().astype(int):
        a, b = feats[every[i][0]], feats[every[i][1]]
        ref = protocol_pair(a, b)
        for prec in ("float16", "float32"):
            pa = plism_rank.prepare(a, precision=prec)
            pb = plism_rank.prepare(b, precision=prec)
            got = plism_rank.pair_metrics(pa, pb, precision=prec)
            diffs[prec].append(max(abs(got[k] - ref[k]) for k in ref))
            if prec == "float16":  # the same pair with the slides' roles swapped
                got = plism_rank.pair_metrics(pb, pa, precision=prec)
                diffs["float16, B first"].append(max(abs(got[k] - ref[k]) for k in ref))
    return {
        "parity_pairs": pairs, "tiles": n, "dim": dim,
        "max_abs_diff_vs_plismbench_protocol": {p: max(v) for p, v in diffs.items()},
        "per_pair": diffs,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--tiles", type=int, default=8139)
    ap.add_argument("--precision", nargs="+", default=["float32", "float16"])
    ap.add_argument("--pairs", type=int, default=None, help="Time a sample of the pairs.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plismbench-pair", action="store_true", help="Time plismbench's CPU path.")
    ap.add_argument(
        "--parity", type=int, default=0, metavar="PAIRS", help="Compare with plismbench's protocol."
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.parity:
        todo = [lambda: parity(args.tiles, args.dim, args.parity, args.seed)]
    elif args.plismbench_pair:
        todo = [lambda: plismbench_pair(args.tiles, args.dim, args.seed)]
    else:
        todo = [
            (lambda p=p: run(args.tiles, args.dim, p, pairs=args.pairs, seed=args.seed))
            for p in args.precision
        ]
    for job in todo:
        before = machine()
        row = {**job(), "machine": before, "load_avg_after": os.getloadavg()}
        row["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
