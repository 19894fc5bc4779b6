"""``h0mini``: DINOv2-style distillation from a frozen teacher (DINO + iBOT + KoLeo, no masking).

As for H0-mini (arXiv:2501.16239): teacher and student see the same global crops; the DINO loss
compares the student's CLS head with the teacher's on each global crop (and every student local
crop with every teacher global crop, DINOv2's multi-crop); the iBOT loss compares all patch
tokens (no masking) through patch heads; KoLeo spreads the student's global CLS tokens.
"""

from __future__ import annotations

import torch

from edgepath.distill.data import spread
from edgepath.distill.heads import DINOHead, FrozenPrototypeHead, ProjectionHead
from edgepath.distill.losses import DINOLoss, FeatureAlignLoss, IBOTPatchLoss, KoLeoLoss
from edgepath.distill.recipe import RecipeCard
from edgepath.distill.recipes.base import Recipe
from edgepath.distill.teachers import Teacher, resample_grid
from edgepath.distill.views import (
    color_jitter,
    flips,
    generator,
    jitter_params,
    random_resized_crop,
)
from edgepath.errors import ConfigError


def teacher_heads(card: RecipeCard, teacher: Teacher) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The teacher-side DINO and iBOT heads: released ones if given, else frozen prototypes."""
    loss = card.loss
    ref = card.teachers[0]
    dim = teacher.token_dim
    if ref.heads:
        from safetensors.torch import load_file

        state = load_file(ref.heads)
        heads = []
        for prefix, out in (("dino.", loss.dino_out_dim), ("ibot.", loss.ibot_out_dim)):
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not sub:
                raise ConfigError(f"{ref.heads}: no '{prefix}*' keys; expected DINOHead weights")
            h = DINOHead(
                dim,
                out,
                hidden_dim=loss.head_hidden_dim,
                bottleneck_dim=loss.head_bottleneck_dim,
                nlayers=loss.head_layers,
            )
            try:
                h.load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                raise ConfigError(
                    f"{ref.heads}: heads do not match the recipe's loss.head_* "
                    f"sizes ({str(exc).splitlines()[0]})"
                ) from None
            for p in h.parameters():
                p.requires_grad_(False)
            heads.append(h.eval())
        return heads[0], heads[1]
    seed = card.train.seed
    return (
        FrozenPrototypeHead(dim, loss.dino_out_dim, seed=seed + 1),
        FrozenPrototypeHead(dim, loss.ibot_out_dim, seed=seed + 2),
    )


class H0MiniRecipe(Recipe):
    """DINO on CLS + iBOT on patch tokens + KoLeo, against one frozen teacher."""

    def __init__(self, card: RecipeCard, *, student_dim: int, teachers: list[Teacher]) -> None:
        super().__init__(card, student_dim=student_dim, teachers=teachers)
        loss = card.loss
        kw = dict(
            hidden_dim=loss.head_hidden_dim,
            bottleneck_dim=loss.head_bottleneck_dim,
            nlayers=loss.head_layers,
        )
        self.dino_head = DINOHead(student_dim, loss.dino_out_dim, **kw)
        self.ibot_head = DINOHead(student_dim, loss.ibot_out_dim, **kw)
        t_dino, t_ibot = teacher_heads(card, teachers[0])
        # frozen teacher heads are kept outside the state dict (no grad, not checkpointed)
        self.__dict__["t_dino"] = t_dino.to(_dev(teachers[0]))
        self.__dict__["t_ibot"] = t_ibot.to(_dev(teachers[0]))
        self.dino_loss = DINOLoss(loss.dino_out_dim, student_temp=loss.student_temp)
        self.ibot_loss = IBOTPatchLoss(loss.ibot_out_dim, student_temp=loss.student_temp)
        self.koleo = KoLeoLoss()
        # linear read-out into the teacher's embedding space, trained on the detached student
        # CLS: only measures (held-out fidelity in teacher space), never shapes the student.
        self.readout = ProjectionHead(student_dim, teachers[0].embed_dim, nlayers=1)
        self.align = FeatureAlignLoss()

    @torch.no_grad()
    def calibrate(self, teachers, source, *, n_items: int = 64) -> None:
        """Centre the frozen prototype heads on the teacher's mean CLS and patch token.

        Teacher tokens share a large common direction (any two tiles have a high raw cosine);
        subtracting the mean over ``n_items`` training tiles spread over the set (view 0, deterministic,
        so cached, live and resumed runs agree) makes the random-prototype code describe what
        is specific to each tile. Released heads are left as they are.
        """
        if not isinstance(self.t_dino, FrozenPrototypeHead):
            return
        from edgepath.distill.cache import CACHE_DTYPE, as_stored

        items = spread(len(source.train), n_items)  # over all slides, not one slide's top rows
        cls_sum, patch_sum, n, n_tok = 0.0, 0.0, 0, 0
        for a in range(0, len(items), 16):
            idx = items[a : a + 16]
            x = torch.stack([self.views(source, i, source.train[i], 0)["teacher"] for i in idx])
            f = as_stored(self.teacher_features(teachers, x), CACHE_DTYPE)
            cls_sum = cls_sum + f["cls"].flatten(0, 1).double().sum(0)
            patch_sum = patch_sum + f["patches"].flatten(0, 2).double().sum(0)
            n += f["cls"].shape[0] * f["cls"].shape[1]
            n_tok += f["patches"].shape[0] * f["patches"].shape[1] * f["patches"].shape[2]
        self.t_dino.mu.copy_((cls_sum / n).float())
        self.t_ibot.mu.copy_((patch_sum / n_tok).float())

    def student_extra(self, source, item, *, step, slot):
        if self.card.views.local_crops <= 0:
            return {}
        return {"local": self.local_crops(source.tile(item), step=step, slot=slot)}

    def local_crops(self, x: torch.Tensor, *, step: int, slot: int) -> torch.Tensor:
        """Student-only local crops of the tile, seeded by (step, slot) (DINOv2 multi-crop)."""
        v = self.card.views
        g = generator(self.card.train.seed, "local", step, slot)
        out = []
        for _ in range(v.local_crops):
            c = random_resized_crop(x, v.local_px, v.local_scale, g)
            if v.flip:
                c = flips(c, g)
            if v.color_jitter > 0:
                c = color_jitter(c, jitter_params(v.color_jitter, g))
            out.append(c)
        return torch.stack(out)

    @torch.no_grad()
    def teacher_features(self, teachers, x):
        b, g = x.shape[:2]
        tok, emb = teachers[0].tokens(x.flatten(0, 1))
        return {
            "cls": tok.cls.reshape(b, g, -1),
            "patches": tok.patches.reshape(b, g, *tok.patches.shape[1:]),
            "emb": emb.reshape(b, g, -1),
        }

    def teacher_temp(self, step: int) -> float:
        """Teacher temperature at ``step``.

        Released heads: DINOv2's linear warmup (0.04 -> 0.07). Frozen random-prototype heads:
        the constant ``loss.frozen_head_temp`` (they have nothing to warm up, and DINO's
        temperatures would reduce their code to the nearest one or two random directions).
        """
        loss = self.card.loss
        if isinstance(self.t_dino, FrozenPrototypeHead):
            return loss.frozen_head_temp
        if step >= loss.teacher_temp_warmup_steps:
            return loss.teacher_temp
        f = step / max(loss.teacher_temp_warmup_steps, 1)
        return loss.teacher_temp_start + f * (loss.teacher_temp - loss.teacher_temp_start)

    @classmethod
    def dynamic_img_size(cls, card):
        return card.views.local_crops > 0  # local crops are smaller than the tile

    def student_forward(self, student, batch):
        """Tokens of the global crops (``tok``) and, with local crops, of those (``local``)."""
        dev = _dev_mod(student)
        x = batch["student"]  # (B, G, 3, H, W)
        out = {"tok": student.forward_tokens(self.student_input(x.flatten(0, 1)).to(dev))}
        if "local" in batch and self.card.loss.dino_weight:
            loc = batch["local"]  # (B, L, 3, h, w)
            out["local"] = student.forward_tokens(self.student_input(loc.flatten(0, 1)).to(dev))
        return out

    def loss_terms(self, out, feats, *, step):
        lc = self.card.loss
        tok = out["tok"]
        b, g = feats["cls"].shape[:2]
        dev = tok.cls.device
        side = tok.grid
        temp = self.teacher_temp(step)
        logs: dict[str, float] = {}
        total = tok.cls.new_zeros(())
        cls_t = feats["cls"].to(dev)
        # teacher targets per global crop
        t_logits = self.t_dino(cls_t.flatten(0, 1)).reshape(b, g, -1)
        targets = [
            self.dino_loss.teacher_targets(t_logits[:, i], temp, mode=lc.centering)
            for i in range(g)
        ]
        s_cls = self.dino_head(tok.cls).reshape(b, g, -1)
        if lc.dino_weight:
            dino = sum(self.dino_loss([s_cls[:, i]], [targets[i]]) for i in range(g))
            n_terms = g
            if "local" in out:
                s_loc = self.dino_head(out["local"].cls).reshape(b, -1, s_cls.shape[-1])
                dino = dino + self.dino_loss(list(s_loc.unbind(1)), targets)
                n_terms += s_loc.shape[1] * g
            dino = dino / n_terms
            total = total + lc.dino_weight * dino
            logs["dino"] = float(dino.detach())
        if lc.ibot_weight:
            tp = resample_grid(feats["patches"].to(dev).flatten(0, 1), side)
            t_patch = self.t_ibot(tp)
            t_patch_targets = self.ibot_loss.teacher_targets(t_patch, temp, mode=lc.centering)
            ibot = self.ibot_loss(self.ibot_head(tok.patches), t_patch_targets)
            total = total + lc.ibot_weight * ibot
            logs["ibot"] = float(ibot.detach())
        if lc.koleo_weight:
            kol = sum(self.koleo(tok.cls.reshape(b, g, -1)[:, i]) for i in range(g))
            total = total + lc.koleo_weight * kol
            logs["koleo"] = float(kol.detach())
        ro = self.align(self.readout(tok.cls.detach()), feats["emb"].to(dev).flatten(0, 1))
        logs["readout"] = float(ro.detach())
        return total + ro, logs

    def to_teacher_space(self, tokens):
        return self.readout(tokens.cls)


def _dev(t: Teacher) -> torch.device:
    return next(t.encoder.parameters()).device


def _dev_mod(m) -> torch.device:
    return next(m.parameters()).device
