"""Student architectures by name, from student cards: DINOv2-configured ViT/14s with 4 registers.

Students are referred to by these names from distillation recipes and ``edgepath bench``. Each
is a card in ``students/`` (``edgepath cards list students``): a timm model name, its token
width and kwargs. Every student has DINOv2's token layout (CLS at 0, 4 registers, patch 14);
its input spec (tile px, mpp, mean/std) comes from the recipe, not from the architecture. Your
own students go in ``DIR/students/`` of a ``--cards-dir`` / ``$EDGEPATH_CARDS`` folder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgepath import cards
from edgepath.errors import ConfigError
from edgepath.models.cards import (
    Architecture,
    EmbeddingDefinition,
    EmbeddingSpec,
    EncoderSpec,
    InputSpec,
    TokenLayout,
)


@dataclass(frozen=True)
class StudentArch:
    """A named student architecture (timm model + kwargs) and its token width: a student card."""

    timm_name: str
    width: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    name: str = ""


_DINOV2 = {"reg_tokens": 4, "class_token": True, "no_embed_class": True}


class _Students(Mapping[str, StudentArch]):
    """The student cards by name (shipped, then the user's), read when asked for."""

    def __getitem__(self, name: str) -> StudentArch:
        paths = cards.card_paths("students")
        if name not in paths:
            raise KeyError(name)
        return cards.load("students", paths[name])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in cards.card_paths("students")

    def __iter__(self) -> Iterator[str]:
        return iter(cards.card_paths("students"))

    def __len__(self) -> int:
        return len(cards.card_paths("students"))

    def __repr__(self) -> str:
        return f"STUDENTS({', '.join(self)})"


#: Named students (``vit-s14``, ``vit-b14``, ``vit-b14-swiglu``, ``vit-t14``, ``vit-mini14`` and
#: the user's student cards), name -> :class:`StudentArch`.
STUDENTS: Mapping[str, StudentArch] = _Students()


def student_spec(
    name: str,
    *,
    input: InputSpec,
    embedding: EmbeddingDefinition = "cls",
) -> EncoderSpec:
    """The encoder spec of a named student at the recipe's input spec.

    Args:
        name: One of ``STUDENTS``.
        input: Tile px, mpp and mean/std (usually the teacher's normalisation).
        embedding: ``cls`` or ``cls+mean_patch``.
    """
    try:
        arch = STUDENTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown student '{name}'; expected one of: {', '.join(STUDENTS)} "
            f"(add your own with --cards-dir or ${cards.ENV_VAR})"
        ) from None
    dim = arch.width * (2 if embedding == "cls+mean_patch" else 1)
    return EncoderSpec(
        architecture=Architecture(
            name=arch.timm_name, library="timm", kwargs={**_DINOV2, **arch.kwargs}
        ),
        input=input,
        tokens=TokenLayout(patch_size=14, cls_index=0, num_registers=4),
        embedding=EmbeddingSpec(definition=embedding, dim=dim),
    )
