"""Plot what the ``h0mini`` frozen-head targets keep of the teacher, and what the student learns.

python research/plot_frozen_head_temp.py research/results/frozen-head-code.json \
    research/results/distill-fidelity-histo-std.json research/img/frozen-head-temp.png

Left: kNN-10 agreement between the targets and the teacher (``research/frozen_head_code.py``,
CLS and patch tokens, per run of that file) against the teacher temperature of the frozen head.
Right: held-out kNN-10 of students trained at each temperature (the runs of
``research/distill_fidelity.py`` that carry a ``frozen_head_temp`` field; one marker per seed),
with the acceptance bar (halfway from init to the teacher's self-agreement) and that
self-agreement.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SELF_AGREEMENT = 0.709  # teacher vs itself on tiles moved by 8 px (standin_predictability.py)


def main(code_json: str, runs_json: str, out: str) -> None:
    """Write the two-panel figure to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    code = json.loads(Path(code_json).read_text())
    runs = json.loads(Path(runs_json).read_text())["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for run in code["runs"]:
        temps = sorted(run["temps"], key=float)
        for tok, style in (("cls", "-o"), ("patch", "--s")):
            left.plot(
                [float(t) for t in temps],
                [run["temps"][t][f"{tok}_knn10"] for t in temps],
                style,
                label=f"{run['teacher']}, {run['prototypes']} prototypes, {tok}",
            )
    left.axvline(0.07, color="grey", lw=0.8, ls=":")
    left.text(0.072, 0.92, "DINOv2\n0.07", color="grey", fontsize=8)
    left.set(xscale="log", xlabel="teacher temperature of the frozen head", ylim=(0.2, 1.0))
    left.set(ylabel="kNN-10: targets vs teacher", title="what the targets keep of the teacher")
    left.legend(fontsize=7)

    pts = [  # the 1500-step, 3000-tile runs of the title
        r
        for r in runs.values()
        if "frozen_head_temp" in r and r["steps"] == 1500 and r.get("train_items") == 3000
    ]
    init = pts[0]["fidelity_init"]["knn10_agreement_centered"] if pts else 0.26
    for koleo, color in ((0.0, "C0"), (0.1, "C3")):
        sel = [r for r in pts if r.get("koleo_weight") == koleo]
        right.plot(
            [r["frozen_head_temp"] for r in sel],
            [r["fidelity"]["knn10_agreement_centered"] for r in sel],
            "o",
            color=color,
            label=f"student, KoLeo {koleo:g} (one marker per seed)",
        )
    right.axhline(SELF_AGREEMENT, color="k", lw=0.8, ls="--", label="teacher vs itself (8 px)")
    right.axhline((init + SELF_AGREEMENT) / 2, color="grey", lw=0.8, ls=":", label="bar: halfway")
    right.axhline(init, color="grey", lw=0.8, label="at initialisation")
    right.set(xscale="log", xlabel="teacher temperature of the frozen head", ylim=(0.2, 0.75))
    right.set(ylabel="held-out kNN-10 (centred)", title="h0mini student, 1500 steps, 3000 tiles")
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
