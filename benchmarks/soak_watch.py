"""Soak of ``edgepath watch``: slides dropped into a watched folder over time, then SIGTERM.

It synthesizes N small slides (``edgepath.slides.synthesize_slide``), starts ``edgepath watch``
in a subprocess and drops the slides into its folder one after another: most copied at once,
every fifth good one written slowly in chunks (it grows while watch looks), about 10 % bad
(truncated inside the level-0 tiles, corrupt JPEG data in a tissue tile, or not a slide at all),
and one extra slide removed before it settles. Throughout, it samples the resident memory and
the open file descriptors of the watch process and its reader processes (``/proc``). Once every
slide has its log line it waits a few polls more, sends SIGTERM and checks the outputs: every
good slide embedded exactly once, every bad one failed with a reason, the removed one never
embedded, nothing partial in the output folder, no shared memory or reader process left.

Run (prints one JSON object with --json; exit 1 if a check failed)::

    python benchmarks/soak_watch.py --slides 40 --json
    python benchmarks/soak_watch.py --slides 200 --engine openvino --json --cache /tmp/soak

The model is the tests' ``vit-test14`` student (random weights, exported to ONNX; its card is
in tests/cards) unless ``--model`` names an artifact. Linux only (``/proc``, ``/dev/shm``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this tree's edgepath, also when run as a script
    sys.path.insert(0, str(REPO))
TEST_CARDS = REPO / "tests" / "cards"
LINE = re.compile(r"^\S+ (done|skipped|busy|failed)\s+(\S+): (.*)$")
BAD_KINDS = ("truncated", "corrupt", "garbage")


@dataclass
class Drop:
    """One file the soak drops into the watched folder."""

    name: str
    kind: str  # good, slow, truncated, corrupt, garbage, removed
    source: Path

    @property
    def bad(self) -> bool:
        return self.kind in BAD_KINDS


@dataclass
class Samples:
    """Memory and descriptors of the watch process tree over time."""

    t: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)  # bytes, main process + readers
    rss_main: list[int] = field(default_factory=list)  # bytes, the watch process alone
    fds: list[int] = field(default_factory=list)
    handled: list[int] = field(default_factory=list)  # slides with a log line at that time


def _env() -> dict[str, str]:
    env = dict(os.environ)
    cards = [d for d in env.get("EDGEPATH_CARDS", "").split(os.pathsep) if d]
    env["EDGEPATH_CARDS"] = os.pathsep.join([str(TEST_CARDS), *cards])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def build_model(folder: Path) -> Path:
    """The ``vit-test14`` student with ``model.onnx`` (built once per folder)."""
    os.environ["EDGEPATH_CARDS"] = _env()["EDGEPATH_CARDS"]
    from edgepath.export.onnx import export_onnx
    from edgepath.models import resolve
    from edgepath.models.artifact import is_artifact, save_encoder, write_manifest

    if is_artifact(folder):
        return folder
    enc = resolve("vit-test14").encoder
    manifest = save_encoder(folder, enc, kind="student", name="vit-test14")
    export_onnx(enc, folder / "model.onnx")
    manifest["files"]["onnx"] = "model.onnx"
    write_manifest(folder, manifest)
    return folder


def corrupt_tile(path: Path) -> None:
    """Write a JPEG marker into the scan data of a level-0 tissue tile (headers stay valid)."""
    import tifffile

    from edgepath.slides import tile_slide

    grid = tile_slide(path, mpp=0.5, tile_px=224)
    x, y = (int(v + grid.level0_tile_size / 2) for v in grid.coords[len(grid.coords) // 2])
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        k = (y // page.tilelength) * -(-page.shape[1] // page.tilewidth) + x // page.tilewidth
        offset, count = page.dataoffsets[k], page.databytecounts[k]
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(count))
        sos = data.index(b"\xff\xda")
        start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
        data[(start + count) // 2 : (start + count) // 2 + 2] = b"\xff\xd8"
        f.seek(offset)
        f.write(data)


def make_slides(stage: Path, n: int, *, seed: int) -> list[Drop]:
    """N slides to drop (about 10 % bad) plus one to remove before it settles, in drop order."""
    import tifffile

    from edgepath.slides import synthesize_slide

    rng = random.Random(seed)
    stage.mkdir(parents=True, exist_ok=True)
    n_bad = max(1, round(n / 10))
    bad_at = set(rng.sample(range(1, n), n_bad)) if n > 1 else {0}
    drops: list[Drop] = []
    for i in range(n + 1):
        src = stage / f"src-{i:04d}.tiff"
        if not src.exists():
            synthesize_slide(src, tiles=rng.randint(6, 30), seed=seed * 100_000 + i, levels=3)
        name = f"slide-{i:04d}.tiff"
        if i == n:  # the extra one, removed before it settles
            drops.insert(rng.randrange(1, n + 1), Drop(name, "removed", src))
            continue
        if i not in bad_at:
            kind = "slow" if i % 5 == 2 else "good"
            drops.append(Drop(name, kind, src))
            continue
        kind = BAD_KINDS[len([d for d in drops if d.bad]) % len(BAD_KINDS)]
        bad = stage / f"{kind}-{i:04d}.tiff"
        if kind == "truncated":  # cut inside the level-0 tiles (a copy that stopped)
            with tifffile.TiffFile(src) as tf:
                end = int(tf.pages[0].dataoffsets[-1])
            bad.write_bytes(src.read_bytes()[: end // 2])
        elif kind == "corrupt":
            shutil.copy(src, bad)
            corrupt_tile(bad)
        else:
            bad.write_bytes(b"II*\x00" + rng.randbytes(100_000))
        drops.append(Drop(name, kind, bad))
    return drops


def _write_slowly(src: Path, dst: Path, *, chunks: int, pause: float, stop_at: int = 0) -> None:
    """Write ``src`` to ``dst`` in ``chunks`` pieces ``pause`` s apart (a scanner writing)."""
    data = src.read_bytes()
    step = -(-len(data) // chunks)
    with open(dst, "wb") as f:
        for k, i in enumerate(range(0, len(data), step)):
            if stop_at and k == stop_at:
                break
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


def drop_all(drops: list[Drop], inbox: Path, *, interval: float, settle: float) -> None:
    """Drop the slides into ``inbox``, ``interval`` s apart (slow ones write on their own)."""
    writers = []
    pause = min(0.25, settle / 4)  # well under the settle time: never still long enough
    for d in drops:
        dst = inbox / d.name
        if d.kind == "slow":
            chunks = max(4, int(3 * settle / pause))
            writers.append(
                threading.Thread(
                    target=_write_slowly,
                    args=(d.source, dst),
                    kwargs={"chunks": chunks, "pause": pause},
                )
            )
            writers[-1].start()
        elif d.kind == "removed":
            _write_slowly(d.source, dst, chunks=8, pause=pause, stop_at=4)
            dst.unlink()  # the scan was cancelled: gone before it settled
        else:
            shutil.copyfile(d.source, dst)
        time.sleep(interval)
    for w in writers:
        w.join()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in task.read_text().split()]
    return kids


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _rss_fds(pid: int) -> tuple[int, int, int]:
    """Resident bytes of ``pid`` with its child processes and alone, and their open fds."""
    rss = main = fds = 0
    for p in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (OSError, AttributeError):  # exited meanwhile, or a zombie
            continue
        rss += kb
        main = kb if p == pid else main
    return rss, main, fds


def _sample(pid: int, samples: Samples, lines: dict, stop: threading.Event, every: float) -> None:
    t0 = time.monotonic()
    while not stop.wait(every):
        rss, main, fds = _rss_fds(pid)
        if rss:
            samples.t.append(time.monotonic() - t0)
            samples.rss.append(rss)
            samples.rss_main.append(main)
            samples.fds.append(fds)
            samples.handled.append(len(lines))


def _follow(stream: Any, lines: dict[str, list[tuple[str, str]]], log: list[str]) -> None:
    """Read watch's stderr: one line per slide (status, detail), in order."""
    for raw in stream:
        log.append(raw.rstrip("\n"))
        m = LINE.match(raw.strip())
        if m:
            lines.setdefault(m.group(2), []).append((m.group(1), m.group(3)))


def _watch_cmd(args: argparse.Namespace, model: Path, inbox: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgepath",
        "watch",
        str(inbox),
        "--model",
        str(model),
        "-o",
        str(out),
        "--engine",
        args.engine,
        "--workers",
        str(args.workers),
        "--poll",
        str(args.poll),
        "--settle",
        str(args.settle),
        "--json",
    ]


def run_soak(args: argparse.Namespace, model: Path, drops: list[Drop], work: Path) -> dict:
    """Start watch, drop the slides, wait until each has its line, SIGTERM, and measure."""
    inbox, out = work / "inbox", work / "features"
    shutil.rmtree(inbox, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    inbox.mkdir(parents=True)
    expected = {d.name for d in drops if d.kind != "removed"}
    lines: dict[str, list[tuple[str, str]]] = {}
    log: list[str] = []
    samples, stop = Samples(), threading.Event()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _watch_cmd(args, model, inbox, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    reader = threading.Thread(target=_follow, args=(proc.stderr, lines, log), daemon=True)
    reader.start()
    sampler = threading.Thread(
        target=_sample, args=(proc.pid, samples, lines, stop, args.sample), daemon=True
    )
    sampler.start()
    died_early = False
    try:
        drop_all(drops, inbox, interval=args.interval, settle=args.settle)
        deadline = time.monotonic() + args.timeout
        while not expected <= set(lines) and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(args.linger)  # a few more polls: nothing may be done twice
        died_early = proc.poll() is not None
        slots = {p.name for p in Path("/dev/shm").glob(f"edgepath-{proc.pid}-*")}
        readers = _children(proc.pid)
        stop.set()
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    seconds = time.monotonic() - t0
    time.sleep(0.5)
    left = {
        "shm": sorted(p.name for p in Path("/dev/shm").glob(f"edgepath-{proc.pid}-*")),
        "readers": [p for p in readers if _running(p)],
    }
    if args.series is not None:
        args.series.write_text(json.dumps(samples.__dict__))
    return _report(
        drops, lines, log, stdout, proc.returncode, died_early, samples, out, left, slots, seconds
    )


def _statuses(stdout: str) -> tuple[dict[str, Any] | None, dict[str, list[dict[str, Any]]]]:
    """watch's JSON summary and its results by slide name."""
    try:
        summary = json.loads(stdout)
    except (json.JSONDecodeError, TypeError):
        return None, {}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in summary.get("results", []):
        by_name.setdefault(Path(r["slide"]).name, []).append(r)
    return summary, by_name


def _outputs(out: Path, by_name: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Files in the output folder that should not be there, and feature files that do not read."""
    from edgepath.embed.features import read_attrs

    done = {Path(n).stem: rs for n, rs in by_name.items() if any(r["status"] == "done" for r in rs)}
    partial, unreadable = [], []
    for f in sorted(out.iterdir()) if out.is_dir() else []:
        if f.suffix != ".h5" or f.stem not in done:
            partial.append(f.name)
            continue
        n = next(r["n_tiles"] for r in done[f.stem] if r["status"] == "done")
        try:
            ok = int(read_attrs(f)["n_tiles"]) == n
        except Exception:
            ok = False
        if not ok:
            unreadable.append(f.name)
    return {"partial": partial, "unreadable": unreadable}


def _growth(samples: Samples, warmup: int) -> dict[str, Any]:
    """RSS and descriptors after ``warmup`` slides were handled vs the last sample."""
    if not samples.rss:
        return {"rss_growth": None, "fd_growth": None}
    i = next((k for k, h in enumerate(samples.handled) if h >= warmup), len(samples.rss) - 1)
    warm_rss, last_rss = samples.rss[i], samples.rss[-1]
    return {
        "rss_growth": round((last_rss - warm_rss) / warm_rss, 4),
        "rss_growth_main": round(
            (samples.rss_main[-1] - samples.rss_main[i]) / samples.rss_main[i], 4
        ),
        "fd_growth": samples.fds[-1] - samples.fds[i],
        "rss_mb": {
            "warm": round(warm_rss / 2**20, 1),
            "last": round(last_rss / 2**20, 1),
            "peak": round(max(samples.rss) / 2**20, 1),
            "main_warm": round(samples.rss_main[i] / 2**20, 1),
            "main_last": round(samples.rss_main[-1] / 2**20, 1),
        },
        "fds": {"warm": samples.fds[i], "last": samples.fds[-1], "peak": max(samples.fds)},
        "warmup_slides": warmup,
        "samples": len(samples.rss),
    }


def _report(
    drops: list[Drop],
    lines: dict[str, list[tuple[str, str]]],
    log: list[str],
    stdout: str,
    returncode: int,
    died_early: bool,
    samples: Samples,
    out: Path,
    left: dict[str, list[Any]],
    slots: set[str],
    seconds: float,
) -> dict[str, Any]:
    summary, by_name = _statuses(stdout)
    counted = [d for d in drops if d.kind != "removed"]

    def statuses(name: str) -> list[str]:
        return [r["status"] for r in by_name.get(name, [])]

    done = [d for d in counted if "done" in statuses(d.name)]
    failed = [d for d in counted if "failed" in statuses(d.name) and d not in done]
    crashed = (
        died_early
        or returncode != 0
        or summary is None
        or any(s in ln for ln in log for s in ("Traceback", "internal error", "Exception ignored"))
    )
    report: dict[str, Any] = {
        "slides": len(counted),
        "embedded": len(done),
        "failed": len(failed),
        "duplicates": sum(statuses(d.name).count("done") > 1 for d in counted)
        + sum(len([s for s, _ in ls if s == "done"]) > 1 for ls in lines.values()),
        "crashed": crashed,
        **_growth(samples, warmup=max(3, len(counted) // 10)),
        "seconds": round(seconds, 1),
        "bad": {k: sum(d.kind == k for d in counted) for k in BAD_KINDS},
        "slow": sum(d.kind == "slow" for d in counted),
        "missing": [d.name for d in counted if not d.bad and d not in done],
        "bad_embedded": [d.name for d in counted if d.bad and d in done],
        "failed_without_reason": [
            d.name for d in failed if not all(r.get("error") for r in by_name[d.name])
        ],
        "removed_embedded": any(d.kind == "removed" and d.name in by_name for d in drops),
        "tiles": summary.get("tiles") if summary else None,
        **_outputs(out, by_name),
        "slots_while_running": len(slots),
        "shm_left": left["shm"],
        "readers_left": left["readers"],
        "returncode": returncode,
        "failures": [
            {"slide": d.name, "kind": d.kind, "error": by_name[d.name][-1].get("error")}
            for d in failed
        ],
    }
    report["ok"] = _ok(report)
    return report


def _ok(r: dict[str, Any]) -> bool:
    return (
        not r["crashed"]
        and r["duplicates"] == 0
        and r["embedded"] + r["failed"] == r["slides"]
        and r["failed"] == sum(r["bad"].values())
        and not (r["missing"] or r["bad_embedded"] or r["failed_without_reason"])
        and not r["removed_embedded"]
        and not (r["partial"] or r["unreadable"] or r["shm_left"] or r["readers_left"])
        and r["rss_growth"] is not None
        and r["rss_growth"] <= 0.10
    )


def machine() -> dict[str, Any]:
    """The CPU this ran on (from /proc/cpuinfo) and the load."""
    name = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return {"cpu": name, "cores": os.cpu_count(), "loadavg": os.getloadavg()[0]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slides", type=int, default=40, help="slides to drop (about 10%% bad)")
    ap.add_argument("--engine", choices=("onnxruntime", "openvino"), default="onnxruntime")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--model", type=Path, help="artifact folder (default: vit-test14 + ONNX)")
    ap.add_argument("--cache", type=Path, help="keep the model and slides here between runs")
    ap.add_argument("--workers", type=int, default=1, help="watch's reader processes")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between drops")
    ap.add_argument("--poll", type=float, default=0.2)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--sample", type=float, default=0.5, help="seconds between RSS/fd samples")
    ap.add_argument("--linger", type=float, default=3.0, help="seconds watched after the last")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--series", type=Path, help="write the samples here (JSON)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the soak; returns (and prints) the report."""
    args = parse_args(argv)
    tmp = None
    if args.cache is None:
        tmp = tempfile.mkdtemp(prefix="edgepath-soak-")
    work = args.cache or Path(tmp)
    try:
        t0 = time.monotonic()
        model = args.model or build_model(work / "model")
        drops = make_slides(work / "stage", args.slides, seed=args.seed)
        prepared = time.monotonic() - t0
        report = run_soak(args, model, drops, work / f"run-{args.engine}")
        report.update(engine=args.engine, workers=args.workers, prepare_seconds=round(prepared, 1))
        report.update(machine())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return report


def _print(r: dict[str, Any]) -> None:
    keys = ("slides", "embedded", "failed", "duplicates", "crashed", "rss_growth", "fd_growth")
    print("  ".join(f"{k}={r[k]}" for k in keys) + f"  seconds={r['seconds']}")
    print(f"rss MiB {r.get('rss_mb')}  fds {r.get('fds')}  {r['cpu']} x{r['cores']}")
    for f in r["failures"]:
        print(f"  failed ({f['kind']}): {f['slide']}: {f['error']}")
    print("ok" if r["ok"] else "NOT OK: see the JSON (--json) for what failed")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
