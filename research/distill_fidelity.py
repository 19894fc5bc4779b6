"""Held-out fidelity of the three distillation recipes on 2 gloo processes (CPU acceptance run).

Runs ``torchrun --nproc-per-node 2 -m edgepath distill RECIPE ...`` for ``xmag``, ``expert`` and
``h0mini`` with stand-in teachers (``--teachers histo``: the histology-feature stand-ins of
edgepath/models/standin.py, the default; ``random``: random-weight ViTs) into ``vit-mini14`` on a
slide folder, and prints
init -> final held-out centred cosine and kNN-10 agreement (the student's own embedding vs the
teacher's, raw and centred; the head output in teacher space, raw and centred)::

    mkdir -p runs/slides && ln -s $(python -c "from edgepath.data import SAMPLE_SLIDE; \\
        print(SAMPLE_SLIDE)") /tmp/ep/full.tiff runs/slides/
    nice -n 19 python research/distill_fidelity.py --slides runs/slides -o runs/fidelity

Training is CPU-heavy: run it under ``nice``. The cards are used as they are (the paper cards,
or a variant card named in ``--recipes``); the overrides below only size the run for a CPU
(stand-in teachers, small student, few steps, short warm-up, EMA horizon of a short run) and are
printed with the results. The numbers in research/distill-standins.md were measured with the
cards as they were at the commits named there: check one out to reproduce a number exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

COMMON = [
    "--student",
    "vit-mini14",
    "--set",
    "data.holdout=0.3",
    "--set",
    "views.fixed_views=1",
    "--set",
    "train.checkpoint_every=1000",
    "--set",
    "loss.proj_hidden_dim=256",
]

# expert / h0mini: non-overlapping 0.5 mpp tiles, 600 to train on, 256 held out
TILE_DATA = [
    "--set",
    "data.stride=1.0",
    "--set",
    "data.eval_stride=1.0",
    "--set",
    "data.max_items=600",
    "--set",
    "train.eval_tiles=256",
]

RUNS: dict[str, list[str]] = {
    "xmag": [
        "--set",
        "data.min_tissue=0.3",
        "--set",
        "data.stride=0.5",
        "--set",
        "data.eval_stride=0.5",
        "--set",
        "data.max_items=400",
        "--set",
        "train.eval_tiles=128",
    ],
    "expert": [
        *TILE_DATA,
    ],
    "h0mini": [
        *TILE_DATA,
        "--set",
        "views.global_crops=1",
        "--set",
        "views.local_crops=2",
        "--set",
        "loss.dino_out_dim=2048",
        "--set",
        "loss.ibot_out_dim=2048",
        "--set",
        "loss.head_hidden_dim=256",
        "--set",
        "loss.head_bottleneck_dim=64",
        "--set",
        "loss.teacher_temp_warmup_steps=0",
        # Sinkhorn-Knopp equipartitions each batch over the prototypes: with 16 items per step
        # and 2048 prototypes it smears every target; it guards against a collapse that a frozen
        # teacher head cannot have (kNN-10 0.333 with it, 0.355 with DINO's centering, 600 steps)
        "--set",
        "loss.centering=softmax_center",
    ],
}

#: Stand-in teachers per recipe. ``histo``: deterministic encoders of stain, nuclei and texture
#: (edgepath/models/standin.py), whose neighbourhoods are tissue properties a student can learn;
#: ``random``: random-weight ViTs, whose fine neighbourhoods are pixel-space accidents (the first
#: acceptance runs; see research/distill-standins.md).
TEACHERS: dict[str, dict[str, list[str]]] = {
    "histo": {
        "xmag": ["histo-teacher"],
        "expert": ["histo-teacher", "histo-teacher-b"],
        "h0mini": ["histo-teacher"],
    },
    "random": {
        "xmag": ["tiny-teacher"],
        "expert": ["tiny-teacher", "small-teacher"],
        "h0mini": ["tiny-teacher"],
    },
}

KEYS = (
    "centered_cosine",
    "knn10_agreement",
    "knn10_agreement_centered",
    "head_knn10_agreement",
    "head_knn10_agreement_centered",
)


def recipe_of(card: str) -> str:
    """The recipe (``h0mini``, ``xmag``, ``expert``) of a distill card name or path."""
    from edgepath.distill.recipe import load_recipe

    recipe = load_recipe(card).recipe
    if recipe not in RUNS:
        raise SystemExit(f"{card}: recipe {recipe} has no CPU sizing here")
    return recipe


def main() -> None:
    """Run the recipes (or the ones given) and print a table of init -> final fidelity."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", required=True, help="slide folder (sample + full-size synthetic)")
    ap.add_argument("-o", "--out", required=True, help="folder for the run folders")
    ap.add_argument(
        "--recipes",
        nargs="*",
        default=list(RUNS),
        help="distill cards to run: the paper cards (h0mini, xmag, expert) or a variant such as "
        "xmag-calibrated or h0mini-frozen-heads (CPU sizing follows the card's recipe)",
    )
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8, help="per process")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--teachers", choices=list(TEACHERS), default="histo", help="stand-in family")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra override")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for name in args.recipes:
        kind = recipe_of(name)
        extra = [a for s in args.sets for a in ("--set", s)]
        teacher_args = [a for t in TEACHERS[args.teachers][kind] for a in ("--teacher", t)]
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc),
            "-m", "edgepath", "distill", name, "--slides", args.slides,
            "-o", str(out / name), "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--json", "--cache-dir", str(out / f"{name}-cache"),
            *COMMON, *RUNS[kind], *teacher_args, *extra,
        ]  # fmt: skip
        print("$", " ".join(cmd), flush=True)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{name}: distill failed (exit {res.returncode})")
        data = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append((name, data))
        (out / f"{name}.json").write_text(json.dumps(data, indent=1))
        f0, f = data["fidelity_init"], data["fidelity"]
        print(
            name,
            f"{data['seconds']} s,",
            f"{f['n_tiles']} held-out,",
            "  ".join(f"{k} {f0.get(k) or 0:.3f} -> {f.get(k) or 0:.3f}" for k in KEYS),
            flush=True,
        )


if __name__ == "__main__":
    main()
