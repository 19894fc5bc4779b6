"""Teachers, students and artifacts behind one ``Encoder`` interface (torch imported lazily)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgepath.models.cards import TeacherCard
    from edgepath.models.encoder import Encoder

__all__ = ["load_model", "load_teacher"]


def load_teacher(
    card: TeacherCard | str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
) -> Encoder:
    """A teacher as an ``Encoder``; see ``edgepath.models.loading.load_teacher``."""
    from edgepath.models.loading import load_teacher as _load

    return _load(card, weights=weights, random_weights=random_weights)


def load_model(
    ref: str | os.PathLike[str] | TeacherCard,
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
) -> tuple[Encoder, dict[str, Any]]:
    """Artifact folder, teacher card or student name -> ``(Encoder, info)``.

    See ``edgepath.models.loading.load_model``.
    """
    from edgepath.models.loading import load_model as _load

    return _load(ref, weights=weights, random_weights=random_weights)
