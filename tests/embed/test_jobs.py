"""Resume keys, fingerprints, leftovers of killed runs, input expansion, the inbox's settle rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgepath.embed.features import write_features
from edgepath.embed.jobs import (
    Tiling,
    find_slides,
    fingerprint,
    is_done,
    job_key,
    lock_path,
    output_path,
    sweep,
)
from edgepath.embed.lock import HOST, SlideLock
from edgepath.embed.watch import Inbox
from edgepath.errors import ArtifactError

T = Tiling(mpp=0.5, tile_px=224, min_tissue=0.5)


def test_key_depends_on_model_input_tiling():
    k = job_key(model_sha256="a", input_fingerprint="f", tiling=T)
    assert k == job_key(model_sha256="a", input_fingerprint="f", tiling=T)
    assert k != job_key(model_sha256="b", input_fingerprint="f", tiling=T)
    assert k != job_key(model_sha256="a", input_fingerprint="g", tiling=T)
    t2 = Tiling(mpp=0.5, tile_px=224, min_tissue=0.25)
    assert k != job_key(model_sha256="a", input_fingerprint="f", tiling=t2)


def test_fingerprint_sees_changes_anywhere(tmp_path):
    p = tmp_path / "s.svs"
    data = bytearray(os.urandom(5 << 20))
    p.write_bytes(data)
    f0 = fingerprint(p)
    os.utime(p, (0, 0))
    assert fingerprint(p) == f0  # a copy with another mtime is the same slide
    for pos in (10, len(data) // 2, len(data) - 10):
        changed = bytearray(data)
        changed[pos] ^= 0xFF
        p.write_bytes(changed)
        assert fingerprint(p) != f0
    p.write_bytes(data + b"x")
    assert fingerprint(p) != f0


def test_is_done(tmp_path):
    out = output_path("/scans/a.svs", tmp_path)
    assert out == tmp_path / "a.h5"
    assert not is_done(out, "k")
    write_features(
        out,
        np.zeros((1, 2)),
        np.zeros((1, 2)),
        mpp=0.5,
        tile_px=224,
        level0_tile_size=448,
        attrs={"key": "k"},
    )
    assert is_done(out, "k") and not is_done(out, "other")
    out.write_bytes(b"truncated")
    assert not is_done(out, "k")


def test_sweep_removes_leftovers_of_dead_processes_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a killed run: its lock and its partial file
    lock_path(tmp_path / "a.h5").write_text(
        json.dumps({"pid": dead.pid, "host": HOST, "token": "x"})
    )
    (tmp_path / ".a.h5.k2j3.tmp").write_bytes(b"partial")
    # a partial file without a lock (killed while the lock was already gone)
    (tmp_path / ".c.h5.zz.tmp").write_bytes(b"partial")
    # a live run: kept
    live = SlideLock(lock_path(tmp_path / "b.h5"), heartbeat=0)
    assert live.acquire()
    (tmp_path / ".b.h5.abcd.tmp").write_bytes(b"in progress")
    assert sweep(tmp_path, stale_after=60) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.h5.abcd.tmp", ".b.h5.lock"]
    live.release()


def test_find_slides(tmp_path):
    for n in ("b.svs", "a.tiff", "notes.txt", ".hidden.svs"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in find_slides([tmp_path])] == ["a.tiff", "b.svs"]
    other = tmp_path / "sub"
    other.mkdir()
    (other / "b.svs").write_bytes(b"y")
    with pytest.raises(ArtifactError, match=r"both write b\.h5"):
        find_slides([tmp_path, other / "b.svs"])
    with pytest.raises(ArtifactError, match="no such slide"):
        find_slides([tmp_path / "missing.svs"])


def test_inbox_waits_until_a_file_stops_growing(tmp_path):
    now = [0.0]
    box = Inbox(tmp_path, settle=10, clock=lambda: now[0])
    p = tmp_path / "s.svs"
    p.write_bytes(b"a")
    (tmp_path / "t.svs.part").write_bytes(b"a")  # a scanner's temporary name: ignored
    assert box.ready() == []  # first sight
    now[0] = 5
    with open(p, "ab") as f:
        f.write(b"b")  # still growing
    assert box.ready() == []
    now[0] = 14
    assert box.ready() == []  # unchanged for 9 s only
    now[0] = 15.5
    assert box.ready() == [p]
    box.mark_handled(p)
    now[0] = 100
    assert box.ready() == []  # each slide once
    with open(p, "ab") as f:
        f.write(b"c")  # rewritten: considered again once settled
    assert box.ready() == []
    now[0] = 111
    assert box.ready() == [p]


def test_watch_survives_a_vanishing_inbox(tmp_path):
    from edgepath.embed.watch import watch

    class Emb:
        stopping = False

        def request_stop(self):
            self.stopping = True

        def process(self, path):  # pragma: no cover - nothing arrives
            raise AssertionError(path)

    emb = Emb()
    gone = tmp_path / "unmounted"

    import threading

    threading.Timer(0.5, emb.request_stop).start()
    summary = watch(emb, gone, poll=0.05, settle=0)
    assert summary.results == [] and summary.interrupted
