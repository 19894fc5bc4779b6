"""Worker processes that read, decode and normalise tiles into shared memory, ahead of inference.

The main process runs the engine; ``workers`` processes each take a batch of tile coordinates,
read the tiles through ``edgepath.slides`` (OpenSlide decodes the JPEG/JPEG 2000 tiles), apply the
model's normalisation and write float32 NCHW straight into one of a few shared-memory slots. The
main process only hands out slots and feeds ready slots to the engine, in order, so reading the
next batches overlaps with inference on the current one and no pixel data goes through a pipe.

Resources are bounded and released: each worker talks to the main process over its own pipe
(no named semaphores, which ``multiprocessing.Queue`` leaves in /dev/shm when killed) and exits
when that pipe closes, however the main process ended; the slots are named after the process
(``edgepath-<pid>-...``) and unlinked on ``close()``, on errors and on stops, and the slots of a
process killed with SIGKILL are removed by the next reader pool on the same host.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import secrets
import socket
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import EdgepathError, SlideReadError

log = logging.getLogger(__name__)

#: Slide handles a worker keeps open (slides are read one after another).
_HANDLE_CACHE = 2
_POLL_S = 0.5

#: Shared-memory names: ``edgepath-<pid>-<host tag>-<random>`` (30 characters at most, the
#: macOS limit), so that what a killed process left in /dev/shm can be told and removed.
SHM_PREFIX = "edgepath-"
SHM_DIR = Path("/dev/shm")
_HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"


@dataclass(frozen=True)
class Preprocess:
    """How tiles become engine input: where to read them and how to normalise them."""

    mpp: float
    tile_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    slide_mpp: float | None = None
    uint8: bool = False  # raw uint8 NHWC for engines with preprocessing fused into the graph

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one tile as the engine takes it."""
        px = self.tile_px
        return (px, px, 3) if self.uint8 else (3, px, px)

    @property
    def dtype(self) -> type:
        """Dtype of the engine input."""
        return np.uint8 if self.uint8 else np.float32

    def scale_offset(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``x * scale + offset`` equal to ``(x / 255 - mean) / std``."""
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


class _Handles:
    """A tiny cache of open slides (per process), keyed by the file as it is now.

    The key holds the file's inode, size and mtime besides its path: a slide rescanned under the
    same name (``edgepath watch`` embeds it again) gets a fresh handle, not the old file's.
    """

    def __init__(self) -> None:
        self._open: dict[tuple[Any, ...], Any] = {}
        self._first = -1  # grid index of the first tile of the last call's batch

    def get(self, path: str, slide_mpp: float | None, first: int = 0) -> Any:
        """The open slide at ``path``; ``first`` is the grid index of the batch's first tile."""
        from edgepath.slides import open_slide

        try:
            st = os.stat(path)
            key: tuple[Any, ...] = (path, slide_mpp, st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = (path, slide_mpp)  # open_slide says what is wrong
        last, self._first = self._first, first
        if self._open and next(reversed(self._open)) == key:  # the slide of the last call
            if first <= last:  # read again from its start: the rows kept are not the next
                self._open[key].clear_cache()
            return self._open[key]
        slide = self._open.pop(key, None)
        if slide is None:
            self.drop(path)
            while len(self._open) >= _HANDLE_CACHE:  # least recently used out
                with contextlib.suppress(Exception):
                    self._open.pop(next(iter(self._open))).close()
            slide = open_slide(path, mpp=slide_mpp)
        # slides are read one after another: the one before is done, and the TIFF tiles it
        # kept decoded for its next rows (69 MB on a full-size slide) decode this one
        for other in self._open.values():
            other.clear_cache()
        self._open[key] = slide  # most recently used last
        return slide

    def drop(self, path: str) -> None:
        """Close the handles of ``path``: after a read error OpenSlide's handle stays in error
        (every later read of it fails), so a retry of the same file must reopen it."""
        for key in [k for k in self._open if k[0] == path]:
            with contextlib.suppress(Exception):
                self._open.pop(key).close()

    def close(self) -> None:
        for s in self._open.values():
            with contextlib.suppress(Exception):
                s.close()
        self._open.clear()


def fill(
    out: np.ndarray,
    slide: Any,
    coords: np.ndarray,
    pre: Preprocess,
    scale: np.ndarray,
    offset: np.ndarray,
    *,
    first: int = 0,
    scratch: np.ndarray | None = None,
    timing: dict[str, float] | None = None,
) -> None:
    """Read ``coords`` from ``slide`` into ``out[: len(coords)]`` as the engine takes them.

    Tiles come from ``Slide.read_batch`` (tifffile + imagecodecs where the file allows, each
    TIFF tile decoded once), straight into ``out`` for uint8 engines, else into ``scratch``
    (uint8, at least ``len(coords)`` tiles) and normalised from there.

    Raises:
        SlideReadError: A tile cannot be read or decoded; the message names the slide, the
            tile's index in the slide's grid (``first`` is the index of ``coords[0]``) and its
            level-0 position.
    """
    import time

    n = len(coords)
    raw = out[:n] if pre.uint8 else None
    if raw is None:
        if scratch is None or len(scratch) < n:
            scratch = np.empty((n, pre.tile_px, pre.tile_px, 3), dtype=np.uint8)
        raw = scratch[:n]
    try:
        slide.read_batch(coords, mpp=pre.mpp, tile_px=pre.tile_px, out=raw, timing=timing)
    except Exception:  # name the tile: read them one by one up to the bad one
        for i, (x0, y0) in enumerate(coords):
            try:
                slide.read_batch(coords[i : i + 1], mpp=pre.mpp, tile_px=pre.tile_px)
            except Exception as exc:
                raise tile_error(str(slide.path), first + i, int(x0), int(y0), exc) from None
        raise
    if pre.uint8:
        return
    t0 = time.perf_counter()
    for i in range(n):
        chw = raw[i].transpose(2, 0, 1)
        np.multiply(chw, scale, out=out[i], casting="unsafe")
        out[i] += offset
    if timing is not None:
        timing["normalise"] = timing.get("normalise", 0.0) + time.perf_counter() - t0


def tile_error(path: str, index: int, x0: int, y0: int, exc: BaseException) -> SlideReadError:
    """A ``SlideReadError`` naming the slide, the tile (index, level-0 x/y) and the cause."""
    cause = str(exc).strip()
    if cause.startswith(f"{path}: "):  # the slide reader's own message names the slide too
        cause = cause[len(path) + 2 :]
    elif not isinstance(exc, SlideReadError):
        cause = f"{type(exc).__name__}: {cause}"
    return SlideReadError(f"{path}: tile {index} at level-0 x={x0}, y={y0}: {cause}")


def _shm_name() -> str:
    return f"{SHM_PREFIX}{os.getpid()}-{_HOST_TAG}-{secrets.token_hex(3)}"


def sweep_shm(folder: Path | None = None) -> list[str]:
    """Remove the reader slots of processes of this host that are gone.

    A reader pool unlinks its slots on ``close()``, which runs on SIGTERM, SIGINT and errors,
    and Python's resource tracker unlinks them when the process is killed. SIGKILL to the whole
    process group (systemd's stop timeout, ``kill -9 -- -PGID``) kills the tracker as well,
    and the slots (``batch`` tiles of float32 each) stayed in /dev/shm, in memory, until reboot.

    Returns:
        The names removed.
    """
    from edgepath.embed.lock import pid_alive

    folder = SHM_DIR if folder is None else folder
    removed: list[str] = []
    if not folder.is_dir():  # no /dev/shm to list (not Linux)
        return removed
    for f in folder.glob(f"{SHM_PREFIX}*"):
        pid, _, rest = f.name[len(SHM_PREFIX) :].partition("-")
        if not pid.isdigit() or not rest.startswith(f"{_HOST_TAG}-") or pid_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            f.unlink()
            removed.append(f.name)
    if removed:
        log.info("removed %d shared-memory slot(s) of killed runs", len(removed))
    return removed


def _worker(conn: Any, shm_names: list[str], shape: tuple[int, ...], pre: Preprocess) -> None:
    """Worker loop: read a batch into its slot, report ``(slot, seq, n, error)`` on ``conn``."""
    import signal
    from multiprocessing import shared_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    shms = [shared_memory.SharedMemory(name=n) for n in shm_names]
    bufs = [np.ndarray(shape, dtype=pre.dtype, buffer=s.buf) for s in shms]
    scale, offset = pre.scale_offset()
    scratch = None if pre.uint8 else np.empty((shape[0], *pre.shape[1:], 3), dtype=np.uint8)
    handles = _Handles()
    import edgepath.slides  # noqa: F401  (import cost paid before the first batch)
    from edgepath.slides.pyramid import preload_decoders

    preload_decoders()

    try:
        conn.send(("ready", os.getpid(), 0, None))
        for buf in bufs:  # while the main process tiles the first slide
            map_pages(buf)
        while (task := conn.recv()) is not None:
            slot, seq, path, slide_mpp, first, coords, row0 = task
            try:
                slide = handles.get(path, slide_mpp, first)
                out = bufs[slot][row0:]
                fill(out, slide, coords, pre, scale, offset, first=first, scratch=scratch)
                reply = (slot, seq, len(coords), None)
            except Exception as exc:  # reported to the main process, which fails the slide
                handles.drop(path)
                msg = str(exc) if isinstance(exc, EdgepathError) else f"{path}: {_one_line(exc)}"
                reply = (slot, seq, 0, msg)
            conn.send(reply)
    except (EOFError, OSError):  # the main process is gone, however it ended: exit too
        pass
    finally:
        handles.close()
        del bufs
        for s in shms:
            s.close()
        conn.close()


def map_pages(buf: np.ndarray) -> None:
    """Map ``buf``'s shared-memory pages into this process by reading one byte of each.

    Each reader process faulted the slots' pages in one by one on its first writes, ~10,000
    faults for 9 slots of 32 tiles: the first slide read ~5 % slower than the next. Reading
    (never writing: another reader may be filling a slot already) maps them in groups (the
    kernel's fault-around) and writable, as tmpfs needs no write notification.
    """
    import mmap

    flat = buf.reshape(-1).view(np.uint8)
    int(flat[:: mmap.PAGESIZE].max(initial=0))


class _WorkerDied(Exception):
    """A reader process exited while it had work (its pipe closed)."""


class TileReader:
    """Reads a slide's tiles in batches the engine takes, ``workers`` processes ahead.

    Batches are normalised float32 NCHW, or raw uint8 NHWC when ``pre.uint8`` is set.

    Args:
        pre: Tile mpp, size, normalisation and optional slide mpp override.
        batch: Tiles per batch (the engine's batch).
        workers: Reader processes; 0 reads in the calling process (no overlap).
        prefetch: Batches in flight per worker.
    """

    def __init__(self, pre: Preprocess, *, batch: int, workers: int, prefetch: int = 2) -> None:
        self.pre = pre
        self.batch = max(1, int(batch))
        self.workers = max(0, int(workers))
        self.prefetch = max(1, int(prefetch))
        self.shape = (self.batch, *pre.shape)
        self._scale, self._offset = pre.scale_offset()
        n_slots = max(2, self.workers * prefetch + 1) if self.workers else 1
        px = pre.tile_px
        nbytes = int(np.prod(self.shape)) * np.dtype(pre.dtype).itemsize
        self._shms: list[Any] = []
        self._bufs: list[np.ndarray] = []
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._handles = _Handles()
        #: Seconds of decode / copy / resize / normalise of in-process reads (``workers=0``).
        self.timing: dict[str, float] = {}
        self._scratch = None if pre.uint8 else np.empty((self.batch, px, px, 3), dtype=np.uint8)
        if not self.workers:
            self._bufs.append(np.zeros(self.shape, dtype=pre.dtype))  # padding rows: finite
            return
        from multiprocessing import shared_memory

        sweep_shm()
        try:
            for _ in range(n_slots):
                s = shared_memory.SharedMemory(name=_shm_name(), create=True, size=nbytes)
                self._shms.append(s)
                self._bufs.append(np.ndarray(self.shape, dtype=pre.dtype, buffer=s.buf))
                # allocate the slot's pages now (tmpfs allocates and zeroes a page on its first
                # write): the workers' first batches then only map them
                self._bufs[-1].fill(0)
            self._start()
        except BaseException:  # workers that cannot start: free the slots now, not at exit
            self.close()
            raise

    @property
    def shm_names(self) -> list[str]:
        """Names of the shared-memory slots (empty without workers)."""
        return [s.name for s in self._shms]

    @property
    def pids(self) -> list[int]:
        """Process ids of the reader workers."""
        return [p.pid for p in self._procs]

    def _start(self) -> None:
        # spawn: workers never inherit the engine's thread pools or a half-held lock
        ctx = mp.get_context("spawn")
        names = [s.name for s in self._shms]
        for i in range(self.workers):
            mine, theirs = ctx.Pipe(duplex=True)
            p = ctx.Process(
                target=_worker,
                args=(theirs, names, self.shape, self.pre),
                name=f"edgepath-reader-{i}",
                daemon=True,
            )
            self._conns.append(mine)
            try:
                p.start()
            finally:
                theirs.close()  # the worker's end lives in the worker only: its exit is EOF here
            self._procs.append(p)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for every worker's hello, so a worker that cannot start fails here, clearly."""
        import time

        waiting = set(self._conns)
        deadline = time.monotonic() + timeout
        try:
            while waiting:
                for conn in mp_connection.wait(list(waiting), timeout=_POLL_S):
                    if conn.recv()[0] == "ready":
                        waiting.discard(conn)
                if waiting and time.monotonic() > deadline:
                    raise _WorkerDied
        except (_WorkerDied, EOFError, OSError):
            self._stop_workers(graceful=False)
            raise EdgepathError(
                "tile reader processes failed to start; when calling edgepath from a "
                "script, put the calling code under `if __name__ == '__main__':` "
                "(multiprocessing spawn), or pass workers=0"
            ) from None

    def _restart(self) -> None:
        log.warning("restarting tile reader workers")
        self._stop_workers(graceful=False)
        self._start()

    def _send(self, load: list[int], task: tuple[Any, ...], w: int = 0) -> None:
        """Give ``task`` to worker ``w``, always: the worker of the task's tiles (``_stripes``).
        Handing a part to another worker when its own was busy made both decode the same TIFF
        tiles (55 % more decoding in all with 2 workers). Worker queues are first in, first
        out, so the part the main process waits for is never behind a later one."""
        try:
            self._conns[w].send(task)
        except OSError:  # BrokenPipeError: that worker is gone
            raise _WorkerDied from None
        load[w] += 1

    def _receive(self, load: list[int]) -> list[tuple[int, int, int, str | None]]:
        """Replies that arrive within ``_POLL_S`` (maybe none).

        Raises:
            _WorkerDied: A worker's pipe closed (it exited or was killed).
        """
        replies = []
        for conn in mp_connection.wait(self._conns, timeout=_POLL_S):
            try:
                replies.append(conn.recv())
            except (EOFError, OSError):
                raise _WorkerDied from None
            load[self._conns.index(conn)] -= 1
        if not replies and any(not p.is_alive() for p in self._procs):
            raise _WorkerDied
        return replies

    def batches(
        self,
        slide: str | os.PathLike[str],
        coords: np.ndarray,
        *,
        slide_mpp: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        full: bool = False,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, x)`` in order: ``x`` holds the tiles ``coords[start:start + len(x)]``.

        ``x`` is a view of a reusable buffer, valid until the next iteration. ``slide_mpp``
        overrides this slide's level-0 mpp (default: ``pre.slide_mpp``). With ``full``, ``x``
        always has ``batch`` rows: the last batch's rows past the slide's tiles hold stale data
        (the caller uses the first ``min(batch, len(coords) - start)``).

        Raises:
            SlideReadError: A tile could not be read, or a worker died (e.g. a corrupt slide).
        """
        path = str(Path(slide))
        mpp0 = self.pre.slide_mpp if slide_mpp is None else slide_mpp
        starts = list(range(0, len(coords), self.batch))
        if not self.workers:
            for s in starts:
                if should_stop is not None and should_stop():
                    return
                c = coords[s : s + self.batch]
                try:
                    slide_h = self._handles.get(path, mpp0, s)
                    fill(
                        self._bufs[0],
                        slide_h,
                        c,
                        self.pre,
                        self._scale,
                        self._offset,
                        first=s,
                        scratch=self._scratch,
                        timing=self.timing,
                    )
                except Exception:
                    self._handles.drop(path)
                    raise
                yield s, self._bufs[0] if full else self._bufs[0][: len(c)]
            return
        if not self._procs:  # reaped after they died with a stop
            self._start()
        for s, x in self._pooled(path, mpp0, coords, starts, should_stop):
            yield s, x if full else x[: min(self.batch, len(coords) - s)]

    def _pooled(
        self,
        path: str,
        slide_mpp: float | None,
        coords: np.ndarray,
        starts: list[int],
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        free = list(range(len(self._bufs)))
        ready: dict[int, tuple[int, str | None]] = {}
        parts: dict[int, list[Any]] = {}  # seq -> [parts not back yet, first error]
        load = [0] * len(self._conns)  # batch parts in flight per worker
        next_submit = next_yield = 0
        broken = False
        stripes = _stripes(coords, len(self._conns))
        try:
            while next_yield < len(starts):
                while free and next_submit < len(starts):
                    s, slot = starts[next_submit], free.pop()
                    runs = _runs(stripes[s : s + self.batch])
                    parts[next_submit] = [len(runs), None]
                    for a, b, w in runs:
                        c = np.ascontiguousarray(coords[s + a : s + b])
                        self._send(load, (slot, next_submit, path, slide_mpp, s + a, c, a), w)
                    next_submit += 1
                while next_yield not in ready:
                    for slot, seq, _, err in self._receive(load):
                        left = parts[seq]
                        left[0] -= 1
                        left[1] = left[1] or err
                        if left[0] == 0:
                            ready[seq] = (slot, parts.pop(seq)[1])
                slot, err = ready.pop(next_yield)
                if err is not None:
                    free.append(slot)
                    raise SlideReadError(err)
                if should_stop is not None and should_stop():
                    free.append(slot)
                    return
                yield starts[next_yield], self._bufs[slot]
                free.append(slot)
                next_yield += 1
        except _WorkerDied:
            if should_stop is not None and should_stop():
                # SIGTERM to the whole process group (systemd stopping the service, `kill --
                # -PGID`) kills the workers while this process stops gracefully: that is the
                # stop, not a broken slide. It was reported as one, and workers were restarted.
                return
            broken = True
            raise SlideReadError(
                f"{path}: a tile reader process died (corrupt slide or out of memory); the "
                "slide was skipped"
            ) from None
        finally:
            if broken:
                self._restart()
            else:
                self._drain(load, stopping=should_stop is not None and should_stop())

    def _drain(self, load: list[int], *, stopping: bool = False) -> None:
        """Wait for batches still being read (after an error or a stop) so slots are free.

        Dead workers are replaced, unless this is a stop (they died with it): then they are
        reaped, and the next ``batches`` call starts new ones.
        """
        try:
            while sum(load) > 0:
                self._receive(load)
        except _WorkerDied:
            if stopping:
                self._stop_workers(graceful=False)
            else:
                self._restart()

    def _stop_workers(self, *, graceful: bool) -> None:
        if graceful:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.send(None)
            for p in self._procs:
                p.join(timeout=5)
        for p in self._procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        self._procs = []
        for conn in self._conns:
            conn.close()
        self._conns = []

    def close(self) -> None:
        """Stop the workers and free the shared memory."""
        self._handles.close()
        if self._procs or self._conns:
            self._stop_workers(graceful=True)
        self._bufs = []
        for s in self._shms:
            with contextlib.suppress(Exception):
                s.close()
                s.unlink()
        self._shms = []

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stripes(coords: np.ndarray, workers: int) -> np.ndarray:
    """Each tile's worker: every row of the grid split left to right into ``workers`` runs of
    (nearly) equal tile count.

    A worker keeps the TIFF tiles it decoded for the grid rows below, so a worker that stays on
    its part of each row decodes a TIFF tile shared by neighbouring tiles (and by the next grid
    row) once. Equal counts per row keep every worker busy on the rows being read, whatever
    the shape of the tissue. Measured on the full-size synthetic slide with 2 workers: 4,896
    TIFF tiles decoded (2,453 + 2,443) against 4,764 for one worker; fixed-width stripes with
    overflow to the least-loaded worker decoded 7,400.
    """
    n = len(coords)
    if not n or workers <= 1:
        return np.zeros(n, dtype=np.int64)
    y = coords[:, 1]
    order = np.lexsort((coords[:, 0], y))  # row-major
    ys = y[order]
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    counts = np.diff(np.r_[starts, n])
    row = np.repeat(np.arange(len(starts)), counts)
    rank = np.arange(n) - starts[row]
    out = np.empty(n, dtype=np.int64)
    out[order] = rank * workers // counts[row]
    return out


def _runs(stripes: np.ndarray) -> list[tuple[int, int, int]]:
    """``(start, end, stripe)`` of the runs of one stripe in a batch (row-major tiles)."""
    if not len(stripes):
        return [(0, 0, 0)]
    cut = np.flatnonzero(np.diff(stripes)) + 1
    bounds = [0, *cut.tolist(), len(stripes)]
    return [(a, b, int(stripes[a])) for a, b in itertools.pairwise(bounds)]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
