"""Metric calibration: a per-channel rescaling of the student's output, fitted after training
so that the student's own neighbourhoods match the teacher's.

The cosine losses of ``xmag`` align what a projection head reads out of the student's CLS with
the teacher; they leave the CLS's own metric free. On the CPU acceptance data the trained
CLS, read linearly, holds the teacher's neighbourhoods far better than its own cosine metric
ranks them (research/distill-standins.md). This stage fixes the metric with as few parameters
as possible: one positive factor per channel, ``a = exp(u - mean(u))``, fitted on plain
(un-augmented) training items to the CompRess objective (Abbasi Koohpayegani et al., NeurIPS
2020, arXiv:2010.14713), with every other training item as an anchor::

    p_t(i) = softmax_j(<t_i, t_j> / tau),  p_s(i) = softmax_j(<a * s_i, a * s_j> / tau)   (j != i)
    loss   = mean_i KL(p_t(i) || p_s(i))

on centred, L2-normalised rows. The factors are folded into the affine weights of the student's
final LayerNorm (every output token is scaled by ``a``) and divided out of the first layer of
each head that reads those tokens, so the heads compute exactly what they did. The artifact
keeps its architecture and format: export, quantize and embed see an ordinary student.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgepath.distill.data import Source, spread
from edgepath.errors import ConfigError

log = logging.getLogger(__name__)


def final_norm(backbone: nn.Module) -> nn.LayerNorm:
    """The LayerNorm that produces the encoder's output tokens (timm ViT: ``norm``, or
    ``fc_norm`` when ``norm`` is an Identity)."""
    norm = getattr(backbone, "norm", None)
    if isinstance(norm, nn.Identity):
        norm = getattr(backbone, "fc_norm", None)
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
        raise ConfigError(
            "train.metric_calibration needs a student whose output tokens come from a final "
            "LayerNorm with affine weights (timm ViTs have one); turn it off for this student"
        )
    return norm


@torch.no_grad()
def calibration_targets(recipe, teachers, source: Source, card) -> tuple[list[int], torch.Tensor]:
    """Training items spread over the training set and their teacher targets, on the plain
    (un-augmented) views that held-out and deployed tiles look like. The teacher is run live:
    its cached features are of augmented views."""
    picks = spread(len(source.train), card.train.calibration_items)
    rows = []
    for a in range(0, len(picks), 16):
        items = [source.train[i] for i in picks[a : a + 16]]
        rows.append(recipe.plain_targets(teachers, source, items).float().cpu())
    return picks, torch.cat(rows)


@torch.no_grad()
def student_rows(step_mod: nn.Module, source: Source, picks: list[int]) -> torch.Tensor:
    """The student's embedding of the plain views of ``picks``."""
    was = step_mod.training
    step_mod.eval()
    rows = []
    for a in range(0, len(picks), 32):
        items = [source.train[i] for i in picks[a : a + 32]]
        rows.append(step_mod.recipe.plain_embedding(step_mod.student, source, items).float().cpu())
    step_mod.train(was)
    return torch.cat(rows)


def neighbour_log_probs(
    x: torch.Tensor, temperature: float, *, detach_anchors: bool = False
) -> torch.Tensor:
    """log softmax of each row's similarities to the other rows (self excluded), on centred,
    L2-normalised rows; ``detach_anchors`` stops the gradient through the anchors' side, as
    CompRess's memory bank does."""
    z = F.normalize(x - x.mean(0), dim=-1)
    anchors = z.detach() if detach_anchors else z
    eye = torch.eye(len(z), dtype=torch.bool)
    return F.log_softmax((z @ anchors.t() / temperature).masked_fill(eye, -1e9), dim=-1)


def neighbourhood_kl(s: torch.Tensor, log_pt: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean KL(p_t || p_s) with p_s the neighbour distribution of the rows of ``s``."""
    log_ps = neighbour_log_probs(s, temperature, detach_anchors=True)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()


def fit_scales(
    s: torch.Tensor, t: torch.Tensor, *, temperature: float, steps: int, lr: float = 1e-2
) -> tuple[torch.Tensor, float, float]:
    """Positive per-channel factors (geometric mean 1) minimising the neighbourhood KL of
    ``s * a`` against ``t``; returns (a, KL before, KL after). Deterministic (full batch)."""
    log_pt = neighbour_log_probs(t.float(), temperature)
    s = s.float()
    u = torch.zeros(s.shape[1], requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    with torch.enable_grad():
        before = float(neighbourhood_kl(s, log_pt, temperature))
        for _ in range(steps):
            loss = neighbourhood_kl(s * torch.exp(u - u.mean()), log_pt, temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
    a = torch.exp(u - u.mean()).detach()
    after = float(neighbourhood_kl(s * a, log_pt, temperature))
    return a, before, after


@torch.no_grad()
def fold_scales(step_mod: nn.Module, a: torch.Tensor) -> None:
    """Scale every output token of the student by ``a`` (in its final LayerNorm) and divide it
    out of the heads that read those tokens."""
    norm = final_norm(step_mod.student.backbone)
    a = a.to(norm.weight.device, norm.weight.dtype)
    norm.weight.mul_(a)
    norm.bias.mul_(a)
    step_mod.recipe.fold_input_scale(a)


def calibrate_metric(
    step_mod: nn.Module, teachers, source: Source, card, targets=None, *, shared: bool = True
) -> tuple[dict[str, Any], tuple[list[int], torch.Tensor] | None]:
    """Fit the per-channel factors and fold them into ``step_mod``. With ``shared`` every rank
    calls this, rank 0 fits and broadcasts; without, the caller's process fits alone.
    ``targets`` (from an earlier call) saves running the teacher again.

    Returns what to record in the manifest (rank 0) and the targets, for reuse.
    """
    import torch.distributed as dist

    from edgepath.distill.losses._dist import world_size

    tc = card.train
    norm = final_norm(step_mod.student.backbone)  # refuse before any work
    info: dict[str, Any] = {}
    a = torch.ones(norm.weight.shape[0])
    shared = shared and world_size() > 1
    rank = dist.get_rank() if shared else 0
    if rank == 0:
        targets = targets or calibration_targets(step_mod.recipe, teachers, source, card)
        picks, t = targets
        s = student_rows(step_mod, source, picks)
        a, before, after = fit_scales(
            s, t, temperature=tc.calibration_temp, steps=tc.calibration_steps
        )
        log.info(
            "metric calibration: neighbourhood KL %.3f -> %.3f on %d items", before, after, len(s)
        )
        info = {
            "items": len(s),
            "views": "plain (no augmentation), live teacher",
            "temperature": tc.calibration_temp,
            "steps": tc.calibration_steps,
            "kl_before": round(before, 4),
            "kl_after": round(after, 4),
            "scale_min": round(float(a.min()), 4),
            "scale_max": round(float(a.max()), 4),
        }
    if shared:
        a = a.to(norm.weight.device)
        dist.broadcast(a, src=0)
    fold_scales(step_mod, a)
    return info, targets
