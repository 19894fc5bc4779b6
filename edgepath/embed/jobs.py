"""What "already done" means: output names, input fingerprints, resume keys, leftover cleanup.

A slide's feature file is *done* when it exists, reads as a feature file, and its ``key``
attribute equals the key of the job at hand: the same model (weights hash), the same input
(fingerprint of the slide file) and the same tiling parameters. Anything else is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgepath.embed.features import FEATURES_FORMAT, SUFFIX, read_attrs
from edgepath.embed.lock import is_stale, read_lock
from edgepath.errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

#: Bytes hashed at the head, middle and tail of a slide for its fingerprint.
FINGERPRINT_CHUNK = 1 << 20

#: File suffixes treated as slides when a folder is given (lower case).
SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".dcm",
)


@dataclass(frozen=True)
class Tiling:
    """The tiling parameters that, with the model and the input, define a slide's features."""

    mpp: float
    tile_px: int
    min_tissue: float
    slide_mpp: float | None = None  # a level-0 mpp override for slides without one
    coords: str | None = None  # fingerprint of a reused patch file (``embed --coords``)

    def to_dict(self) -> dict[str, Any]:
        """As plain data (``coords`` only when a patch file is reused, so that the keys of
        feature files written before it existed stay the same)."""
        d = asdict(self)
        if d["coords"] is None:
            del d["coords"]
        return d


def output_path(slide: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """The feature file of ``slide`` in ``out_dir``: ``<slide stem>.h5``."""
    return Path(out_dir) / (Path(slide).stem + SUFFIX)


def patch_file(slide: str | os.PathLike[str], coords_dir: str | os.PathLike[str]) -> Path:
    """The patch file of ``slide`` in ``coords_dir`` (``embed --coords``): TRIDENT's
    ``<stem>_patches.h5``, CLAM's and ``edgepath slides tile``'s ``<stem>.h5``, in the folder or
    in its ``patches/`` subfolder (TRIDENT's and CLAM's job layout).

    Raises:
        ArtifactError: None of these exists.
    """
    stem, base = Path(slide).stem, Path(coords_dir)
    names = (f"{stem}_patches{SUFFIX}", f"{stem}{SUFFIX}")
    candidates = [d / n for d in (base, base / "patches") for n in names]
    for c in candidates:
        if c.is_file():
            return c
    raise ArtifactError(
        f"{slide}: no patch file in {base} (looked for {', '.join(names)} there and in "
        "patches/); tile it with TRIDENT, CLAM or edgepath slides tile, or drop --coords"
    )


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file guarding an output: ``.<name>.lock`` next to it."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def temp_glob(output: str | os.PathLike[str]) -> str:
    """Glob of the temporary files ``edgepath.io.atomic_path`` makes for ``output``."""
    return f".{Path(output).name}.*.tmp"


def fingerprint(path: str | os.PathLike[str], *, chunk: int = FINGERPRINT_CHUNK) -> str:
    """A cheap identity of a slide file: its size and the SHA-256 of its head, middle and tail.

    Whole-file hashes of multi-GB slides would cost more than some embeddings; a rescan or a
    different file changes the size or these bytes. Modification times are left out so that
    copying a slide elsewhere does not invalidate its features.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - chunk // 2), max(0, size - chunk)}):
            f.seek(offset)
            h.update(f.read(chunk))
    return f"{size}:{h.hexdigest()[:32]}"


def job_key(*, model_sha256: str, input_fingerprint: str, tiling: Tiling) -> str:
    """The resume key of one slide's job (hex SHA-256 of its canonical JSON)."""
    payload = {
        "features_format": FEATURES_FORMAT,
        "model_sha256": model_sha256,
        "input": input_fingerprint,
        "tiling": tiling.to_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def is_done(output: str | os.PathLike[str], key: str) -> bool:
    """True if ``output`` is a complete feature file written for ``key``."""
    output = Path(output)
    if not output.is_file():
        return False
    try:
        attrs = read_attrs(output)
    except ArtifactError as exc:
        log.warning("%s", exc)
        return False
    if attrs.get("key") != key:
        log.info("%s: written for another model, input or tiling; recomputing", output.name)
        return False
    return True


def remove_temps(output: str | os.PathLike[str]) -> int:
    """Delete the temporary files of ``output`` (call only while holding its lock)."""
    output = Path(output)
    n = 0
    for tmp in output.parent.glob(temp_glob(output)):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            n += 1
    if n:
        log.info("%s: removed %d partial file(s) of an interrupted run", output.name, n)
    return n


def sweep(out_dir: str | os.PathLike[str], *, stale_after: float) -> int:
    """Remove leftovers of killed runs in ``out_dir``: stale locks and their partial files.

    Partial files of slides whose lock a live process holds are left alone.

    Returns:
        How many files were removed.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    removed = 0
    for tmp in out_dir.glob(f".*{SUFFIX}.*.tmp"):
        name = tmp.name[1:].split(f"{SUFFIX}.", 1)[0] + SUFFIX
        lock = lock_path(out_dir / name)
        info = read_lock(lock)
        if info is not None and not is_stale(lock, info, stale_after=stale_after):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    for lock in out_dir.glob(f".*{SUFFIX}.lock"):
        info = read_lock(lock)
        if info is not None and is_stale(lock, info, stale_after=stale_after):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
                removed += 1
    if removed:
        log.info("%s: removed %d leftover file(s) of killed runs", out_dir, removed)
    return removed


def find_slides(inputs: list[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (their slide files, sorted, not recursive) into slide paths.

    Raises:
        ArtifactError: An input that does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found.extend(
                sorted(
                    q
                    for q in p.iterdir()
                    if q.is_file()
                    and not q.name.startswith(".")
                    and q.suffix.lower() in SLIDE_SUFFIXES
                )
            )
        elif p.exists():
            found.append(p)
        else:
            raise ArtifactError(f"{p}: no such slide or folder; check the path")
    seen: dict[str, Path] = {}
    unique: list[Path] = []
    for p in found:
        stem = p.stem
        if stem in seen and seen[stem].resolve() != p.resolve():
            raise ArtifactError(
                f"{p} and {seen[stem]} would both write {stem}{SUFFIX}; embed them into "
                "different -o folders or rename one"
            )
        if stem not in seen:
            seen[stem] = p
            unique.append(p)
    return unique


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``: shard I of N, numbered 0 to N-1 (SLURM: ``--array=0-<N-1>``).

    Raises:
        ConfigError: Not ``I/N`` with 0 <= I < N.
    """
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(
            f"--shard {text}: expected I/N with 0 <= I < N, e.g. --shard 0/8 for the first of 8 "
            "(SLURM: --array=0-7 and --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        )
    return i, n


def shard(slides: list[Path], index: int, count: int) -> list[Path]:
    """Shard ``index`` of ``count`` of ``slides``: every ``count``-th slide, from ``index``, in the
    order of their feature-file names (stems, then paths).

    The split depends on the set of slides only (not on the order they were given in), so
    processes given the same slides take disjoint shares that together cover every slide once,
    and never wait on each other's locks. Shares differ by at most one slide.
    """
    if not 0 <= index < count:
        raise ConfigError(f"shard {index} of {count} does not exist (0 <= index < count)")
    ordered = sorted(slides, key=lambda p: (Path(p).stem, str(p)))
    return ordered[index::count]
