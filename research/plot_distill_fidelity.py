"""Plot the held-out fidelity of ``research/distill_fidelity.py`` runs (init vs final).

python research/plot_distill_fidelity.py runs/fidelity research/img/distill-fidelity.png [REF]

``REF`` (optional): the teacher's kNN-10 agreement with itself under a small move of the tile
(``self_knn10_shift8`` of ``research/standin_predictability.py``), drawn on the kNN panels as
the scale the bars should be read against.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

PANELS = (
    ("centered_cosine", "centred cosine (head vs teacher)"),
    ("knn10_agreement", "kNN-10, student's own embedding (raw cosine)"),
    ("knn10_agreement_centered", "kNN-10, student's own embedding (centred)"),
    ("head_knn10_agreement", "kNN-10, head output in teacher space (raw)"),
)


def main(folder: str, out: str, ref: float | None = None) -> None:
    """Read ``<recipe>.json`` and ``<recipe>/scalars.csv`` under ``folder``; write the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(folder)
    runs = {n: json.loads((root / f"{n}.json").read_text()) for n in ("xmag", "expert", "h0mini")
            if (root / f"{n}.json").is_file()}  # fmt: skip
    fig, axes = plt.subplots(1, len(PANELS) + 1, figsize=(20, 4.2))
    names = list(runs)
    for ax, (key, title) in zip(axes, PANELS, strict=False):
        init = [runs[n]["fidelity_init"].get(key) or 0.0 for n in names]
        fin = [runs[n]["fidelity"].get(key) or 0.0 for n in names]
        xs = range(len(names))
        b0 = ax.bar([x - 0.2 for x in xs], init, 0.4, color="#bbbbbb", label="at initialization")
        b1 = ax.bar([x + 0.2 for x in xs], fin, 0.4, color="#3a76af", label="after training")
        ax.bar_label(b0, fmt="%.2f", fontsize=8)
        ax.bar_label(b1, fmt="%.2f", fontsize=8)
        ax.set_xticks(list(xs), names)
        ax.axhline(0, color="black", lw=0.6)
        if ref is not None and key.startswith(("knn", "head_knn")):
            ax.axhline(ref, color="#d62728", lw=1, ls="--", label="teacher vs itself, 8 px move")
        ax.set_ylim(min(0.0, *init, *fin) - 0.05, 1.3)  # headroom: the legend never hides a bar
        ax.legend(fontsize=8, loc="upper left", ncol=2 if ref is not None else 1)
        ax.set_title(title, fontsize=10)
    ax = axes[-1]
    for n in names:
        rows = list(csv.DictReader((root / n / "scalars.csv").open()))
        steps = [int(r["step"]) for r in rows]
        loss = [float(r["loss"]) for r in rows]
        ax.plot(steps, [v - loss[0] for v in loss], label=n)
    ax.set_title("training loss (minus its first value)", fontsize=10)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    steps = {runs[n]["steps"] for n in names}
    teachers = sorted({t for n in names for t in runs[n].get("teachers", [])})
    fig.suptitle(
        f"edgepath distill on CPU, 2 gloo processes, {'/'.join(map(str, sorted(steps)))} steps: "
        f"stand-in teachers ({', '.join(teachers)}) -> vit-mini14, held-out tissue"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else None)
