"""``xmag``: cross-magnification distillation (XMAG, arXiv:2509.23097).

The teacher embeds the k x k tiles (k = low_mpp / high_mpp, 4 for 2.0 / 0.5) of a region at
high magnification; the student sees the region as one tile at low magnification::

    loss = -cos(head_g(student CLS), mean_j teacher_emb_j)
           + local_weight * mean_j -cos(head_l(mean of cell j's block of student patch tokens),
                                        teacher_emb_j)

with the same photometric augmentation on both views and, with ``views.flip``, the same
rotation or reflection of the region (the teacher's 4x4 grid is transformed as one image, so
each cell keeps facing the student's block of patch tokens that covers it).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from edgepath.distill.calibrate import calibrate_metric, final_norm
from edgepath.distill.data import Item, Source
from edgepath.distill.evaluate import evaluate, knn_only
from edgepath.distill.heads import ProjectionHead
from edgepath.distill.recipe import RecipeCard
from edgepath.distill.recipes.base import Recipe
from edgepath.distill.teachers import Teacher
from edgepath.distill.views import (
    color_jitter,
    dihedral,
    dihedral_cells,
    generator,
    jitter_params,
)
from edgepath.errors import ConfigError


def cell_pool(patches: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, D) row-major patch tokens of a g x g grid -> (B, k², D) means of k x k blocks."""
    b, n, d = patches.shape
    g = int(round(n**0.5))
    if g % k:
        raise ConfigError(f"student patch grid {g}x{g} cannot be split into {k}x{k} cells")
    s = g // k
    x = patches.reshape(b, k, s, k, s, d)
    return x.mean(dim=(2, 4)).reshape(b, k * k, d)


class XmagRecipe(Recipe):
    """Global + local cosine alignment across magnifications."""

    source_kind = "regions"
    views_format = 2  # 2: views.flip applies a dihedral symmetry to both magnifications

    def __init__(self, card: RecipeCard, *, student_dim: int, teachers: list[Teacher]) -> None:
        super().__init__(card, student_dim=student_dim, teachers=teachers)
        lc = card.loss
        d = teachers[0].embed_dim
        self.k = int(round(card.data.low_mpp / card.data.high_mpp))
        self.head_g = ProjectionHead(
            student_dim, d, hidden_dim=lc.proj_hidden_dim, nlayers=lc.proj_layers
        )
        self.head_l = ProjectionHead(
            student_dim, d, hidden_dim=lc.proj_hidden_dim, nlayers=lc.proj_layers
        )
        #: the teacher's mean embedding (zeros unless loss.center_targets)
        self.register_buffer("t_mean", torch.zeros(d))
        #: RMS length of the centred global target (zero unless loss.center_targets)
        self.register_buffer("t_scale", torch.zeros(()))

    def calibrate(self, teachers, source) -> None:
        if self.card.loss.center_targets:
            means = self.teacher_means(teachers, source)
            self.t_mean.copy_(means["emb"])
            self.t_scale.copy_(means["emb.rms"])

    def target_rows(self, feats):
        return {"emb": feats["emb"].mean(1)}

    def views(self, source: Source, index: int, item: Item, view: int, *, teacher: bool = True):
        jit = self.card.views.color_jitter
        seed = self.card.train.seed
        low = source.low(item)
        high = source.high(item) if teacher else None
        if self.card.views.flip:  # the same rotation / reflection of the region on both views
            code = int(torch.randint(8, (1,), generator=generator(seed, "d4", index, view)))
            low = dihedral(low, code)
            high = dihedral_cells(high, code) if high is not None else None
        if jit > 0:  # the same photometric augmentation on both views
            p = jitter_params(jit, generator(seed, "view", index, view))
            low = color_jitter(low, p)
            high = color_jitter(high, p) if high is not None else None
        out = {"student": low[None]}
        if high is not None:
            out["teacher"] = high
        return out

    @torch.no_grad()
    def teacher_features(self, teachers, x):
        b, kk = x.shape[:2]
        _, emb = teachers[0].tokens(x.flatten(0, 1))
        return {"emb": emb.reshape(b, kk, -1)}

    @classmethod
    def student_mpp(cls, card, teacher):
        return card.data.low_mpp  # the student sees the region at low magnification

    def check_student(self, student) -> None:
        if self.card.train.metric_calibration:
            final_norm(student.backbone)  # refused now, not after the last step

    def student_forward(self, student, batch):
        x = batch["student"][:, 0]
        dev = next(student.parameters()).device
        return {"tok": student.forward_tokens(self.student_input(x).to(dev))}

    def loss_terms(self, out, feats, *, step):
        lc = self.card.loss
        tok = out["tok"]
        dev = tok.cls.device
        t = feats["emb"].to(dev) - self.t_mean  # (B, k², D)
        g = -F.cosine_similarity(self.head_g(tok.cls), t.mean(1), dim=-1).mean()
        cells = self.head_l(cell_pool(tok.patches, self.k))
        loc = -F.cosine_similarity(cells, t, dim=-1).mean()
        total = lc.global_weight * g + lc.local_weight * loc
        return total, {"global": float(g.detach()), "local": float(loc.detach())}

    def record_init(self, model, teachers, source):
        if not self.card.train.metric_calibration:
            return {}
        # the same calibration on a copy of the initial model, so that the gain is not all
        # credited to training; its teacher targets are kept for the final calibration
        probe = copy.deepcopy(model)
        _, self._cal_targets = calibrate_metric(probe, teachers, source, self.card, shared=False)
        return {"metric_calibrated": knn_only(evaluate(probe, teachers, source, self.card))}

    def finalize(self, model, teachers, source, *, rank):
        """Beyond the paper, with ``train.metric_calibration``: fit per-channel factors on rank
        0, broadcast them and fold them into every rank's model (one model everywhere)."""
        if not self.card.train.metric_calibration:
            return {}
        before = knn_only(evaluate(model, teachers, source, self.card)) if rank == 0 else {}
        info, _ = calibrate_metric(
            model, teachers, source, self.card, getattr(self, "_cal_targets", None)
        )
        return {"metric_calibration": {**info, "before": before}}

    @torch.no_grad()
    def plain_targets(self, teachers, source, items):
        high = torch.stack([source.high(i) for i in items])
        return self.teacher_features(teachers, high)["emb"].mean(1)

    @torch.no_grad()
    def plain_embedding(self, student, source, items):
        x = torch.stack([source.low(i) for i in items])
        tok = student.forward_tokens(self.student_input(x).to(next(student.parameters()).device))
        return student.pool(tok, student.spec.embedding.definition)

    @torch.no_grad()
    def fold_input_scale(self, a: torch.Tensor) -> None:
        for head in (self.head_g, self.head_l):  # both read student tokens (CLS, pooled patches)
            first = head.mlp[0]
            first.weight.div_(a.to(first.weight)[None, :])

    @torch.no_grad()
    def evaluate_batch(self, student, teachers, source, items):
        x = torch.stack([source.low(i) for i in items])
        high = torch.stack([source.high(i) for i in items])
        feats = self.teacher_features(teachers, high)
        dev = next(student.parameters()).device
        tok = student.forward_tokens(self.student_input(x).to(dev))
        s_emb = student.pool(tok, student.spec.embedding.definition)
        head = self.to_teacher_space(tok)
        return s_emb.float().cpu(), head.float().cpu(), feats["emb"].mean(1).cpu()

    def to_teacher_space(self, tokens):
        return to_teacher_space(self.head_g(tokens.cls), self.t_mean, self.t_scale)


def to_teacher_space(head: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """A head output back in the teacher's embedding space.

    Trained on raw targets (``scale`` 0) the head output is the prediction itself. Trained with
    a cosine on centred targets it is a direction only (the cosine ignores its length), so it
    is given the centred targets' RMS length before the teacher mean is added back; otherwise
    its arbitrary length would decide how far from the mean the prediction lands.
    """
    if float(scale) > 0:
        head = F.normalize(head, dim=-1) * scale
    return head + mean
