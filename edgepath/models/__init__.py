"""Teachers, students and artifacts behind one ``Encoder`` interface (torch imported lazily).

``resolve(ref)`` turns any model reference into a ``ModelHandle`` (see ``edgepath.models.resolver``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgepath.models.cards import TeacherCard
    from edgepath.models.encoder import Encoder
    from edgepath.models.resolver import ModelHandle

__all__ = ["load_teacher", "resolve"]


def load_teacher(
    card: TeacherCard | str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
) -> Encoder:
    """A teacher as an ``Encoder``; see ``edgepath.models.loading.load_teacher``."""
    from edgepath.models.loading import load_teacher as _load

    return _load(card, weights=weights, random_weights=random_weights)


def resolve(
    ref: str | os.PathLike[str] | TeacherCard,
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
) -> ModelHandle:
    """Artifact folder, teacher card or ``student[@mpp]`` -> ``ModelHandle``.

    See ``edgepath.models.resolver.resolve``.
    """
    from edgepath.models.resolver import resolve as _resolve

    return _resolve(ref, weights=weights, random_weights=random_weights)
