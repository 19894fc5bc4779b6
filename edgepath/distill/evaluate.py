"""Held-out fidelity (student vs teacher) and the student artifact a distillation run writes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgepath.distill.data import Source, spread
from edgepath.distill.recipe import RecipeCard, to_toml

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(step_mod: nn.Module, teachers, source: Source, card: RecipeCard) -> dict[str, Any]:
    """Held-out fidelity: student head output vs teacher embedding (cosine, centered cosine),
    kNN-10 agreement of the student's own embedding with the teacher's."""
    from edgepath.metrics import fidelity, knn_agreement

    items = heldout_subset(source.heldout, card.train.eval_tiles)
    if len(items) < 2:
        log.warning("only %d held-out tiles: no fidelity measured", len(items))
        return {"n_tiles": len(items)}
    was = step_mod.training
    step_mod.eval()
    s_emb, s_head, t_emb = [], [], []
    for a in range(0, len(items), 32):
        e, h, t = step_mod.recipe.evaluate_batch(
            step_mod.student, teachers, source, items[a : a + 32]
        )
        s_emb.append(e)
        s_head.append(h)
        t_emb.append(t)
    step_mod.train(was)
    se, sh, te = (torch.cat(x).numpy() for x in (s_emb, s_head, t_emb))
    fid = fidelity(sh, te)
    out = {
        "cosine": fid["cosine"],
        "centered_cosine": fid["centered_cosine"],
        "knn10_agreement": knn_agreement(se, te, 10) if len(se) > 10 else None,
        "head_knn10_agreement": fid.get("knn10_agreement"),
        "knn10_agreement_centered": _knn_centered(se, te),
        "head_knn10_agreement_centered": _knn_centered(sh, te),
        "n_tiles": len(items),
        "against": f"teacher {teachers[0].card.name}",
    }
    if hasattr(step_mod.recipe, "evaluate_all") and len(teachers) > 1:
        per = []
        x = step_mod.recipe
        pairs = []
        for a in range(0, len(items), 32):
            pairs.append(x.evaluate_all(step_mod.student, teachers, source, items[a : a + 32]))
        for j, t in enumerate(teachers):
            h = torch.cat([p[j][0] for p in pairs]).numpy()
            tt = torch.cat([p[j][1] for p in pairs]).numpy()
            f = fidelity(h, tt)
            per.append(
                {
                    "teacher": t.card.name,
                    "cosine": f["cosine"],
                    "centered_cosine": f["centered_cosine"],
                    "knn10_agreement": knn_agreement(se, tt, 10) if len(se) > 10 else None,
                }
            )
        out["per_teacher"] = per
    return out


def knn_only(fid: dict[str, Any]) -> dict[str, Any]:
    """The two kNN-10 agreements of a fidelity record."""
    return {k: fid.get(k) for k in ("knn10_agreement", "knn10_agreement_centered")}


def heldout_subset(items: list, n: int) -> list:
    """``n`` held-out items spread evenly over the list (all when ``n`` covers it).

    The held-out list is ordered slide by slide, row by row: its first ``n`` items would be one
    slide's top rows of overlapping boxes, whose nearest neighbours are mostly their overlapping
    neighbours for any two models, which inflates kNN agreement and hides the other slides.
    """
    if n <= 0:
        return list(items)
    return [items[i] for i in spread(len(items), n)]


def _knn_centered(a, b, k: int = 10) -> float | None:
    """:func:`edgepath.metrics.knn_agreement_centered`, None when there are too few tiles."""
    from edgepath.metrics import knn_agreement_centered

    if len(a) <= k:
        return None
    return knn_agreement_centered(a, b, k)


def write_student(
    out: Path,
    card: RecipeCard,
    ema: nn.Module,
    spec,
    teachers,
    source: Source,
    init_fid,
    *,
    seconds: float,
    world: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the final model and write the student artifact; ``extra``: more manifest
    entries (what the recipe's finalisation recorded)."""
    from safetensors.torch import save_file

    from edgepath.cards import to_dict
    from edgepath.io import atomic_path, write_text_atomic
    from edgepath.models.artifact import save_encoder
    from edgepath.models.encoder import Encoder

    fid = evaluate(ema, teachers, source, card)
    heads = {k: v.detach().contiguous().cpu() for k, v in ema.recipe.state_dict().items()}
    with atomic_path(out / "heads.safetensors", suffix=".safetensors") as tmp:
        save_file(heads, str(tmp))
    write_text_atomic(out / "recipe.toml", to_toml(card))
    t0 = teachers[0]
    teacher_info = [
        {
            "card": t.card.name,
            "sha256": t.model.sha256,
            "stand_in": bool(t.card.stand_in),
            "weight": t.weight,
            "embedding": to_dict(t.card.embedding),
        }
        for t in teachers
    ]
    student = Encoder(ema.student.backbone, spec)
    return save_encoder(
        out,
        student,
        kind="student",
        name=f"{card.name}-{card.student.name}",
        files={"heads": "heads.safetensors", "recipe": "recipe.toml"},
        architecture=card.student.name,
        mpp=spec.input.mpp,
        tile_px=spec.input.tile_px,
        embedding_definition=(
            f"student {spec.embedding.definition} ({spec.embedding.dim}-d); "
            f"heads.safetensors maps it into {t0.card.name}'s "
            f"{t0.card.embedding.definition} embedding ({t0.embed_dim}-d)"
        ),
        teacher=teacher_info[0],
        teachers=teacher_info,
        parent={"path": f"teacher:{t0.card.name}", "sha256": t0.model.sha256},
        recipe=card.recipe,
        recipe_card=to_dict(card),
        steps=card.train.steps,
        world_size=world,
        train_items=len(source.train),
        seconds=round(seconds, 1),
        stand_in=any(t.card.stand_in for t in teachers),
        fidelity=fid,
        fidelity_init=init_fid,
        **(extra or {}),
    )
