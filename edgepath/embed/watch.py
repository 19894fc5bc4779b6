"""Watch a scanner's output folder: embed each slide once, after it has stopped growing.

Scanners write a slide over minutes. A file is *settled* once its size and modification time
have not changed for ``settle`` seconds; only then is it embedded, once. A file that changes
afterwards (a rescan under the same name) is considered again; the resume key then decides
whether its features are recomputed. Bad slides are logged and not retried until they change.
A full or read-only output folder is not a slide's fault: the slide stays pending and is retried
with back-off until the folder takes files again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgepath.embed.jobs import SLIDE_SUFFIXES
from edgepath.embed.run import Embedder, Interrupted, SlideResult, Summary
from edgepath.errors import OutputError

log = logging.getLogger(__name__)

#: Seconds before the first retry after the output folder refused a file (read-only, full);
#: doubled after each refusal up to ``RETRY_MAX_S``.
RETRY_S = 60.0
RETRY_MAX_S = 300.0

#: Results a watch keeps for its summary (older slides stay in its counts only).
KEEP_RESULTS = 1000

#: Names scanners and copy tools give files still being written.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".filepart", ".copying")


@dataclass
class _State:
    size: int
    mtime_ns: int
    since: float  # monotonic time this (size, mtime) was first seen


class Inbox:
    """Tracks the files of a folder and tells which have settled and are not yet handled.

    Args:
        folder: The folder the scanner writes to (not searched recursively).
        settle: Seconds a file's size and mtime must stay unchanged.
        suffixes: Slide file suffixes to consider (lower case).
        clock: Monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        settle: float,
        suffixes: tuple[str, ...] = SLIDE_SUFFIXES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = Path(folder)
        self.settle = settle
        self.suffixes = suffixes
        self.clock = clock
        self._seen: dict[Path, _State] = {}
        self._handled: dict[Path, tuple[int, int]] = {}

    def _candidates(self) -> list[Path]:
        out = []
        for p in self.folder.iterdir():
            name = p.name.lower()
            if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES):
                continue
            if p.suffix.lower() in self.suffixes and p.is_file():
                out.append(p)
        return sorted(out)

    def ready(self) -> list[Path]:
        """Settled files not handled yet (in name order)."""
        now = self.clock()
        ready = []
        present = set()
        for p in self._candidates():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            present.add(p)
            sig = (st.st_size, st.st_mtime_ns)
            state = self._seen.get(p)
            if state is None or (state.size, state.mtime_ns) != sig:
                self._seen[p] = _State(st.st_size, st.st_mtime_ns, now)
                if state is not None:
                    log.debug("%s is still growing (%d bytes)", p.name, st.st_size)
                continue
            if st.st_size == 0 or self._handled.get(p) == sig:
                continue
            if now - state.since >= self.settle:
                ready.append(p)
        for gone in set(self._seen) - present:  # removed or renamed: forget it
            self._seen.pop(gone, None)
            self._handled.pop(gone, None)
        return ready

    def mark_handled(self, path: Path) -> None:
        """Do not offer ``path`` again unless it changes."""
        state = self._seen.get(path)
        if state is not None:
            self._handled[path] = (state.size, state.mtime_ns)


def watch(
    embedder: Embedder,
    inbox: str | os.PathLike[str],
    *,
    poll: float = 5.0,
    settle: float = 30.0,
    on_result: Callable[[SlideResult], None] | None = None,
    max_slides: int | None = None,
    retry: float = RETRY_S,
) -> Summary:
    """Embed settled slides from ``inbox`` until ``embedder.request_stop()`` (or ``max_slides``).

    When the output folder refuses a file (read-only, disk full), the error is logged, the slide
    stays pending and is tried again after ``retry`` seconds (doubling up to ``RETRY_MAX_S``):
    the watch goes on by itself once the folder takes files again.

    Args:
        embedder: The run's embedder (engine, readers, output folder).
        inbox: Folder to watch.
        poll: Seconds between scans.
        settle: Seconds a file must stay unchanged before it is embedded.
        on_result: Called with each slide's result (the CLI prints one line per slide).
        max_slides: Stop after this many slides were handled (tests, one-shot jobs).
        retry: Seconds before retrying after an output folder fault.

    Returns:
        The summary of the session: counts of every slide handled, the last ``KEEP_RESULTS``
        results.
    """
    box = Inbox(inbox, settle=settle)
    summary = Summary()
    busy: set[Path] = set()
    t0 = time.perf_counter()
    backoff = retry
    handled = 0
    log.info("watching %s (poll %.1f s, settle %.1f s)", inbox, poll, settle)
    try:
        while not embedder.stopping:
            pause = poll
            try:
                ready = box.ready()
            except OSError as exc:  # an unmounted share, a folder being replaced: wait it out
                log.warning("cannot list %s (%s); retrying in %.0f s", inbox, exc, poll)
                ready = []
            for path in ready:
                if embedder.stopping:
                    break
                try:
                    result = embedder.process(path)
                except OutputError as exc:  # not the slide's fault: it stays pending
                    log.error("%s; %s is tried again in %.0f s", exc, path.name, backoff)
                    pause, backoff = backoff, min(2 * backoff, max(retry, RETRY_MAX_S))
                    break
                backoff = retry
                if result.status == "busy":  # another process has it: look again later
                    if path in busy:
                        continue
                    busy.add(path)
                else:
                    box.mark_handled(path)
                    busy.discard(path)
                summary.results.append(result)
                summary.retire(KEEP_RESULTS)
                if on_result is not None:
                    on_result(result)
                handled += 1
                if max_slides is not None and handled >= max_slides:
                    embedder.request_stop()
            deadline = time.monotonic() + pause
            while not embedder.stopping and time.monotonic() < deadline:
                time.sleep(min(0.2, pause))
    except Interrupted as exc:
        log.info("%s", exc)
    summary.interrupted = True
    summary.seconds = time.perf_counter() - t0
    return summary
