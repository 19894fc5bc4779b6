"""Plot ``embed_overhead.py`` rows: engine on pre-loaded tensors vs the full pipeline, per run.

python benchmarks/plot_embed_overhead.py embed_overhead.jsonl -o docs/img/embed_overhead.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rows", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in args.rows.read_text().splitlines() if ln.strip()]
    labels = [
        f"{r['model'].split(' ')[0]}\n{r['engine']}, {r['n_tiles']} tiles\nbatch {r['batch']}, "
        f"{r['workers']} reader(s), load avg {r.get('load_avg_1m', float('nan')):.0f}"
        for r in rows
    ]
    xs = list(range(len(rows)))
    w = 0.38
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(3.0 + 4.4 * len(rows), 4.4))
    # wall clock: engine median with its min-max over the interleaved runs, and the pipeline
    eng = [r["engine_median"] for r in rows]
    lo = [r["engine_median"] - min(r["engine_tiles_per_s"]) for r in rows]
    hi = [max(r["engine_tiles_per_s"]) - r["engine_median"] for r in rows]
    pipe = [r["pipeline_median"] for r in rows]
    ax.bar([x - w / 2 for x in xs], eng, w, yerr=[lo, hi], capsize=4, label="engine, pre-loaded")
    ax.bar([x + w / 2 for x in xs], pipe, w, label="edgepath embed, end to end")
    for x, r in zip(xs, rows, strict=True):
        ax.text(
            x + w / 2,
            r["pipeline_median"],
            f"{r['ratio_end_to_end']:.2f}×",
            ha="center",
            va="bottom",
            fontweight="bold",
        )
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("tiles/s (wall clock; bar: min-max of engine runs)")
    ax.set_title("Throughput", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    # CPU time per tile: what a dedicated CPU-bound machine's throughput follows
    ecpu = [statistics.median(r["engine_cpu_ms_per_tile"]) for r in rows]
    pcpu = [statistics.median(r["pipeline_cpu_ms_per_tile"]) for r in rows]
    bx.bar([x - w / 2 for x in xs], ecpu, w, label="engine")
    bx.bar([x + w / 2 for x in xs], pcpu, w, label="pipeline (all processes)")
    for x, r in zip(xs, rows, strict=True):
        bx.text(
            x + w / 2,
            pcpu[x],
            f"{r['ratio_cpu_time']:.2f}×\nreaders {r['readers_only_cpu_ms_per_tile']:.1f} ms",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    bx.set_xticks(xs, labels, fontsize=8)
    bx.set_ylabel("CPU ms per tile")
    bx.set_ylim(0, max(ecpu + pcpu) * 1.25)
    bx.set_title("CPU cost per tile (robust to other load)", fontsize=10)
    bx.legend(fontsize=8, loc="lower center")
    fig.suptitle(f"edgepath embed overhead ({rows[0]['machine'].get('cores')} shared CPU cores)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
