"""What every recipe provides: teacher views and features (cacheable), student loss, evaluation."""

from __future__ import annotations

import torch
from torch import nn

from edgepath.distill.data import Item, Source, spread
from edgepath.distill.recipe import RecipeCard
from edgepath.distill.teachers import Teacher
from edgepath.distill.views import generator, global_crops
from edgepath.models.cards import TeacherCard
from edgepath.models.encoder import Tokens
from edgepath.models.preprocess import standardize


class Recipe(nn.Module):
    """A recipe: trainable heads and loss state (buffers), plus the view and feature logic.

    Teacher views are a function of (seed, item index, view index) only, so
    ``teacher_features`` can be computed once per (item, view) and cached. ``loss`` gets the
    student's inputs and those features and returns the total loss and its terms.
    """

    #: Data the recipe reads: ``tiles`` or ``regions``.
    source_kind = "tiles"
    #: Version of ``views``: bumped when the same card gives different teacher views, so that
    #: feature caches written by the older code are rebuilt, not reused.
    views_format = 1

    def __init__(self, card: RecipeCard, *, student_dim: int, teachers: list[Teacher]) -> None:
        super().__init__()
        self.card = card
        self.student_dim = student_dim
        self.mean = teachers[0].card.input.mean
        self.std = teachers[0].card.input.std

    # -- what the trainer asks before it builds anything ------------------------------------
    @classmethod
    def student_mpp(cls, card: RecipeCard, teacher: TeacherCard) -> float:
        """The mpp the student reads (and is deployed at): ``data.mpp``, else the teacher's."""
        return card.data.mpp or teacher.input.mpp

    @classmethod
    def dynamic_img_size(cls, card: RecipeCard) -> bool:
        """Whether the training student sees inputs of another size than its tile (local
        crops); the artifact is always written at its tile size."""
        return False

    def check_student(self, student) -> None:
        """Refuse a student the recipe cannot finish with, before any training (default: any
        student will do)."""

    # -- views ------------------------------------------------------------------------------
    def views(
        self, source: Source, index: int, item: Item, view: int, *, teacher: bool = True
    ) -> dict[str, torch.Tensor]:
        """Deterministic views of one item: ``teacher`` input (if asked) and ``student`` input."""
        v = self.card.views
        g = generator(self.card.train.seed, "view", index, view)
        crops = global_crops(
            source.tile(item),
            n=v.global_crops,
            px=self.card.data.tile_px,
            scale=v.global_scale,
            flip=v.flip,
            jitter=v.color_jitter,
            g=g,
        )
        return {"teacher": crops, "student": crops}

    def student_extra(
        self, source: Source, item: Item, *, step: int, slot: int
    ) -> dict[str, torch.Tensor]:
        """Student-only views that the teacher never sees (seeded by step and batch slot)."""
        return {}

    def student_input(self, x: torch.Tensor) -> torch.Tensor:
        """float [0, 1] NCHW -> the student's normalised input (the teacher's mean/std)."""
        return standardize(x, self.mean, self.std)

    # -- teacher ----------------------------------------------------------------------------
    def calibrate(self, teachers: list[Teacher], source: Source) -> None:
        """Fix any statistics of the teacher side before training (default: none)."""

    @torch.no_grad()
    def teacher_means(
        self, teachers: list[Teacher], source: Source, *, n_items: int = 64
    ) -> dict[str, torch.Tensor]:
        """Mean of every teacher feature over ``n_items`` training items (view 0) spread evenly
        over the training set, and ``"<key>.rms"``: the RMS length of each centred target row
        that ``target_rows`` names (the scale a scale-free cosine head output is given back).

        Deterministic and rounded like the cache, so cached, live and resumed runs agree. The
        items are spread over the whole (slide-by-slide, row-by-row) list: its first items would
        all come from one slide's top rows and bias the mean.
        """
        from edgepath.distill.cache import CACHE_DTYPE, as_stored

        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        sq: dict[str, torch.Tensor] = {}
        rows: dict[str, int] = {}
        picks = spread(len(source.train), n_items)
        for a in range(0, len(picks), 16):
            idx = picks[a : a + 16]
            x = torch.stack([self.views(source, i, source.train[i], 0)["teacher"] for i in idx])
            feats = as_stored(self.teacher_features(teachers, x), CACHE_DTYPE)
            for k, v in feats.items():
                flat = v.reshape(-1, v.shape[-1]).double()
                sums[k] = sums.get(k, 0) + flat.sum(0)
                counts[k] = counts.get(k, 0) + flat.shape[0]
            for k, r in self.target_rows(feats).items():
                sq[k] = sq.get(k, 0) + r.double().pow(2).sum()
                rows[k] = rows.get(k, 0) + r.shape[0]
        out = {k: (sums[k] / counts[k]).float() for k in sums}
        for k in sq:  # E|r - mu|^2 = E|r|^2 - |mu|^2 (E r = mu: every row averages k's rows)
            var = sq[k] / rows[k] - (sums[k] / counts[k]).pow(2).sum()
            out[f"{k}.rms"] = var.clamp(min=0).sqrt().float()
        return out

    def target_rows(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The embedding targets a head predicts, as (N, D) rows per feature (default: none)."""
        return {}

    def teacher_features(self, teachers: list[Teacher], x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher outputs for a batch of teacher views (B, ...) -> {name: (B, ...)}."""
        raise NotImplementedError

    # -- student ----------------------------------------------------------------------------
    def student_forward(self, student, batch: dict[str, torch.Tensor]) -> dict[str, Tokens]:
        """The student's tokens of every input of the micro-batch (the only student pass)."""
        raise NotImplementedError

    def loss_terms(
        self, out: dict[str, Tokens], feats: dict[str, torch.Tensor], *, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its terms from the student's tokens and the teacher's features."""
        raise NotImplementedError

    def loss(
        self,
        student,
        batch: dict[str, torch.Tensor],
        feats: dict[str, torch.Tensor],
        *,
        step: int,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its terms for one micro-batch."""
        return self.loss_terms(self.student_forward(student, batch), feats, step=step)

    # -- before and after training ----------------------------------------------------------
    def record_init(self, model, teachers: list[Teacher], source: Source) -> dict:
        """Extra entries of the manifest's ``fidelity_init`` (rank 0, at step 0; default none)."""
        return {}

    def finalize(self, model, teachers: list[Teacher], source: Source, *, rank: int) -> dict:
        """Work on the final (EMA) model after the last step, on every rank; returns extra
        manifest entries (default: nothing to do)."""
        return {}

    def plain_targets(self, teachers: list[Teacher], source: Source, items: list[Item]):
        """The teacher's embedding target of un-augmented items (metric calibration)."""
        raise NotImplementedError(f"{type(self).__name__} has no metric calibration")

    def plain_embedding(self, student, source: Source, items: list[Item]) -> torch.Tensor:
        """The student's embedding of un-augmented items (metric calibration)."""
        raise NotImplementedError(f"{type(self).__name__} has no metric calibration")

    def fold_input_scale(self, a: torch.Tensor) -> None:
        """The student's output tokens were scaled by ``a`` per channel: divide it out of the
        heads that read them, so that they compute what they did."""
        raise NotImplementedError(f"{type(self).__name__} has no metric calibration")

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_batch(
        self, student, teachers: list[Teacher], source: Source, items: list[Item]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Held-out items -> (student embedding, student head output in teacher space, teacher
        embedding), no augmentation."""
        x = torch.stack([source.tile(i) for i in items])
        _, t_emb = teachers[0].tokens(x)
        s_tok = student.forward_tokens(self.student_input(x).to(_device(student)))
        s_emb = student.pool(s_tok, student.spec.embedding.definition)
        return s_emb.float().cpu(), self.to_teacher_space(s_tok).float().cpu(), t_emb.cpu()

    def to_teacher_space(self, tokens) -> torch.Tensor:
        """The student's prediction of the (first) teacher's embedding."""
        raise NotImplementedError


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
