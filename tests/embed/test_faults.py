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

import numpy as np
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


def _corrupt_tile(path, x: int, y: int) -> tuple[int, int]:
    """Break the JPEG scan data of the level-0 TIFF tile holding (x, y); headers stay valid.

    A JPEG marker (0xFFD8) is written into the middle of the entropy-coded data, as a bit error
    on the scanner's disk would; libjpeg stops there ("Corrupt JPEG data: premature end of
    data segment"). Returns the top-left corner of the TIFF tile.
    """
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        tw, th = page.tilewidth, page.tilelength
        across = -(-page.shape[1] // tw)
        k = (y // th) * across + x // tw
        offset, count = page.dataoffsets[k], page.databytecounts[k]
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(count))
        sos = data.index(b"\xff\xda")
        start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
        data[(start + count) // 2 : (start + count) // 2 + 2] = b"\xff\xd8"
        f.seek(offset)
        f.write(data)
    return (x // tw) * tw, (y // th) * th


@pytest.fixture(scope="module")
def synthetic_slides(tmp_path_factory):
    """Two synthetic slides: one good, one whose JPEG data is broken in a middle tissue tile."""
    from edgepath.slides import synthesize_slide, tile_slide

    d = tmp_path_factory.mktemp("corrupt")
    good = synthesize_slide(d / "good.tiff", tiles=40, seed=11)
    bad = d / "bad.tiff"
    shutil.copy(good, bad)
    grid = tile_slide(good, mpp=0.5, tile_px=224)
    x, y = (int(v) for v in grid.coords[len(grid.coords) // 2])
    fp = grid.level0_tile_size
    corner = _corrupt_tile(bad, int(x + fp / 2), int(y + fp / 2))
    return good, bad, corner, grid


def _overlaps(x: int, y: int, fp: float, corner: tuple[int, int], side: int = 256) -> bool:
    return (
        x < corner[0] + side and corner[0] < x + fp and y < corner[1] + side and corner[1] < y + fp
    )


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_tile_fails_its_slide_alone(
    run_cli, tiny_model, synthetic_slides, tmp_path, workers
):
    import re

    good, bad, corner, grid = synthetic_slides
    slides = tmp_path / "slides"
    slides.mkdir()
    for name, src in (("a.tiff", good), ("b.tiff", bad), ("c.tiff", good)):
        shutil.copy(src, slides / name)
    out = tmp_path / "feats"
    code, data, stderr = _embed(run_cli, tiny_model, [slides], out, "--workers", workers)
    assert code == 3, stderr  # a slide failed, the batch went on
    assert (data["done"], data["failed"]) == (2, 1)
    (failure,) = data["failures"]
    msg = failure["error"]
    assert failure["slide"] == str(slides / "b.tiff") and msg.count(str(slides / "b.tiff")) == 1
    # OpenSlide says "Corrupt JPEG data", imagecodecs (the tifffile path) "Jpeg8Error: ..."
    m = re.search(
        r"tile (\d+) at level-0 x=(\d+), y=(\d+): .*(?:Corrupt JPEG data|Jpeg8Error)", msg
    )
    assert m, msg
    index, x, y = (int(v) for v in m.groups())
    assert tuple(grid.coords[index]) == (x, y)  # the index is the tile's place in the grid
    assert _overlaps(x, y, grid.level0_tile_size, corner)  # and it is the broken one
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "c.h5"]


def test_rescan_under_the_same_name_is_read_afresh(tiny_model, synthetic_slides, tmp_path):
    """A long-lived reader pool reads a slide replaced under the same name, not the old handle.

    OpenSlide keeps a handle in error after a failed read, and the workers cached handles by
    path: a rescan of a corrupt slide (watch embeds it again) failed again from the old handle.
    """
    from edgepath.embed.model import open_model
    from edgepath.embed.run import Embedder

    good, bad, _, _ = synthetic_slides
    slide = tmp_path / "s.tiff"
    shutil.copy(bad, slide)
    engine, info = open_model(tiny_model, engine="onnxruntime")
    with Embedder(engine, info, tmp_path / "feats", workers=1, batch=8) as emb:
        first = emb.process(slide)
        assert first.status == "failed" and _corrupt(first.error)
        with open(slide, "r+b") as f:  # rescanned in place: same path, same inode
            f.write(good.read_bytes())
        second = emb.process(slide)
    assert second.status == "done", second.error
    engine, info = open_model(tiny_model, engine="onnxruntime")  # the first one was closed
    with Embedder(engine, info, tmp_path / "ref", workers=0, batch=8) as emb:
        assert emb.process(good).status == "done"
    a, b = read_features(tmp_path / "feats" / "s.h5"), read_features(tmp_path / "ref" / "good.h5")
    np.testing.assert_allclose(a.features, b.features, atol=1e-5)


def _corrupt(error: str | None) -> bool:
    """A broken-JPEG message: OpenSlide's ("Corrupt JPEG data") or the tifffile path's."""
    return error is not None and ("Corrupt JPEG" in error or "does not decode" in error)
