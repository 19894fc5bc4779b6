"""Wall time per phase of a training step (data, teacher, student, loss, backward, optimizer).

The trainer brackets each phase of a step with ``timer.phase(name)``; by default the timer is
:data:`NO_TIMER`, which costs nothing. ``edgepath bench distill`` passes a :class:`PhaseTimer`,
which synchronises CUDA at each phase boundary (so a phase is charged for its own kernels, not
the ones queued before it) and keeps one record per step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch


class NoTimer:
    """Times nothing (the default of a training run)."""

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A context that does nothing."""
        return contextlib.nullcontext()

    def once(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A context that does nothing."""
        return contextlib.nullcontext()

    def start(self) -> None:
        """Nothing to start."""

    def end_step(self) -> None:
        """Nothing to close."""


NO_TIMER = NoTimer()


class PhaseTimer(NoTimer):
    """Seconds per phase, one dict per finished step (``steps``), and of the one-off work
    before the first step (``setup``, e.g. ``cache_build``)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.steps: list[dict[str, float]] = []
        self.setup: dict[str, float] = {}
        self._current: dict[str, float] = {}
        self._t_step = time.perf_counter()

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def _timed(self, sink: dict[str, float], name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            sink[name] = sink.get(name, 0.0) + time.perf_counter() - t0

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Add the wall time of the block to ``name`` in this step's record."""
        return self._timed(self._current, name)

    def once(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Add the wall time of a one-off block to ``setup[name]``."""
        return self._timed(self.setup, name)

    def start(self) -> None:
        """The first step starts now."""
        self._sync()
        self._current, self._t_step = {}, time.perf_counter()

    def end_step(self) -> None:
        """Close this step's record; ``total`` is the step's whole wall time."""
        self._sync()
        now = time.perf_counter()
        self._current["total"] = now - self._t_step
        self.steps.append(self._current)
        self._current, self._t_step = {}, now
