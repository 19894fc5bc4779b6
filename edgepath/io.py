"""Small I/O helpers: atomic writes (temp + rename), hashing, JSON."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgepath.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    Nothing half-written is ever visible under the final name, and an existing file stays intact
    until the new one is complete. The file gets the mode a plain ``open(path, "w")`` would give
    (0666 less the umask): ``mkstemp`` creates it 0600, and every stage writes through here, so
    a quantized model is as readable by a scanner service running as another user as an
    exported one.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=suffix if suffix is not None else ".tmp", dir=final.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def umask() -> int:
    """This process's file-creation mask (read without leaving it changed)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON (indented, sorted keys kept in insertion order) atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: errno values that say "this folder cannot take the file" (not "this input is bad").
_FOLDER_FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def output_error(exc: OSError, folder: str | os.PathLike[str]) -> OutputError | None:
    """``exc`` as an ``OutputError`` naming ``folder`` and the fix, or ``None`` if it is not one.

    Args:
        exc: An error raised while creating, writing or renaming a file in ``folder``.
        folder: The output folder (named in the message, not the temporary file).
    """
    what = _FOLDER_FAULTS.get(exc.errno or 0)
    if what is None:
        return None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space there or pass another output folder, then rerun"
    else:
        fix = "make it writable or pass another output folder"
    return OutputError(f"{folder}: cannot write to this output folder ({what}); {fix}")


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` if needed and write (then remove) a small file in it.

    Permission bits alone do not say whether a folder takes files (a read-only mount, root, ACLs,
    a full disk), so this tries.

    Raises:
        OutputError: The folder cannot be created or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgepath-probe.", dir=folder)
        try:
            os.write(fd, b"edgepath")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        fault = output_error(exc, folder)
        if fault is None:
            raise OutputError(f"{folder}: cannot write to this output folder ({exc})") from None
        raise fault from None
