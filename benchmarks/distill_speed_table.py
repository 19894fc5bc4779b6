"""The "Training speed" table of docs/distill.md from ``benchmarks/distill_speed.sh``'s JSONs.

    python benchmarks/distill_speed_table.py docs/results/distill-speed

Prints a markdown table of the measured rates and the wall time of a paper-scale run at those
rates (one process; N GPUs by linear scaling, stated as such).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: Paper-scale runs with the paper's teacher: samples the run sees, and the items the
#: teacher-feature cache holds (each item once per fixed view of the paper card: 4).
PAPER = {
    "xmag": [
        {
            "teacher": "uni2-h",
            "samples": 3.49e6 * 10,
            "cache_items": 3.49e6 * 4,
            "what": "XMAG: 3.49 M regions x 10 epochs (the card: 30,300 steps x 1,152)",
        }
    ],
    "h0mini": [
        {
            "teacher": "h-optimus-0",
            "samples": 43e6,
            "cache_items": 43e6 * 4,
            "what": "H0-mini: one pass over 43 M tiles",
        },
        {
            "teacher": "h-optimus-0",
            "samples": 625_000 * 2048,
            "cache_items": 43e6 * 4,
            "what": "h0mini card: 625,000 steps x 2,048 = 1.28 B samples (~30 passes of 43 M)",
        },
    ],
}


def load(folder: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    order = {"xmag": 0, "h0mini": 1, "expert": 2}
    return sorted(
        rows, key=lambda r: (order.get(r["recipe"], 9), r["student"], r["teachers"][0]["params_m"])
    )


def table(rows: list[dict]) -> str:
    out = [
        "| recipe | teacher(s) | student | batch | timed steps | steps/s | items/s | "
        "teacher share | items/s cached | cache gain | peak RSS |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        live = r["live"]
        teachers = " + ".join(f"{t['card']} ({t['params_m']:.0f} M)" for t in r["teachers"])
        cached = r.get("cached")
        out.append(
            f"| {r['recipe']} | {teachers} | {r['student']} ({r['student_params_m']:.0f} M) | "
            f"{r['batch_size']} {r['items']} | {r['steps_timed']} | {live['steps_per_s']:.4f} | "
            f"{live['items_per_s']:.3f} | {live['phase_share'].get('teacher', 0):.0%} | "
            + (
                f"{cached['items_per_s']:.2f} | {r['cache_speedup']:.0f}x | "
                if cached
                else "— | — | "
            )
            + f"{r['peak_memory_mb'] / 1024:.1f} GB |"
        )
    return "\n".join(out)


def arithmetic(rows: list[dict]) -> str:
    """Days for a paper-scale run at the measured rates: live teacher every step, and (where the
    cached rate was measured) the cache built once then read (build + cached steps)."""
    out = [
        "| run | teacher -> student | items/s live | days live, 1 process | days live, 8 (linear)"
        " | days with cache, 1 process | days with cache, 8 (linear) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    runs = [
        (row, run)
        for row in rows
        for run in PAPER.get(row["recipe"], [])
        if run["teacher"] == row["teachers"][0]["card"]
    ]
    for r, p in runs:
        live = p["samples"] / r["live"]["items_per_s"] / 86400
        cells = ["—", "—"]
        if r.get("cached") and r.get("cache_build"):
            build = p["cache_items"] / r["cache_build"]["items_per_s"]
            cached = (build + p["samples"] / r["cached"]["items_per_s"]) / 86400
            cells = [f"{cached:,.0f}", f"{cached / 8:,.0f}"]
        out.append(
            f"| {p['what']} | {r['teachers'][0]['card']} -> {r['student']} | "
            f"{r['live']['items_per_s']:.3f} | {live:,.0f} | {live / 8:,.0f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(out)


def main() -> None:
    rows = load(Path(sys.argv[1]))
    m = rows[0]["machine"]
    print(
        f"{m['cpu']}, {m.get('cores')} cores ({', '.join(m.get('cpu_features', []))}), "
        f"{rows[0]['threads']} torch thread(s), {rows[0]['date']}\n"
    )
    print(table(rows))
    print()
    print(arithmetic(rows))


if __name__ == "__main__":
    main()
