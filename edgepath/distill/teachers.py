"""The frozen teachers of a run: loaded from their cards, eval mode, no grad, own preprocessing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgepath.distill.views import resize
from edgepath.models.cards import TeacherCard
from edgepath.models.encoder import Encoder, Tokens
from edgepath.models.preprocess import standardize
from edgepath.models.resolver import ModelHandle

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    """One loaded teacher: encoder, card, resolved model (identity ``sha256``, ``random_weights``),
    weight."""

    encoder: Encoder
    card: TeacherCard
    model: ModelHandle
    weight: float = 1.0

    @property
    def token_dim(self) -> int:
        """Width of the teacher's tokens."""
        return self.encoder.token_dim

    @property
    def embed_dim(self) -> int:
        """Dimension of the teacher card's embedding."""
        return self.encoder.embed_dim

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> tuple[Tokens, torch.Tensor]:
        """Tokens and card embedding of float [0, 1] NCHW images (resized, normalised per card)."""
        inp = self.card.input
        x = standardize(resize(x, inp.tile_px), inp.mean, inp.std)
        device = next(self.encoder.parameters()).device
        x = x.to(device)
        with _autocast(device):
            tok = self.encoder.forward_tokens(x)
        tok = Tokens(tok.cls.float(), tok.registers.float(), tok.patches.float())
        return tok, Encoder.pool(tok, self.card.embedding.definition)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def load_teachers(
    refs, *, device: torch.device | str = "cpu", random_weights: bool = False
) -> list[Teacher]:
    """Load the recipe's teachers (``TeacherRef``s), frozen, in eval mode, on ``device``.

    ``random_weights``: a teacher without weights gets seeded random ones (speed measurements;
    ``model.random_weights`` says so).
    """
    from edgepath.models import resolve
    from edgepath.models.loading import as_card

    out = []
    for ref in refs:
        card = as_card(ref.card)
        model = resolve(card, weights=ref.weights or None, random_weights=random_weights)
        enc = model.require_encoder().eval().to(device)
        for p in enc.parameters():
            p.requires_grad_(False)
        log.info(
            "teacher %s (%s)%s",
            card.name,
            model.sha256[:12],
            " stand-in" if card.stand_in else (" random weights" if model.random_weights else ""),
        )
        out.append(Teacher(enc, card, model, ref.weight))
    return out


def resample_grid(patches: torch.Tensor, side: int) -> torch.Tensor:
    """(B, N, D) row-major patch tokens resampled (bilinear) to a side x side grid."""
    b, n, d = patches.shape
    g = int(round(n**0.5))
    if g == side:
        return patches
    x = patches.transpose(1, 2).reshape(b, d, g, g)
    x = F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False)
    return x.reshape(b, d, side * side).transpose(1, 2)
