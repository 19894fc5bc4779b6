"""Faults while writing: a read-only output folder, a disk that fills mid-slide, corrupt tiles.

Every fault gives one clear line naming the folder (or the slide and the tile), leaves no partial
file and no lock, and a rerun finishes once the fault is gone. As root, permission bits do not
stop writes: the read-only and full folders are then real tmpfs mounts (skipped where mounting
is not allowed); the injected ENOSPC runs everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading

import pytest

from edgepath.embed.features import read_features

ROOT = os.geteuid() == 0


def _mount(folder, options: str) -> None:
    if not ROOT or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture()
def mounts():
    """Mount tmpfs folders for a test; unmounted afterwards."""
    mounted = []

    def mount(folder, options: str):
        folder.mkdir(parents=True, exist_ok=True)
        _mount(folder, options)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _make_readonly(folder, mounts):
    """A folder this process cannot write: 0555 for a normal user, a read-only tmpfs for root."""
    folder.mkdir(parents=True, exist_ok=True)
    if ROOT:
        mounts(folder, "ro,size=1m")
    else:
        folder.chmod(0o555)
    return folder


def _leftovers(folder) -> list[str]:
    """Hidden files (locks, temporaries) left in an output folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _embed(run_cli, tiny_model, slides, out, *extra):
    code, stdout, stderr = run_cli(
        "embed",
        str(tiny_model),
        *map(str, slides),
        "-o",
        str(out),
        "--engine",
        "onnxruntime",
        "--workers",
        "0",
        "--json",
        *extra,
    )
    return code, (json.loads(stdout) if stdout.strip() else None), stderr


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_readonly_output_folder_is_one_clear_error(
    run_cli, tiny_model, slides_dir, tmp_path, mounts
):
    out = _make_readonly(tmp_path / "feats", mounts)
    try:
        code, data, stderr = _embed(run_cli, tiny_model, [slides_dir], out)
    finally:
        if not ROOT:
            out.chmod(0o755)
    assert code == 2, stderr
    assert data is None  # stopped before any slide, not two failed slides
    (line,) = _errors(stderr)
    assert str(out) in line and "output folder" in line and "writable" in line
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []


def _slide_writes(monkeypatch, fail_for: set[str]):
    """Make ``write_features`` run out of space halfway through the files named in ``fail_for``."""
    import edgepath.embed.features as features

    real_write = os.write

    def write(fd, data):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""
        if any(f".{stem}.h5." in name for stem in fail_for):
            real_write(fd, bytes(data[: len(data) // 2]))  # half of the file reached the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(features.os, "write", write)


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="names temp files via /proc")
def test_disk_full_mid_slide_injected(run_cli, tiny_model, slides_dir, tmp_path, monkeypatch):
    out = tmp_path / "feats"
    shutil.copy(slides_dir / "a.svs", slides_dir / "c.svs")
    _slide_writes(monkeypatch, {"b"})
    code, data, stderr = _embed(run_cli, tiny_model, [slides_dir], out)
    assert code == 2, stderr
    (line,) = _errors(stderr)
    assert str(out) in line and "no space left" in line and "rerun" in line
    assert "Traceback" not in stderr
    assert data["error"] == line.removeprefix("error: ")
    # a is done; b hit the full disk and is not counted as a failed slide; c was not tried
    assert [(r["slide"][-5:], r["status"]) for r in data["results"]] == [("a.svs", "done")]
    assert sorted(p.name for p in out.iterdir()) == ["a.h5"]  # no partial b, no lock left

    monkeypatch.undo()  # space is back
    code, data, stderr = _embed(run_cli, tiny_model, [slides_dir], out)
    assert code == 0, stderr
    assert (data["skipped"], data["done"]) == (1, 2)
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5", "c.h5"]
    assert read_features(out / "b.h5").features.shape[0] > 0


def test_disk_full_tmpfs(run_cli, tiny_model, slides_dir, tmp_path, mounts):
    out = mounts(tmp_path / "feats", "size=64k")
    filler = out / "filler"
    filler.write_bytes(b"\0" * (64 - 8) * 1024)  # 8 KiB left: the lock fits, features do not
    code, data, stderr = _embed(run_cli, tiny_model, [slides_dir], out)
    assert code == 2, stderr
    (line,) = _errors(stderr)
    assert str(out) in line and "no space left" in line
    assert data["error"] == line.removeprefix("error: ")
    # HDF5 writing to a full disk printed "Exception ignored in ObjectID.__dealloc__" tracebacks
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert sorted(p.name for p in out.iterdir()) == ["filler"]  # no partial file, no lock
    filler.unlink()
    code, _, stderr = _embed(run_cli, tiny_model, [slides_dir], out)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.h5"]


def test_lock_is_not_left_when_its_write_fails(tmp_path, monkeypatch):
    from edgepath.embed import lock as lock_mod

    def dump(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock_mod.json, "dump", dump)
    lk = lock_mod.SlideLock(tmp_path / ".a.h5.lock")
    with pytest.raises(OSError):
        lk.acquire()
    assert list(tmp_path.iterdir()) == []  # the empty lock made busy every process for 5 s


def _watcher(tiny_model, out, inbox, **kw):
    """An in-process ``watch`` on a thread; returns (embedder, thread, results, summary box)."""
    from edgepath.embed.model import open_model
    from edgepath.embed.run import Embedder
    from edgepath.embed.watch import watch

    engine, info = open_model(tiny_model, engine="onnxruntime")
    emb = Embedder(engine, info, out, workers=0, batch=16)
    results, box = [], {}

    def run():
        box["summary"] = watch(emb, inbox, poll=0.05, settle=0.2, on_result=results.append, **kw)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return emb, t, results, box


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="names temp files via /proc")
def test_watch_retries_once_space_is_back(tiny_model, sample_slide, tmp_path, monkeypatch, caplog):
    from tests.embed.conftest import wait_for

    inbox, out = tmp_path / "inbox", tmp_path / "feats"
    inbox.mkdir()
    shutil.copy(sample_slide, inbox / "a.svs")
    _slide_writes(monkeypatch, {"a"})
    emb, t, results, box = _watcher(tiny_model, out, inbox, retry=0.3)
    try:
        wait_for(lambda: "no space left" in caplog.text, 60, "the disk-full error")
        assert results == []  # not recorded as a failed slide: it stays pending
        assert _leftovers(out) == []  # the lock released, no partial file
        monkeypatch.undo()  # space is back: the next retry finishes it
        wait_for(lambda: (out / "a.h5").exists(), 60, "a.h5 after the retry")
        wait_for(lambda: results, 10, "a's result")
    finally:
        emb.request_stop()
        t.join(30)
        emb.close()
    assert [r.status for r in results] == ["done"]
    assert box["summary"].count("done") == 1
