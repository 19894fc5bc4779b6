"""Plot ``embed_overhead.py`` rows: engine on pre-loaded tensors vs the full pipeline, per run.

python benchmarks/plot_embed_overhead.py embed_overhead.jsonl -o docs/img/embed_overhead.png
"""

from __future__ import annotations

import argparse
import json
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
        f"{r['workers']} reader(s)"
        for r in rows
    ]
    engine = [r["engine_median"] for r in rows]
    pipe = [r["pipeline_median"] for r in rows]
    fig, ax = plt.subplots(figsize=(2.4 + 2.2 * len(rows), 4.2))
    xs = range(len(rows))
    w = 0.38
    ax.bar([x - w / 2 for x in xs], engine, w, label="engine on pre-loaded tensors")
    ax.bar([x + w / 2 for x in xs], pipe, w, label="edgepath embed, end to end")
    for x, r in zip(xs, rows, strict=True):
        top = max(r["engine_median"], r["pipeline_median"])
        ax.text(x, top * 1.02, f"{r['ratio_end_to_end']:.2f}×", ha="center", fontweight="bold")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("tiles/s")
    ax.set_ylim(0, max(engine + pipe) * 1.18)
    ax.set_title(f"Pipeline overhead ({rows[0]['machine'].get('cores')} CPU cores, shared)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
