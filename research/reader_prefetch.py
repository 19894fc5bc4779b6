"""Does a deeper hand-off make two reader processes scale better (issue 26)?

``TileReader`` splits every batch between its workers and keeps ``workers * prefetch + 1``
shared-memory slots, so one worker can run only a few batches ahead of the other; on a noisy
VM a hiccup of one then idles both. This runs one pool per (workers, prefetch), each warmed by
one pass, then ``--repeats`` passes of each pool interleaved, and prints one JSON line: the
seconds per pass, and each 2-worker pool's scaling against one worker (medians, and per repeat
pair)::

    python research/reader_prefetch.py full.tiff --repeats 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from edgepath.bench.read import reader_pass
from edgepath.embed.reader import Preprocess, TileReader
from edgepath.eval.machine import describe
from edgepath.slides import open_slide, tile_slide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide", type=Path)
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--prefetch", default="2,4,8", help="2-worker prefetch depths")
    args = ap.parse_args()
    with open_slide(args.slide) as s:
        coords = tile_slide(s, mpp=args.mpp, tile_px=224).coords
    pre = Preprocess(mpp=args.mpp, tile_px=224, mean=(0.5,) * 3, std=(0.5,) * 3, uint8=True)
    configs = [(1, 2)] + [(2, int(p)) for p in args.prefetch.split(",")]
    pools = {c: TileReader(pre, batch=args.batch, workers=c[0], prefetch=c[1]) for c in configs}
    seconds: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    try:
        for pool in pools.values():
            reader_pass(pool, args.slide, coords)  # warm: a run's first slide, apart
        for _ in range(args.repeats):
            for c, pool in pools.items():
                seconds[c].append(reader_pass(pool, args.slide, coords)[0])
    finally:
        for pool in pools.values():
            pool.close()
    one = seconds[(1, 2)]
    print(
        json.dumps(
            {
                "command": " ".join(["python", "research/reader_prefetch.py", *sys.argv[1:]]),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "tiles": len(coords),
                "batch": args.batch,
                "seconds": {
                    f"w{w}-p{p}": [round(x, 6) for x in v] for (w, p), v in seconds.items()
                },
                "scaling_vs_1": {
                    f"p{p}": round(statistics.median(one) / statistics.median(v), 3)
                    for (w, p), v in seconds.items()
                    if w == 2
                },
                "scaling_per_repeat": {
                    f"p{p}": [round(a / b, 3) for a, b in zip(one, v, strict=True)]
                    for (w, p), v in seconds.items()
                    if w == 2
                },
                "machine": describe(),
            }
        )
    )


if __name__ == "__main__":
    main()
