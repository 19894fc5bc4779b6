"""Distillation recipe cards (``distill/*.toml``): frozen dataclasses and dotted CLI overrides."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from edgepath.errors import ConfigError

RecipeName = Literal["h0mini", "xmag", "expert"]


@dataclass(frozen=True)
class TeacherRef:
    """One frozen teacher: a teacher card name or path, its loss weight, optional files."""

    card: str
    weight: float = 1.0
    #: Checkpoint file or folder (else the card's default lookup; stand-ins need none).
    weights: str = ""
    #: Released DINO/iBOT heads (safetensors with ``dino.*`` / ``ibot.*`` DINOHead keys).
    heads: str = ""


@dataclass(frozen=True)
class StudentSpec:
    """The student: a name from ``edgepath.models.students`` and its embedding definition."""

    name: str = "vit-s14"
    embedding: Literal["cls", "cls+mean_patch"] = "cls"


@dataclass(frozen=True)
class DataSpec:
    """Where tiles come from and how they are read.

    ``mpp`` 0 means the (first) teacher's mpp. XMAG reads ``low_mpp`` tiles for the student and
    the k×k ``high_mpp`` tiles of the same region for the teacher (k = low_mpp / high_mpp).
    """

    tile_px: int = 224
    mpp: float = 0.0
    low_mpp: float = 2.0
    high_mpp: float = 0.5
    min_tissue: float = 0.5
    #: Fraction of tiles (a band at the bottom of each slide) held out for the final fidelity.
    holdout: float = 0.2
    #: Cap on training items (0: all).
    max_items: int = 0
    #: Training grid stride as a fraction of the tile (XMAG: region) side; < 1 overlaps.
    stride: float = 1.0
    #: Held-out grid stride (finer, so that small slides still give enough held-out tiles).
    eval_stride: float = 0.5


@dataclass(frozen=True)
class ViewsSpec:
    """Views: fixed teacher views per tile (cacheable) and the student's extra local crops."""

    #: Fixed augmented views per tile; the teacher output of each is computed once (cache).
    fixed_views: int = 4
    global_crops: int = 2
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_crops: int = 0
    local_px: int = 98
    local_scale: tuple[float, float] = (0.05, 0.32)
    flip: bool = True
    #: Photometric jitter strength (brightness / contrast / saturation, HED-free); 0 disables.
    color_jitter: float = 0.2


@dataclass(frozen=True)
class LossSpec:
    """Loss terms and weights; which ones are used depends on the recipe."""

    # h0mini (DINOv2): DINO on CLS, iBOT on patches, KoLeo on the student CLS
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    dino_out_dim: int = 65536
    ibot_out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    teacher_temp_start: float = 0.04
    teacher_temp_warmup_steps: int = 0
    #: Teacher temperature of the frozen random-prototype heads (used instead of the
    #: teacher_temp schedule when no released heads are given). DINO's 0.04 -> 0.07 is made for
    #: learned prototypes that sit close to the data; a random prototype sees a tile at a
    #: cosine of about N(0, 1/d) (rescaled to N(0, 1) by FrozenPrototypeHead), and at 0.07 the
    #: target is about 2 of 2048 prototypes wide: it keeps kNN-10 0.48 of the teacher's
    #: neighbourhoods, against 0.91 at 0.5 (research/frozen_head_code.py,
    #: research/distill-standins.md).
    frozen_head_temp: float = 0.5
    centering: Literal["sinkhorn_knopp", "softmax_center"] = "sinkhorn_knopp"
    # xmag: -cos(global) + local_weight * mean over cells of -cos(local)
    global_weight: float = 1.0
    local_weight: float = 0.5
    proj_hidden_dim: int = 1024
    proj_layers: int = 2
    #: xmag / expert: subtract the teacher's mean embedding (and mean patch token) from the
    #: targets, estimated once on the first 64 training tiles, so the cosine losses weigh what
    #: is specific to each tile and not the direction every tile shares (feature
    #: standardisation as in PHI-S / AM-RADIO, arXiv:2410.01680). The papers use raw targets.
    center_targets: bool = False
    # expert (GPFM): CLS 1 - cos; patch cos / smooth-L1 mix
    cls_cos_weight: float = 1.0
    patch_weight: float = 1.0
    patch_cos_weight: float = 0.9
    patch_smooth_l1_weight: float = 0.1
    #: expert only: add the h0mini terms (DINO/iBOT/KoLeo) against the first teacher.
    with_h0mini: bool = False


@dataclass(frozen=True)
class OptimSpec:
    """AdamW with cosine schedules (after linear warmup) for lr and weight decay."""

    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_steps: int = 100
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0
    accumulate: int = 1


@dataclass(frozen=True)
class EMASpec:
    """EMA of the student (the final model), momentum on a cosine schedule to ``momentum_end``."""

    enabled: bool = True
    momentum: float = 0.994
    momentum_end: float = 1.0


@dataclass(frozen=True)
class TrainSpec:
    """Run length, batch, seed, precision, checkpoints and logs."""

    steps: int = 1000
    #: Per-process batch (tiles or regions per step before accumulation).
    batch_size: int = 32
    seed: int = 0
    #: ``auto``: bf16 autocast on CUDA, fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: ``ddp`` only: every rank holds the frozen teacher and the student (docs/distill.md,
    #: "Strategy"); ``fsdp`` is refused with the reason.
    strategy: Literal["ddp", "fsdp"] = "ddp"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    #: Teacher-feature cache: computed once per tile and fixed view, reused every epoch.
    cache: bool = True
    #: What to do when the cache does not match the teacher / weights / tiling.
    cache_mismatch: Literal["rebuild", "error"] = "rebuild"
    #: Held-out tiles (max) for the final fidelity.
    eval_tiles: int = 256
    #: Processes that build micro-batches (region reads, crops, jitter) ahead of the step; 0
    #: builds them in the main process. The run is the same bit for bit either way.
    num_workers: int = 0
    #: xmag only, beyond the paper: after training, rescale the student's output channels (a
    #: positive per-channel factor folded into its final LayerNorm and the heads' first layer)
    #: so that its own neighbourhoods match the teacher's on ``calibration_items`` training
    #: items (edgepath/distill/calibrate.py). An invertible linear map: a linear probe on the
    #: embedding is unaffected, its kNN / retrieval metric changes.
    metric_calibration: bool = False
    calibration_items: int = 512
    calibration_temp: float = 0.1
    calibration_steps: int = 1000


@dataclass(frozen=True)
class RecipeCard:
    """A distillation recipe: teacher(s), student, views, losses and weights, optimizer, schedule."""

    name: str
    description: str
    recipe: RecipeName
    teachers: tuple[TeacherRef, ...]
    student: StudentSpec = field(default_factory=StudentSpec)
    data: DataSpec = field(default_factory=DataSpec)
    views: ViewsSpec = field(default_factory=ViewsSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    ema: EMASpec = field(default_factory=EMASpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    source: str = ""

    def validate(self) -> None:
        """Cross-field checks."""
        if not self.teachers:
            raise ConfigError("teachers: give at least one teacher")
        if self.recipe != "expert" and len(self.teachers) != 1:
            raise ConfigError(f"recipe {self.recipe} takes exactly one teacher")
        if self.data.tile_px % 14:
            raise ConfigError(f"data.tile_px {self.data.tile_px} is not a multiple of 14")
        if self.recipe == "xmag":
            k = self.data.low_mpp / self.data.high_mpp
            if abs(k - round(k)) > 1e-6 or round(k) < 2:
                raise ConfigError(
                    f"data.low_mpp / data.high_mpp = {k:g}: must be an integer >= 2 (e.g. 2.0/0.5)"
                )
        if not 0 <= self.data.holdout < 1:
            raise ConfigError(f"data.holdout {self.data.holdout} must be in [0, 1)")
        if self.train.steps < 1 or self.train.batch_size < 1 or self.optim.accumulate < 1:
            raise ConfigError("train.steps, train.batch_size and optim.accumulate must be >= 1")
        if self.views.fixed_views < 1 or self.views.global_crops < 1:
            raise ConfigError("views.fixed_views and views.global_crops must be >= 1")
        if self.train.keep_checkpoints < 1:
            raise ConfigError("train.keep_checkpoints must be >= 1")
        if self.train.num_workers < 0:
            raise ConfigError(f"train.num_workers {self.train.num_workers} must be >= 0")
        lo = self.loss
        tr = self.train
        if tr.strategy == "fsdp":
            raise ConfigError(
                'train.strategy = "fsdp": FSDP is not supported; edgepath trains with DDP '
                "(a frozen teacher of up to 1.1 B parameters and the student fit on one GPU: "
                'docs/distill.md, Strategy); set train.strategy = "ddp"'
            )
        if tr.metric_calibration and self.recipe != "xmag":
            raise ConfigError(
                f"train.metric_calibration is an xmag option; recipe {self.recipe} does not use it"
            )
        if tr.calibration_items < 16 or tr.calibration_steps < 1 or not tr.calibration_temp > 0:
            raise ConfigError(
                "train.calibration_items must be >= 16, train.calibration_steps >= 1 and "
                "train.calibration_temp > 0"
            )
        for key in ("student_temp", "teacher_temp", "teacher_temp_start", "frozen_head_temp"):
            if not getattr(lo, key) > 0:
                raise ConfigError(
                    f"loss.{key} {getattr(lo, key)} must be > 0 (a softmax temperature)"
                )


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> RecipeCard:
    """Load a recipe card and apply ``key=value`` overrides (dotted keys, TOML values).

    ``optim.lr=1e-3``, ``train.steps=300``, ``student.name="vit-mini14"`` (quotes optional for
    strings), ``teachers=[{card="tiny-teacher"}]``.
    """
    from edgepath import cards

    card = cards.load("distill", name_or_path)
    return apply_overrides(card, overrides or [])


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, quotes included (for ``KEY=VALUE`` overrides)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def teachers_override(cards: tuple[str, ...] | list[str], weights: tuple[str, ...] = ()) -> str:
    """The ``teachers=[...]`` override that replaces a recipe's teachers (``weights``: one
    checkpoint per card, in order, or none)."""
    if weights and len(weights) != len(cards):
        raise ConfigError("give one --teacher-weights per --teacher, in the same order")
    refs = [
        f"{{card = {toml_string(c)}, weights = {toml_string(weights[i] if weights else '')}}}"
        for i, c in enumerate(cards)
    ]
    return f"teachers=[{', '.join(refs)}]"


def apply_overrides(card: RecipeCard, overrides: list[str]) -> RecipeCard:
    """A copy of ``card`` with dotted ``key=value`` overrides applied and re-validated."""
    from edgepath.cards import from_dict, to_dict

    if not overrides:
        return card
    data = to_dict(card)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. optim.lr=1e-3")
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override '{item}': '{p}' is not a table of the recipe")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(
                f"override '{item}': unknown key '{key}'; expected one of: {', '.join(node)}"
            )
        node[parts[-1]] = _parse_value(value.strip())
    new = from_dict(RecipeCard, data, source=Path(f"<overrides of {card.name}>"))
    new.validate()
    return new


def to_toml(card: RecipeCard) -> str:
    """The resolved recipe as TOML (written next to the student as ``recipe.toml``)."""
    from edgepath.cards import to_dict

    data = to_dict(card)
    lines: list[str] = []

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return toml_string(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    for k, v in data.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {val(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {val(x)}" for kk, x in v.items())
    return "\n".join(lines) + "\n"


def replace(card: RecipeCard, **sections: dict[str, Any]) -> RecipeCard:
    """``card`` with fields of nested sections replaced, e.g. ``replace(c, train={"steps": 5})``."""
    kwargs = {}
    for name, values in sections.items():
        current = getattr(card, name)
        kwargs[name] = (
            dataclasses.replace(current, **values) if dataclasses.is_dataclass(current) else values
        )
    new = dataclasses.replace(card, **kwargs)
    new.validate()
    return new
