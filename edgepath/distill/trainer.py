"""The distillation loop: DDP (NCCL on GPUs, gloo on CPU) or FSDP, accumulation, clipping, AdamW,
cosine schedules, EMA student, teacher-feature cache, atomic checkpoints and exact resume.

Run it in one process or under ``torchrun --nproc-per-node N -m edgepath distill …``: the
process group is set up from the ``torchrun`` environment. Every random choice (which tile, which
fixed view, which local crop) is a function of (seed, step, sample number), so a resumed run
continues on exactly the same data, and a run with the cache sees exactly the teacher outputs a
live-teacher run computes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from edgepath.distill import checkpoint as ckpt
from edgepath.distill.cache import CACHE_DTYPE, FeatureCache, as_stored
from edgepath.distill.calibrate import calibrate_metric, final_norm
from edgepath.distill.data import Source, build_source
from edgepath.distill.evaluate import evaluate, write_student
from edgepath.distill.recipe import RecipeCard
from edgepath.distill.recipes import recipe_class
from edgepath.distill.schedules import cosine
from edgepath.distill.teachers import load_teachers
from edgepath.distill.views import generator, seed_of
from edgepath.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What the trainer reports to a progress callback."""

    phase: str  # "cache" | "train"
    done: int
    total: int
    scalars: dict[str, float] = field(default_factory=dict)


class _Step(nn.Module):
    """Student + recipe (heads, loss state): the module DDP wraps; forward returns the loss."""

    def __init__(self, student: nn.Module, recipe: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.recipe = recipe

    def forward(self, batch, feats, step: int):
        return self.recipe.loss(self.student, batch, feats, step=step)


def _dist_setup() -> tuple[int, int, torch.device]:
    """Init the process group from the torchrun environment; (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return rank, world, device


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _student(card: RecipeCard, teachers, device) -> tuple[nn.Module, Any, Any]:
    """(student encoder for training, artifact spec, train spec)."""
    import dataclasses

    from edgepath.models.cards import InputSpec
    from edgepath.models.encoder import build_encoder
    from edgepath.models.students import student_spec

    t0 = teachers[0].card
    mpp = card.data.low_mpp if card.recipe == "xmag" else (card.data.mpp or t0.input.mpp)
    inp = InputSpec(card.data.tile_px, mpp, t0.input.mean, t0.input.std)
    if tuple(t0.input.std) == (1.0, 1.0, 1.0) and tuple(t0.input.mean) == (0.0, 0.0, 0.0):
        # the student inherits the teacher's normalisation; on raw [0, 1] H&E a ViT learns far
        # slower (docs/distill.md: held-out centred cosine 0.10 vs 0.74 after 200 steps)
        log.warning(
            "teacher card %s feeds raw [0, 1] RGB (mean 0, std 1) and the student inherits it: "
            "give the card the data's mean/std (e.g. H-optimus-0's H&E statistics) so the "
            "student sees standardised inputs",
            t0.name,
        )
    spec = student_spec(card.student.name, input=inp, embedding=card.student.embedding)
    train_spec = spec
    if card.views.local_crops > 0 and (card.recipe == "h0mini" or card.loss.with_h0mini):
        arch = dataclasses.replace(
            spec.architecture, kwargs={**spec.architecture.kwargs, "dynamic_img_size": True}
        )
        train_spec = dataclasses.replace(spec, architecture=arch)
    torch.manual_seed(card.train.seed)
    return build_encoder(train_spec).to(device), spec, train_spec


def _param_groups(module: nn.Module) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or any(k in name for k in ("pos_embed", "cls_token", "reg_token"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


class Sampler:
    """Sample number n -> (item index, fixed view): epoch-wise permutations seeded by the run."""

    def __init__(self, n_items: int, n_views: int, seed: int) -> None:
        self.n, self.v, self.seed = n_items, n_views, seed
        self._perm: tuple[int, torch.Tensor] | None = None

    def __call__(self, n: int) -> tuple[int, int]:
        epoch = n // self.n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (
                epoch,
                torch.randperm(self.n, generator=generator(self.seed, "perm", epoch)),
            )
        return int(self._perm[1][n % self.n]), seed_of(self.seed, "fixed-view", n) % self.v


def distill(
    card: RecipeCard,
    *,
    out: str | Path,
    slides: str | Path | None = None,
    tiles: str | Path | None = None,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Distil the recipe's teacher(s) into its student; write the student artifact to ``out``.

    Args:
        card: The resolved recipe.
        out: Run folder: the artifact (``edgepath.json``, ``model.safetensors``,
            ``heads.safetensors``, ``recipe.toml``), ``checkpoints/``, ``scalars.csv``,
            ``cache/`` (unless ``cache_dir``).
        slides, tiles: Training data (exactly one).
        resume: Continue from the newest checkpoint in ``out/checkpoints``.
        cache_dir: Teacher-feature cache folder (default ``out/cache``).
        on_progress: Called after each step (rank 0 only).
        stop_after: Stop (without the artifact) after this many steps: for tests.

    Returns:
        The manifest written (rank 0), or a summary on other ranks.
    """
    out = Path(out)
    rank, world, device = _dist_setup()
    tc = card.train
    t_start = time.perf_counter()
    teachers = load_teachers(
        card.teachers, device=device, fsdp=tc.strategy == "fsdp" and device.type == "cuda"
    )
    mpp = card.data.mpp or teachers[0].card.input.mpp
    rcls = recipe_class(card.recipe)
    source = build_source(card.recipe, slides=slides, tiles=tiles, data=card.data, mpp=mpp)
    student, spec, _ = _student(card, teachers, device)
    if tc.metric_calibration:
        final_norm(student.backbone)  # refuse now, not after the last step
    torch.manual_seed(tc.seed + 1)
    recipe = rcls(card, student_dim=student.token_dim, teachers=teachers).to(device)
    recipe.calibrate(teachers, source)
    step_mod = _Step(student, recipe)
    ema = copy.deepcopy(step_mod)
    for p in ema.parameters():
        p.requires_grad_(False)
    groups = _param_groups(step_mod)
    opt = torch.optim.AdamW(
        groups, lr=card.optim.lr, betas=card.optim.betas, weight_decay=card.optim.weight_decay
    )
    ckpt_dir = out / "checkpoints"
    start, init_fid = 0, None
    if not resume and ckpt.checkpoints(ckpt_dir):
        raise ConfigError(
            f"{out}: this run folder already has checkpoints; pass --resume to continue it or "
            "choose a new -o folder"
        )
    state = ckpt.load_latest(ckpt_dir) if resume else None
    if resume and state is None:
        log.warning("%s: no checkpoint to resume from: starting from step 0", ckpt_dir)
    if state is not None:
        saved = dict(state["recipe"])
        mine = _card_dict(card)
        if _without_steps(saved) != _without_steps(mine):
            raise ConfigError(
                f"{ckpt_dir}: checkpoints were written by a different recipe; resume with the "
                "same recipe and overrides (only train.steps and the train.calibration settings may "
                "change) or use a new -o folder"
            )
        step_mod.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start, init_fid = int(state["step"]), state.get("init_fidelity")
        log.info("resuming from step %d", start)

    # teacher-feature cache ---------------------------------------------------------------
    cache = None
    if tc.cache:
        cache = _open_cache(card, teachers, source, cache_dir or out / "cache", recipe.views_format)
        st = cache.prepare(on_mismatch=tc.cache_mismatch, rank=rank)
        _barrier()

        def compute(idx: list[int], v: int) -> dict[str, torch.Tensor]:
            x = torch.stack([recipe.views(source, i, source.train[i], v)["teacher"] for i in idx])
            return recipe.teacher_features(teachers, x)

        if st != "complete":
            cb = None
            if on_progress and rank == 0:

                def cb(d: int, t: int) -> None:
                    on_progress(Progress("cache", d, t))

            cache.build(compute, rank=rank, world=world, batch=tc.batch_size, on_shard=cb)
            _barrier()
            if rank == 0:
                cache.finish()
        _barrier()

    cal_targets = None  # the teacher side of the metric calibration, computed once
    if init_fid is None:
        init_fid = evaluate(step_mod, teachers, source, card) if rank == 0 else None
        if rank == 0 and tc.metric_calibration:  # the same calibration at init, for the record
            probe = copy.deepcopy(step_mod)
            _, cal_targets = calibrate_metric(probe, teachers, source, card, shared=False)
            init_fid["metric_calibrated"] = _knn_only(evaluate(probe, teachers, source, card))
            del probe

    model: nn.Module = step_mod
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(
            step_mod,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=True,
        )
    if state is not None:
        ckpt.set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])

    sampler = Sampler(len(source.train), card.views.fixed_views, tc.seed)
    scal = None
    if rank == 0:
        from edgepath.distill.logs import ScalarLog

        scal = ScalarLog(out)
        if state is not None:
            scal.truncate_after(start)
    acc = card.optim.accumulate
    gb = tc.batch_size * world
    end = tc.steps if stop_after is None else min(tc.steps, stop_after)
    params = [p for g in groups for p in g["params"]]
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and tc.precision in ("auto", "bf16")
        else contextlib.nullcontext()
    )
    t_last, seen = time.perf_counter(), 0
    for step in range(start, end):
        lr = cosine(
            step, tc.steps, card.optim.lr, card.optim.min_lr, warmup=card.optim.warmup_steps
        )
        wd = cosine(step, tc.steps, card.optim.weight_decay, card.optim.weight_decay_end)
        for g in opt.param_groups:
            g["lr"] = lr
            g["weight_decay"] = wd if g["apply_wd"] else 0.0
        terms: dict[str, float] = {}
        total_loss = 0.0
        for micro in range(acc):
            base = (step * acc + micro) * gb
            batch, feats = _batch(
                recipe,
                source,
                teachers,
                cache,
                sampler,
                step=step,
                numbers=list(range(base + rank, base + gb, world)),
            )
            sync = model.no_sync() if world > 1 and micro < acc - 1 else contextlib.nullcontext()
            with sync:
                with autocast:
                    loss, parts = model(batch, feats, step)
                (loss / acc).backward()
            total_loss += float(loss.detach()) / acc
            for k, v in parts.items():
                terms[k] = terms.get(k, 0.0) + v / acc
        if card.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(params, card.optim.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if card.ema.enabled:
            m = cosine(step, tc.steps, card.ema.momentum, card.ema.momentum_end)
            _ema_update(ema, step_mod, m)
        else:
            ema.load_state_dict(step_mod.state_dict())
        seen += gb * acc
        if world > 1:
            t = torch.tensor([total_loss], dtype=torch.float64)
            dist.all_reduce(t)
            total_loss = float(t) / world
        if rank == 0:
            now = time.perf_counter()
            rate = seen / max(now - t_last, 1e-9)
            scalars = {"loss": total_loss, **terms, "lr": lr, "wd": wd, "tiles_per_s": rate}
            if scal is not None and ((step + 1) % tc.log_every == 0 or step == 0):
                scal.write(step + 1, scalars)
            if on_progress:
                on_progress(Progress("train", step + 1, tc.steps, scalars))
        if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.steps:
            _save_checkpoint(
                ckpt_dir,
                step + 1,
                step_mod,
                ema,
                opt,
                card,
                init_fid,
                rank=rank,
                keep=tc.keep_checkpoints,
            )
    if scal is not None:
        scal.close()
    if end < tc.steps:
        _barrier()
        return {"stopped_at": end}
    result: dict[str, Any] = {}
    calibration = None
    if tc.metric_calibration:  # fitted on rank 0, folded on every rank: one model everywhere
        before = _knn_only(evaluate(ema, teachers, source, card)) if rank == 0 else {}
        info, _ = calibrate_metric(ema, teachers, source, card, cal_targets)
        calibration = {**info, "before": before}
    if rank == 0:
        result = write_student(
            out,
            card,
            ema,
            spec,
            teachers,
            source,
            init_fid,
            seconds=time.perf_counter() - t_start,
            world=world,
            calibration=calibration,
        )
    _barrier()
    source.close()
    return result


def _knn_only(fid: dict[str, Any]) -> dict[str, Any]:
    return {k: fid.get(k) for k in ("knn10_agreement", "knn10_agreement_centered")}


def _maybe_unused(card: RecipeCard) -> bool:
    """Whether a zero loss weight leaves some head out of the graph (DDP must then look)."""
    lc = card.loss
    weights = {
        "h0mini": (lc.dino_weight, lc.ibot_weight),
        "xmag": (lc.global_weight, lc.local_weight),
        "expert": (lc.cls_cos_weight, lc.patch_weight),
    }[card.recipe]
    if card.recipe == "expert" and lc.with_h0mini:
        weights += (lc.dino_weight, lc.ibot_weight)
    return any(w == 0 for w in weights)


def _card_dict(card: RecipeCard) -> dict[str, Any]:
    from edgepath.cards import to_dict

    return to_dict(card)


def _without_steps(d: dict[str, Any]) -> dict[str, Any]:
    """The card without what may change on resume: the length of the run and the metric
    calibration, which acts after the last step (so a finished run can be calibrated)."""
    d = copy.deepcopy(d)
    for key in ("steps", *CALIBRATION_KEYS):
        d.get("train", {}).pop(key, None)
    return d


CALIBRATION_KEYS = (
    "metric_calibration",
    "calibration_items",
    "calibration_temp",
    "calibration_steps",
)


def _open_cache(
    card: RecipeCard, teachers, source: Source, folder: Path, views_format: int = 1
) -> FeatureCache:
    from edgepath.cards import to_dict

    key = {
        "recipe": card.recipe,
        "teachers": [{"card": to_dict(t.card), "sha256": t.info.get("sha256")} for t in teachers],
        "views": to_dict(card.views),
        "seed": card.train.seed,
        "tiling": source.fingerprint(),
        "with_h0mini": card.loss.with_h0mini,
    }
    if views_format != 1:  # absent at 1, so caches written before the field existed stay valid
        key["views_format"] = views_format
    return FeatureCache(
        folder, key, n_items=len(source.train), n_views=card.views.fixed_views, dtype=CACHE_DTYPE
    )


def _batch(
    recipe, source: Source, teachers, cache, sampler: Sampler, *, step: int, numbers: list[int]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    picks = [sampler(n) for n in numbers]
    views = [recipe.views(source, i, source.train[i], v, teacher=cache is None) for i, v in picks]
    batch = {"student": torch.stack([v["student"] for v in views])}
    extra = [
        recipe.student_extra(source, source.train[i], step=step, slot=n)
        for (i, _), n in zip(picks, numbers, strict=True)
    ]
    if extra and extra[0]:
        for k in extra[0]:
            batch[k] = torch.stack([e[k] for e in extra])
    if cache is not None:
        feats = cache.get([i for i, _ in picks], [v for _, v in picks])
    else:
        x = torch.stack([v["teacher"] for v in views])
        feats = as_stored(recipe.teacher_features(teachers, x), CACHE_DTYPE)
    return batch, feats


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, m: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(m).add_(p.detach(), alpha=1 - m)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


def _save_checkpoint(folder, step, step_mod, ema, opt, card, init_fid, *, rank, keep) -> None:
    rng = ckpt.rng_state()
    if dist.is_initialized():
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, rng)
    else:
        states = [rng]
    if rank == 0:
        ckpt.save(
            folder,
            step,
            {
                "step": step,
                "model": step_mod.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "rng": states,
                "recipe": _card_dict(card),
                "init_fidelity": init_fid,
            },
            keep=keep,
        )
    _barrier()


__all__ = ["Progress", "distill"]
