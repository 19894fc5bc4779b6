"""How much of the XMAG target a 5x view holds, measured with the teacher itself.

An ``xmag`` student sees a region as one 224 px tile at 2.0 mpp; its target is the mean of the
teacher's embeddings of the 16 tiles of the same region at 0.5 mpp. Part of that target is fine
detail (nuclei, texture) that the 5x view may not resolve, so a student may be unable to match
it fully. This script measures how much of it the 5x view holds with the teacher's *own* features, on the same held-out
regions as ``research/distill_fidelity.py --recipes xmag`` (128 regions spread over the
held-out split, ``min_tissue`` 0.3, stride 0.5, ``holdout`` 0.3):

- ``teacher_5x``: the teacher applied to the 5x tile as if it were a 20x tile, kNN-10 against
  the target (raw and centred);
- ``ridge_5x``: a ridge read-out from ``teacher_5x`` to the target, fitted on training regions:
  held-out centred cosine and kNN-10 (what a linear map of the teacher's own 5x features
  reaches);
- ``one_tile``: the embedding of one 20x tile of the 16 (row 1, column 1) against the mean
  of 16, raw and centred kNN-10 (what a quarter-size 20x view tells about the region).

With ``--student RUN_DIR/xmag`` (a trained ``xmag`` student artifact) it also reports, for that
student and for the same architecture at its seed-0 initialisation (``torch.manual_seed(0)``, as
the trainer builds it): kNN-10 of its CLS against the target, raw and centred (what the
distillation run reports), and a ridge read-out from the CLS fitted on the same training
regions (held-out centred cosine and centred kNN-10): whether the student's embedding carries
the target's neighbourhoods linearly even where its own metric does not rank them as the
teacher does::

    nice -n 19 python research/xmag_ceiling.py --slides runs/slides [--student runs/x8/xmag]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import torch

from edgepath.distill.data import build_source, spread
from edgepath.distill.views import normalize
from edgepath.metrics import fidelity, knn_agreement, knn_agreement_centered
from edgepath.models import resolve

try:
    from research._helpers import ridge_readout
except ModuleNotFoundError:  # run as a file: research/ itself is on sys.path
    from _helpers import ridge_readout  # type: ignore[no-redef]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", required=True)
    ap.add_argument("--teacher", default="histo-teacher")
    ap.add_argument("--n-train", type=int, default=512, help="training regions for the ridge")
    ap.add_argument("--n-eval", type=int, default=128, help="held-out regions")
    ap.add_argument("--student", help="a trained xmag student artifact folder (optional)")
    args = ap.parse_args()
    data = SimpleNamespace(
        tile_px=224,
        low_mpp=2.0,
        high_mpp=0.5,
        stride=0.5,
        eval_stride=0.5,
        holdout=0.3,
        min_tissue=0.3,
        max_items=0,
    )
    src = build_source("regions", slides=args.slides, tiles=None, data=data, mpp=0.5)
    enc = resolve(args.teacher).encoder
    enc.eval()
    inp = enc.spec.input

    def emb(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return enc(normalize(x, inp.mean, inp.std)).numpy()

    def sides(items) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        target, five, one = [], [], []
        for it in items:
            e16 = emb(src.high(it))  # (16, D), row-major 4 x 4
            target.append(e16.mean(0))
            one.append(e16[5])  # row 1, column 1
            five.append(emb(src.low(it)[None])[0])
        return np.stack(target), np.stack(five), np.stack(one)

    tr = [src.train[i] for i in spread(len(src.train), args.n_train)]
    he = [src.heldout[i] for i in spread(len(src.heldout), args.n_eval)]
    t_tr, f_tr, _ = sides(tr)
    t_he, f_he, o_he = sides(he)

    pred = ridge_readout(f_tr, t_tr, f_he)
    fid = fidelity(pred, t_he)
    out = {
        "teacher": args.teacher,
        "n_train": len(tr),
        "n_eval": len(he),
        "teacher_5x_knn10": knn_agreement(f_he, t_he, 10),
        "teacher_5x_knn10_centered": knn_agreement_centered(f_he, t_he),
        "ridge_5x_centered_cosine": fid["centered_cosine"],
        "ridge_5x_knn10": knn_agreement(pred, t_he, 10),
        "ridge_5x_knn10_centered": knn_agreement_centered(pred, t_he),
        "one_tile_knn10": knn_agreement(o_he, t_he, 10),
        "one_tile_knn10_centered": knn_agreement_centered(o_he, t_he),
    }
    if args.student:
        from edgepath.models.encoder import build_encoder

        trained = resolve(args.student).encoder
        torch.manual_seed(0)  # the trainer seeds with train.seed (0 in distill_fidelity.py)
        init = build_encoder(trained.spec)  # before it builds the student
        out["student"] = {
            name: student_readout(src, stu, tr, he, t_tr, t_he)
            for name, stu in (("init", init), ("trained", trained))
        }
    print(json.dumps(rounded(out)))


def rounded(v):
    """``v`` with every float rounded to 4 decimals, through nested dicts."""
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return round(v, 4) if isinstance(v, float) else v


def student_readout(src, stu, tr, he, t_tr, t_he) -> dict[str, float]:
    """kNN-10 of a student's CLS against the target, and of a ridge read-out of it."""
    stu.eval()
    inp = stu.spec.input

    def cls(items) -> np.ndarray:
        with torch.no_grad():
            x = torch.stack([src.low(it) for it in items])
            return stu.forward_tokens(normalize(x, inp.mean, inp.std)).cls.numpy()

    c_tr, c_he = cls(tr), cls(he)
    pred = ridge_readout(c_tr, t_tr, c_he)
    return {
        "cls_knn10": knn_agreement(c_he, t_he, 10),
        "cls_knn10_centered": knn_agreement_centered(c_he, t_he),
        "ridge_cls_centered_cosine": fidelity(pred, t_he)["centered_cosine"],
        "ridge_cls_knn10_centered": knn_agreement_centered(pred, t_he),
    }


if __name__ == "__main__":
    main()
