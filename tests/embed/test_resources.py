"""Bounded resources: reader processes and shared memory are released on signals and errors.

Every reader pool names its shared-memory slots ``/dev/shm/edgepath-<pid>-...``; these tests
look for the slots and the worker processes of the run they start (not anyone else's) while it
runs and check that none is left after SIGTERM, SIGINT, SIGTERM to the whole process group,
slide errors and output faults. SIGKILL leaves them; the next pool removes them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgepath.embed.reader import SHM_DIR, SHM_PREFIX, Preprocess, TileReader, sweep_shm
from tests.embed.conftest import wait_for

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs Linux's /dev/shm and /proc")

PRE = Preprocess(mpp=0.5, tile_px=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _slots(pid: int) -> set[str]:
    return {p.name for p in SHM_DIR.glob(f"{SHM_PREFIX}{pid}-*")}


def _children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.add(int(stat.parent.name))
    return kids


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


@pytest.fixture(scope="module")
def long_slide(tmp_path_factory) -> Path:
    """A slide long enough to be stopped in the middle (about 300 tiles)."""
    from edgepath.slides import synthesize_slide

    return synthesize_slide(tmp_path_factory.mktemp("long") / "long.tiff", tiles=300, seed=2)


def _cli(tiny_model, verb: str, slides: Path, out: Path) -> list[str]:
    model = ["--model", str(tiny_model)] if verb == "watch" else [str(tiny_model)]
    args = [str(slides), *model] if verb == "watch" else [*model, str(slides)]
    extra = ["--poll", "0.1", "--settle", "0.2"] if verb == "watch" else []
    return [
        sys.executable,
        "-m",
        "edgepath",
        verb,
        *args,
        "-o",
        str(out),
        "--engine",
        "onnxruntime",
        "--workers",
        "2",
        "--batch",
        "4",
        "--json",
        *extra,
    ]


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("verb", "sig", "group"),
    [
        ("embed", signal.SIGTERM, False),
        ("embed", signal.SIGINT, False),
        ("embed", signal.SIGTERM, True),  # systemd stopping a service, `kill -- -PGID`
        ("watch", signal.SIGTERM, True),
    ],
    ids=["embed-SIGTERM", "embed-SIGINT", "embed-SIGTERM-group", "watch-SIGTERM-group"],
)
def test_signals_release_workers_and_shared_memory(
    tiny_model, long_slide, tmp_path, verb, sig, group
):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(long_slide, inbox / "long.tiff")
    proc = _start(_cli(tiny_model, verb, inbox, out))
    try:
        wait_for(lambda: (out / ".long.h5.lock").exists(), 120, "the slide's lock")
        slots, kids = _slots(proc.pid), _children(proc.pid)
        time.sleep(0.3)  # reading and embedding are under way
        (os.killpg if group else os.kill)(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(slots) >= 5, slots  # 2 workers x 2 in flight + 1, seen while it ran
    assert proc.returncode == (0 if verb == "watch" else 130), stderr
    summary = json.loads(stdout)
    # stopped in the middle of the slide: neither done nor failed (workers dying with a group
    # SIGTERM are the stop, not a broken slide), and no worker restarted while stopping
    assert summary["slides"] == 0 and "restarting" not in stderr, stderr
    assert _slots(proc.pid) == set()
    wait_for(lambda: not _alive(kids), 10, "the reader processes to exit")
    assert sorted(p.name for p in out.iterdir()) == []  # no partial file, no lock


class _Flaky:
    """An engine that fails while ``fail`` is set."""

    def __init__(self, engine) -> None:
        self.engine, self.fail = engine, False

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def __call__(self, x):
        if self.fail:
            raise RuntimeError("engine failed")
        return self.engine(x)


@pytest.mark.slow
def test_errors_release_workers_and_shared_memory(tiny_model, long_slide, tmp_path, monkeypatch):
    """In one process: a corrupt tile, an engine error, a full disk, then close."""
    from edgepath.embed.model import open_model
    from edgepath.embed.run import Embedder
    from edgepath.errors import OutputError
    from edgepath.slides import tile_slide
    from tests.embed.test_faults import _corrupt_tile

    bad = tmp_path / "bad.tiff"
    shutil.copy(long_slide, bad)
    x, y = tile_slide(bad, mpp=0.5, tile_px=224).coords[150]
    _corrupt_tile(bad, int(x) + 100, int(y) + 100)
    engine, info = open_model(tiny_model, engine="onnxruntime")
    flaky = _Flaky(engine)
    emb = Embedder(flaky, info, tmp_path / "out", workers=2, batch=4)
    slots, kids = set(emb.reader.shm_names), set(emb.reader.pids)
    assert len(slots) == 5 and slots <= {p.name for p in SHM_DIR.iterdir()}
    try:
        r = emb.process(bad)
        assert r.status == "failed" and ("Corrupt JPEG" in r.error or "does not decode" in r.error)
        flaky.fail = True
        r = emb.process(long_slide)
        assert r.status == "failed" and "engine failed" in r.error
        flaky.fail = False

        def full(*a, **k):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr("edgepath.embed.run.write_features", full)
        with pytest.raises(OutputError):
            emb.process(long_slide)
        assert set(emb.reader.pids) == kids  # errors of slides do not cost the workers
    finally:
        emb.close()
    assert not slots & {p.name for p in SHM_DIR.iterdir()}
    wait_for(lambda: not _alive(kids), 10, "the reader processes to exit")


@pytest.mark.slow
def test_sigkill_leftovers_are_swept_by_the_next_pool(tiny_model, long_slide, tmp_path):
    """SIGKILL to the whole group kills Python's resource tracker too: the next pool cleans up."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(long_slide, inbox / "long.tiff")
    proc = _start(_cli(tiny_model, "embed", inbox, out))
    try:
        wait_for(lambda: (out / ".long.h5.lock").exists(), 120, "the slide's lock")
        slots = _slots(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert slots and _slots(proc.pid) == slots  # left behind by SIGKILL
    with TileReader(PRE, batch=2, workers=1):
        assert _slots(proc.pid) == set()  # removed when the next pool started
    assert sweep_shm() == []


def test_slide_handles_hand_decoded_tiles_on_and_evict_the_oldest(tmp_path):
    """Slides are read one after another: a reader process's switch to the next slide, or back
    to the start of the same one, drops the TIFF tiles kept for the rows below (their memory
    decodes what comes next); a third slide closes the least recently used handle."""
    from edgepath.embed.reader import _HANDLE_CACHE, _Handles
    from edgepath.slides import synthesize_slide, tile_slide

    paths = [synthesize_slide(tmp_path / f"{i}.tiff", tiles=12, seed=i) for i in range(3)]
    h = _Handles()
    a = h.get(str(paths[0]), None, 0)
    coords = tile_slide(a, mpp=0.5).coords
    cache = lambda s: s._pyramid()._cache  # noqa: E731
    a.read_batch(coords[:4], mpp=0.5)
    assert cache(a)
    assert h.get(str(paths[0]), None, 4) is a and cache(a)  # the next batch: kept
    assert h.get(str(paths[0]), None, 0) is a and not cache(a)  # from the start: dropped
    a.read_batch(coords[:4], mpp=0.5)
    b = h.get(str(paths[1]), None, 0)
    assert b is not a and not cache(a)  # the next slide: dropped
    b.read_batch(coords[:4], mpp=0.5)
    assert h.get(str(paths[0]), None, 0) is a and not cache(b)  # and back
    assert _HANDLE_CACHE == 2
    c = h.get(str(paths[2]), None, 0)  # b is the least recently used: closed
    assert list(h._open.values()) == [a, c] and b._pyr is None
    h.close()


def test_map_pages_maps_shared_memory_writable_without_writing(tmp_path):
    """A reader process maps its slots up front by reading them: its first writes then take
    (almost) no page faults, and the data in the slots is not touched."""
    import resource
    from multiprocessing import shared_memory

    import numpy as np

    from edgepath.embed.reader import map_pages

    size = 8 << 20
    owner = shared_memory.SharedMemory(create=True, size=size)
    try:
        np.ndarray((size,), np.uint8, buffer=owner.buf)[:] = 7  # allocated, as the main does
        faults = []
        for mapped in (False, True):
            other = shared_memory.SharedMemory(name=owner.name)  # a fresh mapping, as a worker's
            buf = np.ndarray((size // 4,), np.float32, buffer=other.buf)
            if mapped:
                before = np.ndarray((size,), np.uint8, buffer=owner.buf).copy()
                map_pages(buf)
                np.testing.assert_array_equal(buf.view(np.uint8), before)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            buf.view(np.uint8)[::4096] = 1
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            del buf
            other.close()
        pages = size // 4096
        assert faults[0] > pages // 2  # unmapped: a fault per page written
        assert faults[1] < pages // 20
    finally:
        owner.close()
        owner.unlink()
