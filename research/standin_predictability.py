"""How much of a stand-in teacher an untrained student already knows (distillation test design).

A stand-in teacher is only a fair test of distillation if a student has to *learn* it. This
script fits a ridge read-out from a random-weight student's embedding to each stand-in teacher's
embedding on training tiles and reports, on held-out tiles, the centred cosine and kNN-10
agreement that read-out reaches without any training; and, for reference, the kNN-10 agreement
of a prediction that has a given centred cosine with the teacher (isotropic noise added to the
centred teacher embedding), i.e. how faithful a student must be for its neighbourhoods to agree::

    python research/standin_predictability.py --slides runs/slides
    python research/standin_predictability.py --slides runs/slides --teachers histo-teacher \
        --train-steps 1000      # plus: plain feature regression, the ceiling a short run can reach

``--train-steps N`` also trains the student directly on each teacher's centred embedding (one
process, linear head, 1 - cos, AdamW lr 1e-3, batch 16, warm-up 15 steps then cosine, flips) and
prints held-out centred cosine and kNN-10 agreement every 50 steps: what the bare regression
reaches in N steps, without a recipe's views, patch terms or heads. ``--raw-student-input``
feeds that student raw [0, 1] RGB instead of standardised tiles (what a student inherited from
a teacher card with mean 0 / std 1).

Tiles: the distillation data split (``data.holdout`` 0.3, non-overlapping 0.5 mpp tiles), an
even spread of 256 training and 256 held-out tiles.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import torch

from edgepath.distill.data import build_source, spread
from edgepath.distill.views import normalize, resize
from edgepath.metrics import fidelity, knn_agreement
from edgepath.models import resolve

try:
    from research._helpers import ridge_readout
except ModuleNotFoundError:  # run as a file: research/ itself is on sys.path
    from _helpers import ridge_readout  # type: ignore[no-redef]


def embed(name: str, x: torch.Tensor) -> np.ndarray:
    """Card embedding of [0, 1] tiles with the card's own preprocessing."""
    enc = resolve(name).encoder
    enc.eval()
    inp = enc.spec.input
    out = []
    with torch.no_grad():
        for a in range(0, len(x), 32):
            out.append(enc(normalize(resize(x[a : a + 32], inp.tile_px), inp.mean, inp.std)))
    return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", required=True)
    ap.add_argument("--student", default="vit-mini14")
    ap.add_argument(
        "--teachers", nargs="*", default=["histo-teacher", "tiny-teacher", "small-teacher"]
    )
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--train-steps", type=int, default=0, help="also train by plain regression")
    ap.add_argument("--raw-student-input", action="store_true", help="regress on [0, 1] RGB")
    args = ap.parse_args()
    data = SimpleNamespace(
        tile_px=224, stride=1.0, eval_stride=1.0, holdout=0.3, min_tissue=0.5, max_items=0
    )
    src = build_source("tiles", slides=args.slides, tiles=None, data=data, mpp=0.5)
    tr = [src.train[i] for i in spread(len(src.train), args.n)]
    he = [src.heldout[i] for i in spread(len(src.heldout), args.n)]
    xt = torch.stack([src.tile(i) for i in tr])
    xh = torch.stack([src.tile(i) for i in he])
    s_t, s_h = embed(args.student, xt), embed(args.student, xh)
    rng = np.random.default_rng(0)
    for name in args.teachers:
        t_t, t_h = embed(name, xt), embed(name, xh)
        pred = ridge_readout(s_t, t_t, s_h)
        tc = t_h - t_h.mean(0)
        ev = np.linalg.svd(tc, compute_uv=False) ** 2
        ev /= ev.sum()
        curve = {}
        for c in (0.6, 0.8, 0.9, 0.95, 0.98):
            noise = rng.standard_normal(tc.shape)
            noise *= np.linalg.norm(tc, axis=1, keepdims=True) / np.linalg.norm(
                noise, axis=1, keepdims=True
            )
            p = tc + np.sqrt(1 / c**2 - 1) * noise + t_h.mean(0)
            curve[f"{c:.2f}"] = round(knn_agreement(p, t_h, 10), 3)
        row = {
            "teacher": name,
            **self_agreement(name, xh, t_h),
            "student": f"{args.student} (random weights)",
            "effective_dim": round(float(1 / np.sum(ev**2)), 2),
            "random_student_knn10": round(knn_agreement(s_h, t_h, 10), 3),
            "ridge_centered_cosine": round(fidelity(pred, t_h)["centered_cosine"], 3),
            "ridge_knn10": round(knn_agreement(pred, t_h, 10), 3),
            "knn10_at_centered_cosine": curve,
            "n_train": len(tr),
            "n_heldout": len(he),
        }
        print(json.dumps(row), flush=True)
        if args.train_steps:
            regress(args.student, xt, xh, t_t, t_h, args.train_steps, raw=args.raw_student_input)


def self_agreement(name: str, xh: torch.Tensor, t_h: np.ndarray) -> dict[str, float]:
    """kNN-10 of the teacher with itself on slightly different views of the same tiles.

    The scale for every other number: a student cannot agree with the teacher's neighbourhoods
    better than the teacher agrees with itself when the tile is mirrored or moved by 8 px
    (208 px crops at offsets 0 and 8, about 7 % new content, both resized back to the tile size).
    """
    a = embed(name, xh[..., :208, :208])  # embed() resizes to the card's tile size
    b = embed(name, xh[..., 8:216, 8:216])
    return {
        "self_knn10_flip": round(knn_agreement(embed(name, xh.flip(-1)), t_h, 10), 3),
        "self_knn10_shift8": round(knn_agreement(a, b, 10), 3),
        "self_centered_cosine_shift8": round(fidelity(a, b)["centered_cosine"], 3),
    }


def regress(
    student: str, xt, xh, t_t: np.ndarray, t_h: np.ndarray, steps: int, *, raw: bool = False
) -> None:
    """Train ``student`` + a linear head on the centred teacher embedding; print held-out fit."""
    torch.manual_seed(0)
    enc = resolve(student).encoder
    inp = enc.spec.input
    if raw:
        inp = SimpleNamespace(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    tt = torch.from_numpy(t_t)
    mu = tt.mean(0)
    head = torch.nn.Linear(enc.embed_dim, tt.shape[1])
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.04)
    for step in range(1, steps + 1):
        enc.train()
        idx = torch.randint(0, len(xt), (16,))
        x = xt[idx].flip(-1) if step % 2 else xt[idx]
        pred = head(enc(normalize(x, inp.mean, inp.std)))
        loss = 1 - torch.nn.functional.cosine_similarity(pred, tt[idx] - mu).mean()
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, step / 15) * 0.5 * (1 + np.cos(np.pi * (step - 1) / steps))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps:
            enc.eval()
            with torch.no_grad():
                e = torch.cat(
                    [
                        enc(normalize(xh[a : a + 32], inp.mean, inp.std))
                        for a in range(0, len(xh), 32)
                    ]
                )
                p = head(e)
            cc = fidelity((p + mu).numpy(), t_h, center=mu.numpy())["centered_cosine"]
            row = {
                "step": step,
                "train_loss": round(float(loss.detach()), 4),
                "heldout_centered_cosine": round(cc, 3),
                "knn10_student": round(knn_agreement(e.numpy(), t_h, 10), 3),
                "knn10_head": round(knn_agreement((p + mu).numpy(), t_h, 10), 3),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
