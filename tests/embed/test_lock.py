"""Work locks: exclusive, released, stale ones (dead pid, old heartbeat) taken over exactly once."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

from edgepath.embed.lock import HOST, SlideLock, is_stale, read_lock


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_exclusive_and_release(tmp_path):
    path = tmp_path / "a.lock"
    a, b = SlideLock(path, heartbeat=0), SlideLock(path, heartbeat=0)
    assert a.acquire() and a.held
    info = read_lock(path)
    assert info["pid"] == os.getpid() and info["host"] == HOST and info["token"] == a.token
    assert not b.acquire()  # live holder: never taken
    a.release()
    assert not path.exists()
    assert b.acquire()
    b.release()


def test_dead_pid_lock_is_taken_over(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": HOST, "token": "old"}))
    assert is_stale(path)
    lock = SlideLock(path, heartbeat=0)
    assert lock.acquire()
    assert lock.took_over["token"] == "old"
    assert read_lock(path)["token"] == lock.token
    lock.release()


def test_other_host_needs_old_heartbeat(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"pid": 1, "host": "scanner-pc-2", "token": "t"}))
    assert not SlideLock(path, heartbeat=0, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    assert is_stale(path, stale_after=60)
    lock = SlideLock(path, heartbeat=0, stale_after=60)
    assert lock.acquire()
    lock.release()


def test_heartbeat_keeps_lock_fresh(tmp_path):
    path = tmp_path / "a.lock"
    lock = SlideLock(path, heartbeat=0.05, stale_after=0.5)
    assert lock.acquire()
    old = time.time() - 100
    os.utime(path, (old, old))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 0.5  # touched again by the heartbeat
    lock.release()


def test_unwritten_lock_goes_stale(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text("")
    assert not is_stale(path)  # might be mid-write
    old = time.time() - 60
    os.utime(path, (old, old))
    assert is_stale(path)


def _contend(path: str, barrier, results) -> None:
    lock = SlideLock(path, heartbeat=0)
    barrier.wait()
    got = lock.acquire()
    results.put(got)
    if got:
        time.sleep(0.5)  # hold it while the others try
        lock.release()


def test_one_winner_among_processes_racing_for_a_stale_lock(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": HOST, "token": "old"}))
    ctx = mp.get_context("fork")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(path), barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    wins = [results.get(timeout=5) for _ in range(n)]
    assert sum(wins) == 1
