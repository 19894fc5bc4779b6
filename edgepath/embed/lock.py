"""Per-slide work locks shared by processes and machines: O_EXCL files with pid, host, heartbeat.

A lock is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and
on NFSv3+). Its holder touches it every ``heartbeat`` seconds from a background thread. Another
process may take it over when it is *stale*: its holder is a dead process on this host, or its
heartbeat (the file's mtime) is older than ``stale_after`` (a holder on another machine that
died). Taking over goes through a short-lived ``.break`` file, also O_EXCL, so two processes
never both break the same lock and then both believe they own the new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
#: A ``.break`` file older than this belongs to a process that died while breaking a lock.
BREAK_STALE_S = 30.0

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder info of a lock file, ``{}`` if it is unreadable, ``None`` if there is none."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def lock_age(path: str | os.PathLike[str]) -> float | None:
    """Seconds since the lock's last heartbeat (its mtime), ``None`` if it is gone."""
    try:
        return max(0.0, time.time() - os.stat(path).st_mtime)
    except FileNotFoundError:
        return None


def is_stale(
    path: str | os.PathLike[str],
    info: dict[str, Any] | None = None,
    *,
    stale_after: float = STALE_AFTER_S,
) -> bool:
    """True if the lock at ``path`` may be taken over (see the module docstring)."""
    info = read_lock(path) if info is None else info
    age = lock_age(path)
    if info is None or age is None:
        return False  # no lock: nothing to take over, just acquire
    if not info:  # created but never written: the holder died in the first microseconds
        return age > 5.0
    if info.get("host") == HOST and not pid_alive(int(info.get("pid", -1))):
        return True
    return age > stale_after


class SlideLock:
    """An exclusive claim on one unit of work (one slide), released on ``release()``.

    Args:
        path: The lock file.
        heartbeat: Seconds between heartbeats (mtime touches) while held.
        stale_after: Heartbeat age after which others may take the lock over.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        heartbeat: float = HEARTBEAT_S,
        stale_after: float = STALE_AFTER_S,
    ) -> None:
        self.path = Path(path)
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.token = uuid.uuid4().hex
        self.took_over: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """True while this object holds the lock and nobody has taken it over."""
        return self._held and self.owned()

    def owned(self) -> bool:
        """True if the lock file on disk is this object's (same token)."""
        info = read_lock(self.path)
        return bool(info) and info.get("token") == self.token

    def acquire(self) -> bool:
        """Try to take the lock once; break it first if it is stale. Never blocks.

        Returns:
            True if this process now holds the lock, False if a live holder has it.
        """
        if self._held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return True
        info = read_lock(self.path)
        if info is None:  # released between our attempt and the read
            return self._create()
        if not is_stale(self.path, info, stale_after=self.stale_after):
            return False
        if self._break(info):
            self.took_over = info
            log.info("%s: took over a stale lock of %s", self.path.name, _holder(info))
            return self._create()
        return False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {
            "pid": os.getpid(),
            "host": HOST,
            "token": self.token,
            "started": time.time(),
        }
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            # A full disk lets O_EXCL create the file and then fails the write: the empty lock
            # was left behind, unowned (release() removes only locks it holds), and every
            # process saw the slide as busy until it went stale.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        self._held = True
        self._stop.clear()
        if self.heartbeat > 0:
            self._thread = threading.Thread(
                target=self._beat, name=f"lock-heartbeat-{self.path.name}", daemon=True
            )
            self._thread.start()
        return True

    def _break(self, seen: dict[str, Any]) -> bool:
        """Remove a stale lock, serialised through ``<lock>.break`` (True if it is gone)."""
        brk = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(brk, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            age = lock_age(brk)
            if age is not None and age > BREAK_STALE_S:
                with contextlib.suppress(FileNotFoundError):
                    brk.unlink()
            return False
        os.close(fd)
        try:
            now = read_lock(self.path)
            if now is None:
                return True
            # Still the lock we judged stale (not a fresh one created since)?
            same = now == seen or (not now and not seen)
            if same and is_stale(self.path, now, stale_after=self.stale_after):
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                return True
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                brk.unlink()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not self.owned():
                    log.error("%s: lock was taken over by another process", self.path)
                    return
                os.utime(self.path)
            except OSError as exc:  # a flaky network file system: keep trying
                log.warning("%s: heartbeat failed: %s", self.path, exc)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._held and self.owned():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._held = False

    def __enter__(self) -> SlideLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(info: dict[str, Any]) -> str:
    if not info:
        return "an unwritten lock"
    return f"pid {info.get('pid')} on {info.get('host')}"
