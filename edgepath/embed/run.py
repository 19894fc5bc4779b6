"""Embed slides into feature files: resumable, shareable between processes, one bad slide at a time.

``Embedder`` holds what a run needs once (the engine, the reader workers, the model identity)
and ``Embedder.process(slide)`` does one slide: skip it if done, claim it with a lock, tile it
at the model's mpp and tile size, embed it, write its feature file atomically. Failures are
returned as results, never raised, so a batch or a watch loop always goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import inspect
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgepath import __version__
from edgepath.embed.features import write_features
from edgepath.embed.jobs import (
    Tiling,
    fingerprint,
    is_done,
    job_key,
    lock_path,
    output_path,
    patch_file,
    remove_temps,
    sweep,
)
from edgepath.embed.lock import HEARTBEAT_S, STALE_AFTER_S, SlideLock
from edgepath.embed.reader import Preprocess, TileReader
from edgepath.errors import EdgepathError, OutputError
from edgepath.io import check_writable, output_error

log = logging.getLogger(__name__)

#: Statuses of one slide: embedded now, already done, claimed by another process, failed.
STATUSES = ("done", "skipped", "busy", "failed")


class Interrupted(EdgepathError):
    """A stop was requested (SIGTERM/SIGINT) while a slide was being embedded."""

    exit_code = 130


@dataclass
class SlideResult:
    """What happened to one slide."""

    slide: str
    output: str
    status: str
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def tiles_per_s(self) -> float:
        """Tiles embedded per second, tiling and writing included."""
        return self.n_tiles / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As plain data."""
        d = dict(self.__dict__)
        d["tiles_per_s"] = round(self.tiles_per_s, 2)
        return d


@dataclass
class Summary:
    """The outcome of a batch or a watch session."""

    results: list[SlideResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None  # why the batch stopped early (an output folder fault)
    #: Slides per status, tiles and embedding seconds of results dropped by ``retire``.
    retired: dict[str, float] = field(default_factory=dict)

    def count(self, status: str) -> int:
        """Slides with ``status``."""
        return sum(r.status == status for r in self.results) + int(self.retired.get(status, 0))

    @property
    def n_tiles(self) -> int:
        """Tiles embedded in this run (skipped slides not counted)."""
        done = sum(r.n_tiles for r in self.results if r.status == "done")
        return done + int(self.retired.get("tiles", 0))

    def retire(self, keep: int) -> None:
        """Keep the last ``keep`` results; older ones stay in the counts only.

        A watch runs for weeks: one result per slide held forever made its memory grow with
        every slide (about 1 KB each), without end.
        """
        while len(self.results) > keep:
            r = self.results.pop(0)
            self.retired[r.status] = self.retired.get(r.status, 0) + 1
            self.retired["slides"] = self.retired.get("slides", 0) + 1
            if r.status == "done":
                self.retired["tiles"] = self.retired.get("tiles", 0) + r.n_tiles
                self.retired["seconds"] = self.retired.get("seconds", 0.0) + r.seconds

    @property
    def exit_code(self) -> int:
        """0 all good, 2 output folder fault, 3 a slide failed, 130 stopped by a signal (batch)."""
        if self.error is not None:
            return 2
        if self.count("failed"):
            return 3
        return 130 if self.interrupted else 0

    def to_dict(self) -> dict[str, Any]:
        """As plain data (the ``--json`` output)."""
        done = self.count("done")
        busy = sum(r.seconds for r in self.results if r.status == "done")
        busy += self.retired.get("seconds", 0.0)
        return {
            "slides": len(self.results) + int(self.retired.get("slides", 0)),
            **{s: self.count(s) for s in STATUSES},
            "tiles": self.n_tiles,
            "seconds": round(self.seconds, 3),
            "tiles_per_s": round(self.n_tiles / self.seconds, 2) if self.seconds > 0 else 0.0,
            "embedding_seconds": round(busy, 3),
            "embedding_tiles_per_s": round(self.n_tiles / busy, 2) if busy > 0 else 0.0,
            "wsi_per_min": round(60 * done / self.seconds, 3) if self.seconds > 0 else 0.0,
            "interrupted": self.interrupted,
            "error": self.error,
            "exit_code": self.exit_code,
            "failures": [
                {"slide": r.slide, "error": r.error} for r in self.results if r.status == "failed"
            ],
            "results": [r.to_dict() for r in self.results],  # the last ones kept (``retire``)
        }


def _submit(engine: Any, x: np.ndarray, *, tiles: bool) -> Any:
    """``engine.submit`` (``edgepath.runtime.Engine``); an engine object without it (a library
    user's own, duck-typed on ``__call__`` / ``embed_tiles``) is called now."""
    if getattr(type(engine), "submit", None) is None:
        y = engine.embed_tiles(x) if tiles else engine(x)
        return lambda: y
    return engine.submit(x, tiles=tiles)


class Reporter(Protocol):
    """Progress callbacks (the CLI draws rich bars; the library logs)."""

    def slide_started(self, slide: Path, n_tiles: int) -> None: ...

    def tiles_done(self, n: int) -> None: ...

    def slide_finished(self, result: SlideResult) -> None: ...


class NullReporter:
    """Reports nothing."""

    def slide_started(self, slide: Path, n_tiles: int) -> None:
        """A slide was tiled and its embedding starts."""

    def tiles_done(self, n: int) -> None:
        """``n`` more tiles of the current slide are embedded."""

    def slide_finished(self, result: SlideResult) -> None:
        """A slide is done, skipped, busy or failed."""


@dataclass
class Prepared:
    """A slide's fingerprint and tile grid, computed ahead of its turn."""

    slide: Path
    fp: str | None = None
    grid: Any = None
    slide_info: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None


@dataclass(frozen=True)
class ModelInfo:
    """The identity of the model a run embeds with (stored in every feature file)."""

    id: str
    sha256: str
    engine: str
    precision: str
    name: str = ""  # short name (TRIDENT's ``encoder`` attribute)


def default_min_tissue() -> float:
    """``tile_slide``'s default tissue fraction (so the resume key names the value used)."""
    from edgepath.slides import tile_slide

    return float(inspect.signature(tile_slide).parameters["min_tissue"].default)


class Embedder:
    """Embeds slides one by one into ``out_dir`` with one engine and a pool of reader workers.

    Args:
        engine: An ``edgepath.runtime.Engine``: ``submit`` with one batch in flight (torch on
            CUDA runs a batch while the next one is read and copied), or any object with
            ``__call__`` on normalised NCHW float32 (and ``embed_tiles`` for uint8 input).
        model: The model's identity (id, weights hash, engine, precision).
        out_dir: Folder of the feature files.
        batch: Tiles per engine call.
        workers: Reader processes (0 reads in this process).
        min_tissue: Tissue fraction a tile needs (``None``: ``tile_slide``'s default).
        slide_mpp: Level-0 mpp for slides whose files do not record it.
        mpp_overrides: Per-slide level-0 mpp (path, name or stem -> µm/px, as
            ``edgepath.slides.read_mpp_csv`` returns); wins over ``slide_mpp``.
        force: Recompute slides that are already done.
        coords_dir: Reuse the patch files in this folder (TRIDENT, CLAM or ``edgepath slides
            tile``'s, see ``edgepath.embed.jobs.patch_file``) instead of tiling.
        stale_after: Seconds without heartbeat after which another process's lock is taken over.
        reporter: Progress callbacks.
    """

    def __init__(
        self,
        engine: Any,
        model: ModelInfo,
        out_dir: str | os.PathLike[str],
        *,
        batch: int = 32,
        workers: int = 2,
        min_tissue: float | None = None,
        slide_mpp: float | None = None,
        mpp_overrides: dict[str, float] | None = None,
        force: bool = False,
        coords_dir: str | os.PathLike[str] | None = None,
        stale_after: float = STALE_AFTER_S,
        heartbeat: float = HEARTBEAT_S,
        reporter: Reporter | None = None,
    ) -> None:
        spec = engine.spec
        self.engine = engine
        self.model = model
        self.out_dir = Path(out_dir)
        self.force = force
        self.coords_dir = Path(coords_dir) if coords_dir is not None else None
        self.stale_after = stale_after
        self.heartbeat = min(heartbeat, stale_after / 4)
        self.reporter: Reporter = reporter or NullReporter()
        self.mpp_overrides = dict(mpp_overrides or {})
        self.tiling = Tiling(
            mpp=float(spec.input.mpp),
            tile_px=int(spec.input.tile_px),
            min_tissue=default_min_tissue() if min_tissue is None else float(min_tissue),
            slide_mpp=slide_mpp,
        )
        self.pre = Preprocess(
            mpp=self.tiling.mpp,
            tile_px=self.tiling.tile_px,
            mean=tuple(spec.input.mean),
            std=tuple(spec.input.std),
            slide_mpp=slide_mpp,
            uint8=getattr(engine, "input_format", "nchw-float32") == "nhwc-uint8",
        )
        check_writable(self.out_dir)  # a read-only or full folder: one clear error, up front
        sweep(self.out_dir, stale_after=stale_after)
        self.reader = TileReader(self.pre, batch=batch, workers=workers)
        self._stop = False

    def request_stop(self) -> None:
        """Ask the current slide to stop at the next batch (signal-handler safe)."""
        self._stop = True

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop

    def tiling_for(self, slide: Path) -> Tiling:
        """The tiling of ``slide``: the run's, with its own level-0 mpp override and its patch
        file's fingerprint (``--coords``) if any."""
        tiling = self.tiling
        if self.mpp_overrides:
            from edgepath.slides import lookup_override

            mpp0 = lookup_override(self.mpp_overrides, slide)
            if mpp0 is not None:
                tiling = dataclasses.replace(tiling, slide_mpp=float(mpp0))
        if self.coords_dir is not None:
            coords = fingerprint(patch_file(slide, self.coords_dir))
            tiling = dataclasses.replace(tiling, coords=coords, min_tissue=0.0)
        return tiling

    def prepare(self, slide: str | os.PathLike[str]) -> Prepared:
        """Fingerprint and, unless already done, tile ``slide`` (safe to run in a thread).

        ``Embedder.run`` prepares the next slide while the current one is being embedded, so
        tissue detection does not leave the engine idle between slides.
        """
        slide = Path(slide)
        prep = Prepared(slide=slide)
        try:
            prep.fp = fingerprint(slide)
            tiling = self.tiling_for(slide)
            key = job_key(model_sha256=self.model.sha256, input_fingerprint=prep.fp, tiling=tiling)
            if self.force or not is_done(output_path(slide, self.out_dir), key):
                prep.grid, prep.slide_info = self._tile(slide, tiling)
        except Exception as exc:  # reported when the slide's turn comes
            prep.error = exc
        return prep

    def process(
        self, slide: str | os.PathLike[str], *, prepared: Prepared | None = None
    ) -> SlideResult:
        """Embed one slide unless it is done or claimed; never raises for a bad slide.

        Args:
            slide: The slide file.
            prepared: The result of ``prepare(slide)``, if it was run ahead.

        Raises:
            Interrupted: A stop was requested while the slide was being embedded (its lock is
                released and no partial file is left).
            OutputError: The output folder cannot take the lock or the feature file (read-only,
                full): not this slide's fault, so it is not recorded as failed; the lock is
                released and no partial file is left.
        """
        slide = Path(slide)
        out = output_path(slide, self.out_dir)
        t0 = time.perf_counter()
        result = SlideResult(slide=str(slide), output=str(out), status="failed")
        lock: SlideLock | None = None
        try:
            fp = fingerprint(slide)
            if prepared is not None and prepared.error is not None and prepared.fp == fp:
                raise prepared.error  # tiling this very file failed
            if prepared is not None and (prepared.slide != slide or prepared.fp != fp):
                prepared = None  # the file changed since: start afresh
            tiling = self.tiling_for(slide)
            key = job_key(model_sha256=self.model.sha256, input_fingerprint=fp, tiling=tiling)
            if not self.force and is_done(out, key):
                result.status = "skipped"
                return result
            lock = SlideLock(lock_path(out), heartbeat=self.heartbeat, stale_after=self.stale_after)
            with self._writing():
                if not lock.acquire():
                    result.status = "busy"
                    return result
            if not self.force and is_done(out, key):  # finished by another process meanwhile
                result.status = "skipped"
                return result
            with self._writing():
                remove_temps(out)
            if prepared is not None and prepared.grid is not None:
                grid, info = prepared.grid, prepared.slide_info
            else:
                grid, info = self._tile(slide, tiling)
            result.n_tiles = self._embed(
                slide, out, grid, info, tiling=tiling, key=key, fp=fp, lock=lock
            )
            result.status = "done"
        except (Interrupted, OutputError):
            result.status = "stopped"
            raise
        except Exception as exc:  # one bad slide never stops the batch
            log.debug("%s failed", slide, exc_info=True)
            result.error = _one_line(exc)
        finally:
            if lock is not None:
                lock.release()
            result.seconds = time.perf_counter() - t0
            if result.status != "stopped":
                self.reporter.slide_finished(result)
        return result

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn the OSErrors of a write into the output folder into one ``OutputError``."""
        try:
            yield
        except OSError as exc:
            fault = output_error(exc, self.out_dir)
            if fault is None:
                raise
            raise fault from None

    def _tile(self, slide: Path, tiling: Tiling) -> tuple[Any, dict[str, Any]]:
        from edgepath.slides import open_slide, read_patch_file, tile_slide

        with open_slide(slide, mpp=tiling.slide_mpp) as s:
            if self.coords_dir is not None:
                path = patch_file(slide, self.coords_dir)
                grid = read_patch_file(path, s, mpp=tiling.mpp, tile_px=tiling.tile_px)
            else:
                grid = tile_slide(
                    s, mpp=tiling.mpp, tile_px=tiling.tile_px, min_tissue=tiling.min_tissue
                )
            info = {
                "slide_name": slide.name,
                "slide_dimensions": list(s.dimensions),
                "slide_mpp": float(s.mpp),
                "mpp_source": str(getattr(grid, "mpp_source", s.mpp_source)),
            }
        return grid, info

    def _embed(
        self,
        slide: Path,
        out: Path,
        grid: Any,
        slide_info: dict[str, Any],
        *,
        tiling: Tiling,
        key: str,
        fp: str,
        lock: SlideLock,
    ) -> int:
        coords = np.asarray(grid.coords, dtype=np.int64).reshape(-1, 2)
        self.reporter.slide_started(slide, len(coords))
        feats = np.empty((len(coords), int(self.engine.embed_dim)), dtype=np.float32)
        n = 0
        # The engine always gets full batches: the last one of a slide is padded with the slot's
        # stale rows, whose outputs are dropped. Every new batch size grew the runtimes' memory
        # for good (ONNX Runtime's arena +20 MB, OpenVINO +12 MB over sizes 1..32: a step at the
        # 45th of 200 small slides in the soak); with one shape it settles on the first batch.
        # Outputs of the real rows are the same (bitwise on both runtimes, checked).
        batches = self.reader.batches(
            slide, coords, slide_mpp=tiling.slide_mpp, should_stop=lambda: self._stop, full=True
        )
        # One batch in flight: an asynchronous engine (torch on CUDA) runs batch i while the
        # reader hands over batch i+1 and the engine copies it to the device; the others have
        # finished when submit returns. submit copies x out, so the reader may reuse its slot.
        pending: tuple[int, int, Any] | None = None
        try:
            for start, x in batches:
                k = min(len(x), len(coords) - start)
                fetch = _submit(self.engine, x, tiles=self.pre.uint8)
                if pending is not None:
                    n += self._collect(feats, *pending)
                pending = (start, k, fetch)
            if pending is not None:
                n += self._collect(feats, *pending)
        finally:
            # Closed here, not when garbage-collected: an engine error left the generator
            # suspended with batches in flight, and while anything kept the traceback (a log
            # handler holding exc_info), the next slide handed out the same shared-memory slots
            # and took the late results of this one as its own tiles.
            batches.close()
        if self._stop:
            raise Interrupted(f"{slide}: stopped before it was complete; nothing was written")
        if n != len(coords):
            raise EdgepathError(f"{slide}: embedded {n} of {len(coords)} tiles")
        if not lock.held:
            raise EdgepathError(
                f"{out}: another process took this slide's lock over (heartbeat older than "
                f"{self.stale_after:.0f} s); its result is kept, this one dropped"
            )
        if not len(coords):
            log.warning("%s: no tissue tiles found; writing an empty feature file", slide.name)
        with self._writing():
            self._write(
                out, feats, coords, grid, slide_info, tiling=tiling, key=key, fp=fp, name=slide.stem
            )
        return len(coords)

    def _collect(self, feats: np.ndarray, start: int, k: int, fetch: Any) -> int:
        """Put a submitted batch's first ``k`` embeddings at ``start``; returns ``k``."""
        feats[start : start + k] = fetch()[:k]
        self.reporter.tiles_done(k)
        return k

    def _write(
        self,
        out: Path,
        feats: np.ndarray,
        coords: np.ndarray,
        grid: Any,
        slide_info: dict[str, Any],
        *,
        tiling: Tiling,
        key: str,
        fp: str,
        name: str,
    ) -> None:
        write_features(
            out,
            feats,
            coords,
            mpp=float(grid.mpp),
            tile_px=int(grid.tile_px),
            level0_tile_size=float(grid.level0_tile_size),
            coords_attrs=grid.trident_attrs(),
            features_attrs={"encoder": self.model.name or self.model.id, "name": name},
            attrs={
                "key": key,
                "model_id": self.model.id,
                "model_sha256": self.model.sha256,
                "engine": self.model.engine,
                "precision": self.model.precision,
                "input_fingerprint": fp,
                "tiling": tiling.to_dict(),
                "min_tissue": tiling.min_tissue,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "edgepath_version": __version__,
                **slide_info,
                **(
                    {"coords_file": grid.extra["coords_file"]}
                    if "coords_file" in grid.extra
                    else {}
                ),
            },
        )

    def run(self, slides: list[Path], *, prefetch: bool = True) -> Summary:
        """Process ``slides`` in order; stops cleanly (``interrupted``) when a stop is requested.

        A fault of the output folder (read-only, full) stops the batch with ``error`` set (exit
        code 2): the slide it hit is not counted as failed, and a rerun finishes the rest.

        Args:
            slides: Slide files.
            prefetch: Tile the next slide in a thread while the current one is embedded.
        """
        from concurrent.futures import ThreadPoolExecutor

        summary = Summary()
        t0 = time.perf_counter()
        pool = ThreadPoolExecutor(1, thread_name_prefix="edgepath-prepare") if prefetch else None
        ahead = None
        try:
            for i, slide in enumerate(slides):
                if self._stop:
                    summary.interrupted = True
                    break
                prepared = ahead.result() if ahead is not None else None
                ahead = None
                if pool is not None and i + 1 < len(slides):
                    ahead = pool.submit(self.prepare, slides[i + 1])
                summary.results.append(self.process(slide, prepared=prepared))
        except Interrupted as exc:
            log.warning("%s", exc)
            summary.interrupted = True
        except OutputError as exc:  # every following slide would fail the same way
            summary.error = str(exc)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        summary.seconds = time.perf_counter() - t0
        return summary

    def close(self) -> None:
        """Stop the reader workers and close the engine."""
        self.reader.close()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
