"""The distillation loop: DDP (NCCL on GPUs, gloo on CPU), accumulation, clipping, AdamW,
cosine schedules, EMA student, teacher-feature cache, atomic checkpoints and exact resume.

The trainer knows no recipe by name: what differs between recipes (views, teacher features,
the student pass and its loss, the student's mpp, what happens after the last step) is a method
of the recipe class (``edgepath.distill.recipes.base.Recipe``).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from edgepath.distill import checkpoint as ckpt
from edgepath.distill.cache import CACHE_DTYPE, FeatureCache, as_stored
from edgepath.distill.data import Source, build_source
from edgepath.distill.evaluate import evaluate, write_student
from edgepath.distill.loader import Inputs, MicroBatch, micro_batches
from edgepath.distill.recipe import RecipeCard
from edgepath.distill.recipes import recipe_class
from edgepath.distill.schedules import cosine
from edgepath.distill.teachers import load_teachers
from edgepath.distill.timing import NO_TIMER, NoTimer
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

    def forward(self, batch, feats, step: int, timer: NoTimer = NO_TIMER):
        with timer.phase("student"):
            out = self.recipe.student_forward(self.student, batch)
        with timer.phase("loss"):
            return self.recipe.loss_terms(out, feats, step=step)


def _dist_setup(device: str = "auto") -> tuple[int, int, torch.device]:
    """Init the process group from the torchrun environment; (rank, world, device).

    ``device``: ``auto`` (CUDA where there is one), ``cuda`` or ``cpu``.
    """
    from edgepath.runtime.torch_engine import resolve_device

    cuda = resolve_device(device).startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if cuda:
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
    rcls = recipe_class(card.recipe)
    inp = InputSpec(card.data.tile_px, rcls.student_mpp(card, t0), t0.input.mean, t0.input.std)
    if tuple(t0.input.std) == (1.0, 1.0, 1.0) and tuple(t0.input.mean) == (0.0, 0.0, 0.0):
        # the student inherits the teacher's normalisation; on raw [0, 1] H&E a ViT learns far
        # slower (research/distill-standins.md: held-out centred cosine 0.10 vs 0.74 after 200
        # steps)
        log.warning(
            "teacher card %s feeds raw [0, 1] RGB (mean 0, std 1) and the student inherits it: "
            "give the card the data's mean/std (e.g. H-optimus-0's H&E statistics) so the "
            "student sees standardised inputs",
            t0.name,
        )
    spec = student_spec(card.student.name, input=inp, embedding=card.student.embedding)
    train_spec = spec
    if rcls.dynamic_img_size(card):
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


@dataclass
class _Run:
    """Everything one training run holds, set up once by :func:`_setup`."""

    card: RecipeCard
    out: Path
    rank: int
    world: int
    device: torch.device
    teachers: list
    source: Source
    spec: Any
    step_mod: _Step
    ema: _Step
    opt: torch.optim.Optimizer
    params: list[torch.Tensor]
    t_start: float
    start: int = 0
    init_fid: dict[str, Any] | None = None
    cache: FeatureCache | None = None
    rng: Any = None

    @property
    def recipe(self):
        return self.step_mod.recipe

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"


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
    random_teachers: bool = False,
    device: str = "auto",
    speed_only: bool = False,
    timer: NoTimer = NO_TIMER,
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
        stop_after: Stop (without the artifact) after this many steps: for tests and benchmarks.
        random_teachers: Teachers without weights get seeded random ones (speed measurements
            only: the manifest records ``random_weights``).
        device: ``auto`` (CUDA where there is one; under torchrun, ``LOCAL_RANK``'s GPU),
            ``cuda`` or ``cpu``.
        speed_only: Skip the one-off passes that only fix teacher statistics or measure
            (the recipe's ``calibrate``, the held-out fidelity at init): for speed
            measurements, which stop before the artifact (``stop_after``).
        timer: Charged with each phase of each step (``edgepath bench distill``).

    Returns:
        The manifest written (rank 0), or a summary on other ranks.
    """
    if speed_only and stop_after is None:
        raise ValueError("speed_only runs must stop before the artifact: give stop_after")
    run = _setup(
        card,
        Path(out),
        slides=slides,
        tiles=tiles,
        random_teachers=random_teachers,
        device=device,
        speed_only=speed_only,
    )
    if resume:
        _restore(run)
    elif ckpt.checkpoints(run.ckpt_dir):
        raise ConfigError(
            f"{run.out}: this run folder already has checkpoints; pass --resume to continue it "
            "or choose a new -o folder"
        )
    if card.train.cache:
        run.cache = _prepare_cache(run, Path(cache_dir or run.out / "cache"), on_progress, timer)
    if run.init_fid is None and run.rank == 0 and not speed_only:
        run.init_fid = evaluate(run.step_mod, run.teachers, run.source, card)
        run.init_fid.update(run.recipe.record_init(run.step_mod, run.teachers, run.source))
    end = card.train.steps if stop_after is None else min(card.train.steps, stop_after)
    _train(run, end, on_progress=on_progress, timer=timer)
    if end < card.train.steps:
        _barrier()
        return {"stopped_at": end}
    return _finish(run)


def _setup(
    card: RecipeCard,
    out: Path,
    *,
    slides,
    tiles,
    random_teachers: bool,
    device: str,
    speed_only: bool,
) -> _Run:
    """Process group, teachers, data, student, recipe, EMA copy and optimizer of a new run."""
    rank, world, dev = _dist_setup(device)
    t_start = time.perf_counter()
    teachers = load_teachers(card.teachers, device=dev, random_weights=random_teachers)
    rcls = recipe_class(card.recipe)
    source = build_source(
        rcls.source_kind,
        slides=slides,
        tiles=tiles,
        data=card.data,
        mpp=rcls.student_mpp(card, teachers[0].card),
    )
    student, spec, _ = _student(card, teachers, dev)
    torch.manual_seed(card.train.seed + 1)
    recipe = rcls(card, student_dim=student.token_dim, teachers=teachers).to(dev)
    recipe.check_student(student)
    if not speed_only:
        recipe.calibrate(teachers, source)
    step_mod = _Step(student, recipe)
    ema = copy.deepcopy(step_mod)
    for p in ema.parameters():
        p.requires_grad_(False)
    groups = _param_groups(step_mod)
    opt = torch.optim.AdamW(
        groups, lr=card.optim.lr, betas=card.optim.betas, weight_decay=card.optim.weight_decay
    )
    params = [p for g in groups for p in g["params"]]
    return _Run(
        card, out, rank, world, dev, teachers, source, spec, step_mod, ema, opt, params, t_start
    )


def _restore(run: _Run) -> None:
    """Load the newest checkpoint of the run folder into the run (same recipe required)."""
    state = ckpt.load_latest(run.ckpt_dir)
    if state is None:
        log.warning("%s: no checkpoint to resume from: starting from step 0", run.ckpt_dir)
        return
    if _without_steps(dict(state["recipe"])) != _without_steps(_card_dict(run.card)):
        raise ConfigError(
            f"{run.ckpt_dir}: checkpoints were written by a different recipe; resume with the "
            "same recipe and overrides (only train.steps and the train.calibration settings may "
            "change) or use a new -o folder"
        )
    run.step_mod.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.opt.load_state_dict(state["optimizer"])
    run.start, run.init_fid = int(state["step"]), state.get("init_fidelity")
    rngs = state["rng"]
    run.rng = rngs[run.rank] if run.rank < len(rngs) else rngs[0]
    log.info("resuming from step %d", run.start)


def _prepare_cache(
    run: _Run, folder: Path, on_progress: Callable[[Progress], None] | None, timer: NoTimer
) -> FeatureCache:
    """Open the teacher-feature cache and fill what is missing (shared out over the ranks)."""
    card, recipe, source = run.card, run.recipe, run.source
    cache = _open_cache(card, run.teachers, source, folder, recipe.views_format)
    st = cache.prepare(on_mismatch=card.train.cache_mismatch, rank=run.rank)
    _barrier()
    if st != "complete":

        def compute(idx: list[int], v: int) -> dict[str, torch.Tensor]:
            x = torch.stack([recipe.views(source, i, source.train[i], v)["teacher"] for i in idx])
            return recipe.teacher_features(run.teachers, x)

        cb = None
        if on_progress and run.rank == 0:

            def cb(d: int, t: int) -> None:
                on_progress(Progress("cache", d, t))

        with timer.once("cache_build"):
            cache.build(
                compute, rank=run.rank, world=run.world, batch=card.train.batch_size, on_shard=cb
            )
        _barrier()
        if run.rank == 0:
            cache.finish()
    _barrier()
    return cache


def _train(
    run: _Run, end: int, *, on_progress: Callable[[Progress], None] | None, timer: NoTimer
) -> None:
    """Steps ``run.start`` .. ``end``: logs, progress and checkpoints as the card says."""
    card, tc = run.card, run.card.train
    model: nn.Module = run.step_mod
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(
            run.step_mod,
            device_ids=[run.device.index] if run.device.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=True,
        )
    if run.rng is not None:
        ckpt.set_rng_state(run.rng)
    inputs = Inputs(
        run.recipe,
        run.source,
        Sampler(len(run.source.train), card.views.fixed_views, tc.seed),
        accumulate=card.optim.accumulate,
        global_batch=tc.batch_size * run.world,
        rank=run.rank,
        world=run.world,
        teacher_views=run.cache is None,
    )
    batches = micro_batches(
        inputs, run.start, end, workers=tc.num_workers, pin_memory=run.device.type == "cuda"
    )
    scal = None
    if run.rank == 0:
        from edgepath.distill.logs import ScalarLog

        scal = ScalarLog(run.out)
        if run.start:
            scal.truncate_after(run.start)
    t_last, seen = time.perf_counter(), 0
    timer.start()
    for step in range(run.start, end):
        scalars = _step(run, model, batches, step, timer)
        seen += tc.batch_size * run.world * card.optim.accumulate
        if run.rank == 0:
            scalars["tiles_per_s"] = seen / max(time.perf_counter() - t_last, 1e-9)
            if scal is not None and ((step + 1) % tc.log_every == 0 or step == 0):
                scal.write(step + 1, scalars)
            if on_progress:
                on_progress(Progress("train", step + 1, tc.steps, scalars))
        if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.steps:
            _save_checkpoint(run, step + 1)
        timer.end_step()
    if scal is not None:
        scal.close()


def _step(
    run: _Run, model: nn.Module, batches: Iterator[MicroBatch], step: int, timer: NoTimer
) -> dict[str, float]:
    """One optimizer step (with accumulation); the scalars to log (loss averaged over ranks)."""
    card, tc = run.card, run.card.train
    lr = cosine(step, tc.steps, card.optim.lr, card.optim.min_lr, warmup=card.optim.warmup_steps)
    wd = cosine(step, tc.steps, card.optim.weight_decay, card.optim.weight_decay_end)
    for g in run.opt.param_groups:
        g["lr"] = lr
        g["weight_decay"] = wd if g["apply_wd"] else 0.0
    acc = card.optim.accumulate
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if run.device.type == "cuda" and tc.precision in ("auto", "bf16")
        else contextlib.nullcontext()
    )
    terms: dict[str, float] = {}
    total_loss = 0.0
    for micro in range(acc):
        batch, feats = _batch(run, batches, timer=timer)
        last = micro == acc - 1
        sync = model.no_sync() if run.world > 1 and not last else contextlib.nullcontext()
        with sync:
            with autocast:
                loss, parts = model(batch, feats, step, timer)
            with timer.phase("backward"):
                (loss / acc).backward()
        total_loss += float(loss.detach()) / acc
        for k, v in parts.items():
            terms[k] = terms.get(k, 0.0) + v / acc
    with timer.phase("optimizer"):
        if card.optim.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(run.params, card.optim.clip_grad)
        run.opt.step()
        run.opt.zero_grad(set_to_none=True)
        if card.ema.enabled:
            m = cosine(step, tc.steps, card.ema.momentum, card.ema.momentum_end)
            _ema_update(run.ema, run.step_mod, m)
        else:
            run.ema.load_state_dict(run.step_mod.state_dict())
    if run.world > 1:
        t = torch.tensor([total_loss], dtype=torch.float64)
        dist.all_reduce(t)
        total_loss = float(t) / run.world
    return {"loss": total_loss, **terms, "lr": lr, "wd": wd}


def _finish(run: _Run) -> dict[str, Any]:
    """The recipe's finalisation on the EMA model, then the artifact (rank 0)."""
    extra = run.recipe.finalize(run.ema, run.teachers, run.source, rank=run.rank)
    result: dict[str, Any] = {}
    if run.rank == 0:
        result = write_student(
            run.out,
            run.card,
            run.ema,
            run.spec,
            run.teachers,
            run.source,
            run.init_fid,
            seconds=time.perf_counter() - run.t_start,
            world=run.world,
            extra=extra,
        )
    _barrier()
    run.source.close()
    return result


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
        "teachers": [{"card": to_dict(t.card), "sha256": t.model.sha256} for t in teachers],
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
    run: _Run, batches: Iterator[MicroBatch], *, timer: NoTimer
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The next micro-batch's student inputs and the teachers' features for it."""
    with timer.phase("data"):  # with workers: the wait for one built ahead
        mb = next(batches)
    if run.cache is not None:
        with timer.phase("cache_read"):
            feats = run.cache.get([i for i, _ in mb.picks], [v for _, v in mb.picks])
    else:
        with timer.phase("teacher"):
            feats = as_stored(run.recipe.teacher_features(run.teachers, mb.teacher), CACHE_DTYPE)
    return mb.student, feats


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, m: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(m).add_(p.detach(), alpha=1 - m)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


def _save_checkpoint(run: _Run, step: int) -> None:
    """Every rank's RNG state and rank 0's model, EMA and optimizer, atomically."""
    rng = ckpt.rng_state()
    if dist.is_initialized():
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, rng)
    else:
        states = [rng]
    if run.rank == 0:
        ckpt.save(
            run.ckpt_dir,
            step,
            {
                "step": step,
                "model": run.step_mod.state_dict(),
                "ema": run.ema.state_dict(),
                "optimizer": run.opt.state_dict(),
                "rng": states,
                "recipe": _card_dict(run.card),
                "init_fidelity": run.init_fid,
            },
            keep=run.card.train.keep_checkpoints,
        )
    _barrier()


__all__ = ["Progress", "distill"]
