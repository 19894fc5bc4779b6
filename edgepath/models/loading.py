"""Load teachers, students and artifacts as ``Encoder``s: strict keys, no silent random weights."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgepath.models.cards import EncoderSpec, InputSpec, TeacherCard
    from edgepath.models.encoder import Encoder

log = logging.getLogger(__name__)

#: Input spec of a bare student name (``resolve("vit-s14")``): 224 px at 0.5 mpp, ImageNet
#: mean/std. Distilled students carry their teacher's input spec in their manifest instead.
DEFAULT_STUDENT_INPUT = (224, 0.5, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def as_card(card: TeacherCard | str | os.PathLike[str]) -> TeacherCard:
    """A ``TeacherCard`` from a card, a card name or a ``.toml`` path."""
    from edgepath import cards
    from edgepath.models.cards import TeacherCard

    if isinstance(card, TeacherCard):
        return card
    return cards.load("teachers", card)


def seed_for(name: str) -> int:
    """A stable seed per model name (stand-ins and random students are reproducible)."""
    return zlib.crc32(name.encode())


def random_encoder(spec: EncoderSpec, *, seed: int) -> Encoder:
    """An ``Encoder`` with seeded random weights, in eval mode."""
    import torch

    from edgepath.models.encoder import build_encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_encoder(spec).eval()


def _empty_backbone(spec: EncoderSpec) -> nn.Module:
    """The backbone with uninitialised CPU storage (no random init: 1 B params load fast)."""
    import torch

    from edgepath.models.encoder import build_backbone

    with torch.device("meta"):
        model = build_backbone(spec)
    persistent = set(model.state_dict())
    if any(n not in persistent for n, _ in model.named_buffers()):
        return build_backbone(spec)  # non-persistent buffers need their real init
    return model.to_empty(device="cpu")


def load_state(
    backbone: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    prefix: str = "",
    what: str = "the model",
) -> None:
    """Load ``state`` into ``backbone`` strictly, after prefix stripping and layout conversion.

    Raises:
        WeightsMismatchError: Missing or unexpected keys, or shapes that differ; one line with
            counts and the first names of each.
    """
    from edgepath.models import convert
    from edgepath.models.weights import WeightsMismatchError, match_report, strip_prefix, summary

    reference = backbone.state_dict()
    state, used = strip_prefix(state, set(reference), prefix=prefix)
    state, layout = convert.to_timm(state, backbone)
    if layout != "timm":
        log.info("%s: converted %s checkpoint keys to timm", source, layout)
    state = convert.resample_pos_embed(state, backbone)
    missing, unexpected, shapes = match_report(state, reference)
    if missing or unexpected or shapes:
        stripped = f" after stripping '{used}'" if used else ""
        raise WeightsMismatchError(
            f"{source}: weights do not match {what}{stripped}: "
            f"{summary(missing, unexpected, shapes)}; pass the checkpoint this card describes "
            "or fix the card's architecture"
        )
    backbone.load_state_dict(state, strict=True, assign=False)


def files_sha256(paths: list[Path]) -> str:
    """SHA-256 of the weight files (Hugging Face cache blobs are named by it: not re-hashed)."""
    from edgepath.io import sha256_file

    digests = []
    for p in paths:
        blob = Path(os.path.realpath(p)).name
        digests.append(blob if re.fullmatch(r"[0-9a-f]{64}", blob) else sha256_file(p))
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def state_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's tensors (for random weights, which have no file)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_teacher_weights(
    card: TeacherCard, *, weights: str | os.PathLike[str] | None, random_weights: bool
) -> tuple[Encoder, bool, str, list[Path]]:
    """A teacher's ``Encoder`` and its provenance: ``(encoder, random_weights, weights_sha256,
    files)``. Stand-ins and ``random_weights`` get seeded random weights (hashed by tensor)."""
    from edgepath.models.encoder import Encoder
    from edgepath.models.weights import locate, read_checkpoint

    if card.stand_in or random_weights:
        if weights is not None and card.stand_in:
            log.info("%s is a stand-in card: --weights ignored", card.name)
        if weights is None or card.stand_in:
            enc = random_encoder(card.spec, seed=seed_for(card.name))
            log.info(
                "%s: seeded random weights (%s)",
                card.name,
                "stand-in" if card.stand_in else "random_weights=True",
            )
            return enc, True, state_sha256(enc), []
    paths = locate(card, weights)
    log.info("loading %s from %s", card.name, ", ".join(map(str, paths)))
    backbone = _empty_backbone(card.spec)
    src = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} shards)"
    load_state(
        backbone,
        read_checkpoint(paths),
        source=src,
        prefix=card.weights.strip_prefix,
        what=f"teacher '{card.name}' ({card.architecture.name})",
    )
    return Encoder(backbone, card.spec).eval(), False, files_sha256(paths), list(paths)


def load_teacher(
    card: TeacherCard | str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
) -> Encoder:
    """A teacher as an ``Encoder`` in eval mode, preprocessing and embedding from its card.

    Args:
        card: A ``TeacherCard``, a card name (``uni2-h``) or a ``.toml`` path.
        weights: A checkpoint file or folder; default: ``$EDGEPATH_WEIGHTS_<NAME>``, the
            Hugging Face cache, then the Hub when online (see ``edgepath.models.weights``).
        random_weights: Seeded random weights instead (architecture checks, dry runs).
            Stand-in cards (``tiny-teacher``) always get seeded random weights.

    Raises:
        MissingWeightsError: No weights found offline (the message says where to put them).
        WeightsMismatchError: A checkpoint whose keys do not match the card.
    """
    return load_teacher_weights(as_card(card), weights=weights, random_weights=random_weights)[0]


def student_input(**overrides: Any) -> InputSpec:
    """The default ``InputSpec`` of a bare student name."""
    from edgepath.models.cards import InputSpec

    tile_px, mpp, mean, std = DEFAULT_STUDENT_INPUT
    return InputSpec(**{"tile_px": tile_px, "mpp": mpp, "mean": mean, "std": std, **overrides})
