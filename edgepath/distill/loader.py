"""Each micro-batch's inputs, built in the main process or by ``train.num_workers`` processes.

The inputs of micro-batch (step, micro) are a pure function of the run's seed, the sample
numbers of that micro-batch and the training items: the fixed views are seeded by (item, view),
the student-only views by (step, slot) (``edgepath.distill.views``). So worker processes can build
them ahead of the training step, in any order, and the trainer receives exactly the tensors it
would have built itself: a run with workers equals one without, bit for bit, and resumes the
same way (tests/distill/test_trainer.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class MicroBatch:
    """One micro-batch's inputs on the host.

    Attributes:
        picks: (item index, fixed view) per sample.
        student: The student's inputs (``student`` and recipe extras, stacked).
        teacher: The teachers' input views, stacked (None when the features come from the cache).
    """

    picks: list[tuple[int, int]]
    student: dict[str, torch.Tensor]
    teacher: torch.Tensor | None

    def pin_memory(self) -> MicroBatch:
        """Page-locked copies (the DataLoader calls this with ``pin_memory=True``)."""
        teacher = self.teacher.pin_memory() if self.teacher is not None else None
        return MicroBatch(self.picks, {k: v.pin_memory() for k, v in self.student.items()}, teacher)


@dataclass
class Inputs:
    """Builds micro-batches: what a worker process needs, and nothing of the models.

    Attributes:
        recipe: The run's recipe (its ``views`` and ``student_extra``).
        source: The training items.
        sampler: Sample number -> (item index, fixed view).
        accumulate: Micro-batches per step.
        global_batch: Samples per micro-batch over all ranks.
        rank: This process's rank.
        world: Number of ranks.
        teacher_views: Build the teachers' views too (no feature cache).
    """

    recipe: Any
    source: Any
    sampler: Any
    accumulate: int
    global_batch: int
    rank: int
    world: int
    teacher_views: bool

    def numbers(self, step: int, micro: int) -> list[int]:
        """This rank's sample numbers in micro-batch (step, micro)."""
        base = (step * self.accumulate + micro) * self.global_batch
        return list(range(base + self.rank, base + self.global_batch, self.world))

    def build(self, step: int, micro: int) -> MicroBatch:
        """The inputs of micro-batch (step, micro)."""
        numbers = self.numbers(step, micro)
        recipe, source = self.recipe, self.source
        picks = [self.sampler(n) for n in numbers]
        views = [
            recipe.views(source, i, source.train[i], v, teacher=self.teacher_views)
            for i, v in picks
        ]
        student = {"student": torch.stack([v["student"] for v in views])}
        extra = [
            recipe.student_extra(source, source.train[i], step=step, slot=n)
            for (i, _), n in zip(picks, numbers, strict=True)
        ]
        if extra and extra[0]:
            for k in extra[0]:
                student[k] = torch.stack([e[k] for e in extra])
        teacher = torch.stack([v["teacher"] for v in views]) if self.teacher_views else None
        return MicroBatch(picks, student, teacher)


class _Steps(torch.utils.data.Dataset):
    """Micro-batch number k = step * accumulate + micro, for a DataLoader's workers."""

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs

    def __getitem__(self, k: int) -> MicroBatch:
        return self.inputs.build(*divmod(k, self.inputs.accumulate))


def micro_batches(
    inputs: Inputs, start: int, end: int, *, workers: int, pin_memory: bool = False
) -> Iterator[MicroBatch]:
    """The micro-batches of steps ``start`` .. ``end``, in order.

    Args:
        inputs: What builds them.
        start: First step (a resumed run's).
        end: Step to stop before.
        workers: ``train.num_workers``: 0 builds each in the main process when it is needed;
            N > 0 has N processes build them ahead (two each in flight).
        pin_memory: Page-locked host tensors (faster copies to a CUDA device).
    """
    if workers == 0:
        for step in range(start, end):
            for micro in range(inputs.accumulate):
                yield inputs.build(step, micro)
        return
    loader = torch.utils.data.DataLoader(
        _Steps(inputs),
        batch_size=None,
        sampler=range(start * inputs.accumulate, end * inputs.accumulate),
        num_workers=workers,
        prefetch_factor=2,
        pin_memory=pin_memory,
        # the workers' base seed comes from this generator, not from torch's global RNG, whose
        # state the training step uses (drop-path) and checkpoints save
        generator=torch.Generator().manual_seed(0),
        collate_fn=_identity,
    )
    yield from loader


def _identity(x: MicroBatch) -> MicroBatch:
    return x
