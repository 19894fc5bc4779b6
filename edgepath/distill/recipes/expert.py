"""``expert``: several frozen teachers at once, GPFM-style (arXiv:2407.18449).

Per teacher j, projection heads map the student's CLS and patch tokens into teacher j's space;
``loss = sum_j w_j [cls_cos_weight (1 - cos(head_cls_j(CLS), emb_j))
+ patch_weight (0.9 (1 - cos) + 0.1 smooth-L1)(head_patch_j(patches), patches_j resampled)]``,
optionally plus the ``h0mini`` terms against the first teacher.
"""

from __future__ import annotations

import torch
from torch import nn

from edgepath.distill.heads import ProjectionHead
from edgepath.distill.losses import FeatureAlignLoss
from edgepath.distill.recipe import RecipeCard
from edgepath.distill.recipes.base import Recipe
from edgepath.distill.recipes.xmag import to_teacher_space
from edgepath.distill.teachers import Teacher, resample_grid


class ExpertRecipe(Recipe):
    """Multi-teacher feature distillation with per-teacher heads."""

    def __init__(self, card: RecipeCard, *, student_dim: int, teachers: list[Teacher]) -> None:
        super().__init__(card, student_dim=student_dim, teachers=teachers)
        lc = card.loss
        kw = dict(hidden_dim=lc.proj_hidden_dim, nlayers=lc.proj_layers)
        self.cls_heads = nn.ModuleList(
            ProjectionHead(student_dim, t.embed_dim, **kw) for t in teachers
        )
        self.patch_heads = nn.ModuleList(
            ProjectionHead(student_dim, t.token_dim, **kw) for t in teachers
        )
        self.weights = [t.weight for t in teachers]
        # teacher mean embedding / patch token (zeros unless loss.center_targets)
        for j, t in enumerate(teachers):
            self.register_buffer(f"emb_mean{j}", torch.zeros(t.embed_dim))
            self.register_buffer(f"patch_mean{j}", torch.zeros(t.token_dim))
            self.register_buffer(f"emb_scale{j}", torch.zeros(()))
        self.cls_loss = FeatureAlignLoss(cos_weight=1.0)
        self.patch_loss = FeatureAlignLoss(
            cos_weight=lc.patch_cos_weight, smooth_l1_weight=lc.patch_smooth_l1_weight
        )
        self.h0mini = None
        if lc.with_h0mini:
            from edgepath.distill.recipes.h0mini import H0MiniRecipe

            self.h0mini = H0MiniRecipe(card, student_dim=student_dim, teachers=teachers[:1])

    def calibrate(self, teachers, source) -> None:
        if self.card.loss.center_targets:
            means = self.teacher_means(teachers, source)
            for j in range(len(teachers)):
                getattr(self, f"emb_mean{j}").copy_(means[f"emb{j}"])
                getattr(self, f"patch_mean{j}").copy_(means[f"patches{j}"])
                getattr(self, f"emb_scale{j}").copy_(means[f"emb{j}.rms"])
        if self.h0mini is not None:
            self.h0mini.calibrate(teachers[:1], source)

    def student_extra(self, source, item, *, step, slot):
        if self.h0mini is None:
            return {}
        return self.h0mini.student_extra(source, item, step=step, slot=slot)

    def target_rows(self, feats):
        return {k: v.flatten(0, 1) for k, v in feats.items() if k.startswith("emb")}

    @torch.no_grad()
    def teacher_features(self, teachers, x):
        b, g = x.shape[:2]
        out = {}
        for j, t in enumerate(teachers):
            tok, emb = t.tokens(x.flatten(0, 1))
            out[f"emb{j}"] = emb.reshape(b, g, -1)
            out[f"patches{j}"] = tok.patches.reshape(b, g, *tok.patches.shape[1:])
            if j == 0 and self.h0mini is not None:
                out["cls0"] = tok.cls.reshape(b, g, -1)
        return out

    @classmethod
    def dynamic_img_size(cls, card):
        from edgepath.distill.recipes.h0mini import H0MiniRecipe

        return card.loss.with_h0mini and H0MiniRecipe.dynamic_img_size(card)

    def student_forward(self, student, batch):
        if self.h0mini is not None:  # the same global crops: one student pass for both
            return self.h0mini.student_forward(student, batch)
        x = batch["student"]
        dev = next(student.parameters()).device
        return {"tok": student.forward_tokens(self.student_input(x.flatten(0, 1)).to(dev))}

    def loss_terms(self, out, feats, *, step):
        lc = self.card.loss
        tok = out["tok"]
        dev = tok.cls.device
        total = tok.cls.new_zeros(())
        logs: dict[str, float] = {}
        for j, w in enumerate(self.weights):
            emb = feats[f"emb{j}"].to(dev).flatten(0, 1) - getattr(self, f"emb_mean{j}")
            tp = resample_grid(feats[f"patches{j}"].to(dev).flatten(0, 1), tok.grid)
            tp = tp - getattr(self, f"patch_mean{j}")
            c = self.cls_loss(self.cls_heads[j](tok.cls), emb)
            p = self.patch_loss(self.patch_heads[j](tok.patches), tp)
            total = total + w * (lc.cls_cos_weight * c + lc.patch_weight * p)
            logs[f"cls{j}"], logs[f"patch{j}"] = float(c.detach()), float(p.detach())
        if self.h0mini is not None:
            sub = {"cls": feats["cls0"], "patches": feats["patches0"], "emb": feats["emb0"]}
            h, hl = self.h0mini.loss_terms(out, sub, step=step)
            total = total + h
            logs.update({f"h0mini_{k}": v for k, v in hl.items()})
        return total, logs

    def to_teacher_space(self, tokens):
        return self.in_teacher_space(0, tokens.cls)

    def in_teacher_space(self, j: int, cls: torch.Tensor) -> torch.Tensor:
        """Teacher j's CLS head output back in its embedding space (see xmag.to_teacher_space)."""
        h = self.cls_heads[j](cls)
        return to_teacher_space(h, getattr(self, f"emb_mean{j}"), getattr(self, f"emb_scale{j}"))

    @torch.no_grad()
    def evaluate_all(self, student, teachers, source, items):
        """Per-teacher (student head output, teacher embedding) on held-out items."""
        x = torch.stack([source.tile(i) for i in items])
        dev = next(student.parameters()).device
        tok = student.forward_tokens(self.student_input(x).to(dev))
        return [
            (
                self.in_teacher_space(j, tok.cls).float().cpu(),
                t.tokens(x)[1].cpu(),
            )
            for j, t in enumerate(teachers)
        ]
