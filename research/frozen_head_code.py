"""How much of a teacher's neighbourhoods the ``h0mini`` frozen-head targets carry, per temperature.

Without released DINO/iBOT heads, ``h0mini``'s targets are ``softmax(FrozenPrototypeHead(x) / T)``:
a soft code of the teacher token over fixed random unit directions. A student trained on them can
learn at most what the code keeps of the teacher's geometry. This script measures it on the
held-out tiles of ``research/distill_fidelity.py --recipes h0mini`` (256 tiles spread over the
bottom 30 % of each slide, the teacher's mpp, stride 1): kNN-10 agreement between the codes (Hellinger
geometry) and the teacher's CLS tokens (centred on the head's mean, as the head sees them) and
patch tokens (4 per tile), and the code's effective width (exp of its entropy), for each
temperature::

    python research/frozen_head_code.py --slides runs/slides --teacher histo-teacher

With a real teacher (``--teacher h-optimus-0``, weights from the Hugging Face cache) it tells
which ``loss.frozen_head_temp`` keeps its neighbourhoods. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from edgepath.distill.data import build_source, spread
from edgepath.distill.heads import FrozenPrototypeHead
from edgepath.distill.recipe import load_recipe
from edgepath.distill.teachers import load_teachers

try:
    from research._helpers import code_knn_agreement
except ModuleNotFoundError:  # run as a file: research/ itself is on sys.path
    from _helpers import code_knn_agreement  # type: ignore[no-redef]

#: The held-out split of ``research/distill_fidelity.py --recipes h0mini``.
HELD_OUT = ["data.holdout=0.3", "data.stride=1.0", "data.eval_stride=1.0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", required=True)
    ap.add_argument("--teacher", default="histo-teacher")
    ap.add_argument("--prototypes", type=int, default=2048, help="loss.dino_out_dim")
    ap.add_argument("--temps", default="0.04,0.07,0.15,0.3,0.5,1.0")
    ap.add_argument("--n-eval", type=int, default=256)
    args = ap.parse_args()
    # the data section of the distill_fidelity h0mini runs, read at the teacher's mpp like the trainer
    card = load_recipe("h0mini", [f'teachers=[{{card="{args.teacher}"}}]', *HELD_OUT])
    teacher = load_teachers(card.teachers)[0]
    mpp = card.data.mpp or teacher.card.input.mpp
    src = build_source("tiles", slides=args.slides, tiles=None, data=card.data, mpp=mpp)

    def tokens(items) -> tuple[torch.Tensor, torch.Tensor]:
        cls, patches = [], []
        for a in range(0, len(items), 32):
            tok, _ = teacher.tokens(torch.stack([src.tile(i) for i in items[a : a + 32]]))
            cls.append(tok.cls)
            n = tok.patches.shape[1]
            patches.append(tok.patches[:, [n // 5, 2 * n // 5, 3 * n // 5, 4 * n // 5]])
        return torch.cat(cls), torch.cat(patches).flatten(0, 1)

    cal_cls, cal_patch = tokens([src.train[i] for i in spread(len(src.train), 64)])
    cls, patch = tokens([src.heldout[i] for i in spread(len(src.heldout), args.n_eval)])
    out = {"teacher": args.teacher, "prototypes": args.prototypes, "n_eval": len(cls), "temps": {}}
    for name, x, cal, seed in (("cls", cls, cal_cls, 1), ("patch", patch, cal_patch, 2)):
        head = FrozenPrototypeHead(x.shape[1], args.prototypes, seed=seed)
        head.mu.copy_(cal.mean(0))
        for t in (float(s) for s in args.temps.split(",")):
            p = F.softmax(head(x) / t, dim=-1)
            width = float(torch.exp(-(p * p.clamp_min(1e-30).log()).sum(-1)).mean())
            row = out["temps"].setdefault(str(t), {})
            row[f"{name}_knn10"] = round(code_knn_agreement(x, head, t), 4)
            row[f"{name}_width"] = round(width, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
