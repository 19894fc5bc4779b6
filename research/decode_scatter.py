"""Decoding straight into the output tiles: what the embed reader would gain (issue 26).

The embed reader decodes each 256-px JPEG tile of a tiled TIFF once, into a cache, and copies
the parts of each 224-px output tile from there (``TiffPyramid.read_tiles``). Its pass over a
full-size synthetic slide takes ~1.4 s where decoding alone (``bench read``'s decode limit)
takes ~1.1 s. The reader's copies looked like the gap, and what closes it would be decoding
into the output tiles: libjpeg's scanline API, each band of decoded rows copied to the output
tiles it belongs to while it is in the L1 cache. No binding edgepath uses (imagecodecs,
simplejpeg) exposes that, so ``research/decode_scatter.c`` does, on the system's libjpeg-turbo
(``gcc`` and ``libjpeg62-turbo-dev`` needed).

In one process, side by side, each repeat:

- ``decode_limit``: ``edgepath.bench.read.decode_limit`` (imagecodecs into one hot buffer);
- ``scanline_only``: the C decoder, bands of rows decoded into its L1 buffer, nothing copied;
- ``scanline_scatter``: the C decoder writing every output tile straight from its band buffer
  (``pread`` of each tile inside the timing, as the reader does), into a ring of ``--ring``
  output tiles (``embed``'s 3 slots of 32 tiles by default; ``--prefetch``: each band's
  destination lines asked for before it is decoded). Every output tile is there when
  its parts are decoded, which the reader's hand-off by batches would not allow: the figure is
  a lower bound of such a reader;
- ``copies_alone``: the scatter's copies (same rows, same addresses, same bands) from the C
  buffer as it is, with no decoding in between: what the copies cost on their own;
- ``reader``: the embed reader in this process (``TileReader`` with 0 workers, uint8, after one
  warm pass), as ``bench read`` times it.

First it checks that the scatter's tiles equal the reader's, bit for bit. Prints one JSON
line::

    python research/decode_scatter.py full.tiff --repeats 3
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgepath.bench.read import decode_limit, reader_pass, reader_pool
from edgepath.eval.machine import describe
from edgepath.slides import open_slide, tile_slide

HERE = Path(__file__).resolve().parent


def build(folder: Path) -> ctypes.CDLL:
    """Compile ``decode_scatter.c`` against the system's libjpeg into ``folder``."""
    if shutil.which("gcc") is None:
        sys.exit("decode_scatter: needs gcc and libjpeg headers (apt install gcc libjpeg-dev)")
    lib = folder / "libdecode_scatter.so"
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(HERE / "decode_scatter.c")]
    try:
        subprocess.run([*cmd, "-ljpeg"], check=True)
    except subprocess.CalledProcessError:
        sys.exit(
            "decode_scatter: gcc could not build it: libjpeg headers? (apt install libjpeg-dev)"
        )
    dll = ctypes.CDLL(str(lib))
    p, n = ctypes.c_char_p, ctypes.c_size_t
    dll.decode_scatter.argtypes = [p, n, p, n, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, p]
    i = ctypes.c_int
    dll.scatter_only.argtypes = [i, i, i, ctypes.c_void_p]
    dll.scatter_only.restype = None
    return dll


def plan(xy: np.ndarray, tile_px: int, tw: int, th: int, across: int) -> dict[int, list]:
    """For each TIFF tile under the output tiles at ``xy`` (level 0): its parts, as
    ``(output index, y0, y1, x0, x1 in the TIFF tile, row, column in the output tile)``."""
    parts: dict[int, list] = {}
    for o, (x, y) in enumerate(xy.tolist()):
        for ty in range(y // th, (y + tile_px - 1) // th + 1):
            for tx in range(x // tw, (x + tile_px - 1) // tw + 1):
                y0, y1 = max(y, ty * th), min(y + tile_px, (ty + 1) * th)
                x0, x1 = max(x, tx * tw), min(x + tile_px, (tx + 1) * tw)
                part = (o, y0 - ty * th, y1 - ty * th, x0 - tx * tw, x1 - tx * tw, y0 - y, x0 - x)
                parts.setdefault(ty * across + tx, []).append(part)
    return parts


def addresses(parts: dict[int, list], out: np.ndarray, keep: int | None = None) -> dict:
    """``parts`` as the C function's (n, 6) int64 rows, writing into ``out[o % len(out)]``; only
    output tiles below ``keep`` where given."""
    base, ring = out.ctypes.data, len(out)
    tile_b, row_b = out[0].nbytes, out.shape[2] * 3
    rows = {}
    for k, ps in parts.items():
        a = [
            (base + (o % ring) * tile_b + dy * row_b + dx * 3, row_b, y0, y1, x0, x1)
            for o, y0, y1, x0, x1, dy, dx in ps
            if keep is None or o < keep
        ]
        rows[k] = np.array(a, dtype=np.int64).reshape(-1, 6)
    return rows


def _passes(args: argparse.Namespace, coords: np.ndarray, run, rows, copies_alone) -> dict:
    """Seconds of each pass, ``args.repeats`` times side by side (see the module's docstring)."""
    T = args.tile_px
    times: dict[str, list[float]] = {}
    with reader_pool(mpp=args.mpp, tile_px=T, workers=0, batch=32) as reader:
        reader_pass(reader, args.slide, coords)  # warm
        for _ in range(args.repeats):
            lim = decode_limit(args.slide, coords, mpp=args.mpp, tile_px=T)
            times.setdefault("decode_limit", []).append(lim["seconds"])
            times.setdefault("scanline_only", []).append(run(None, pread=False)[0])
            sec, cp = run(rows, pread=True)
            times.setdefault("scanline_scatter", []).append(sec)
            times.setdefault("scanline_scatter_copies", []).append(cp)
            times.setdefault("copies_alone", []).append(copies_alone())
            sec, split = reader_pass(reader, args.slide, coords)
            times.setdefault("reader", []).append(sec)
            times.setdefault("reader_copies", []).append(split.get("copy", float("nan")))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slide", type=Path)
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--tile-px", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--band", type=int, default=16, help="rows decoded before their copies")
    ap.add_argument("--ring", type=int, default=96, help="output tiles written in turn")
    ap.add_argument(
        "--prefetch", action="store_true", help="prefetch each band's destination lines first"
    )
    args = ap.parse_args()
    T = args.tile_px
    with open_slide(args.slide) as s:
        coords = tile_slide(s, mpp=args.mpp, tile_px=T).coords
        level, _, exact = s.read_plan(args.mpp, T)
        pyr = s._pyramid()
        if pyr is None or level != 0 or not exact:
            sys.exit("decode_scatter: needs a tiled TIFF read at level 0 without resizing")
        page = pyr._pages[0]
        reference = np.empty((args.ring, T, T, 3), np.uint8)
        s.read_batch(coords[: args.ring], mpp=args.mpp, tile_px=T, out=reference)
    tw, th = page.tilewidth, page.tilelength
    xy = np.floor(coords).astype(np.int64)
    parts = plan(xy, T, tw, th, -(-page.imagewidth // tw))
    keys = sorted(parts)
    tables = page.jpegtables or b""
    rgb = int(page.photometric == 2 and not page.is_jfif)
    fd = os.open(args.slide, os.O_RDONLY)
    offsets, counts = page.dataoffsets, page.databytecounts
    data = {k: os.pread(fd, int(counts[k]), int(offsets[k])) for k in keys}
    message = ctypes.create_string_buffer(256)
    with tempfile.TemporaryDirectory() as tmp:
        dll = build(Path(tmp))
        ctypes.c_int.in_dll(dll, "band").value = args.band
        ctypes.c_int.in_dll(dll, "prefetch").value = int(args.prefetch)
        copy_s = ctypes.c_double.in_dll(dll, "copy_s")

        def run(rows: dict | None, *, pread: bool) -> tuple[float, float]:
            copy_s.value = 0.0
            t0 = time.perf_counter()
            for k in keys:
                b = os.pread(fd, int(counts[k]), int(offsets[k])) if pread else data[k]
                a = rows[k] if rows is not None else np.empty((0, 6), np.int64)
                if dll.decode_scatter(
                    tables, len(tables), b, len(b), rgb, len(a), a.ctypes.data, message
                ):
                    sys.exit(f"decode_scatter: tile {k}: {message.value.decode()}")
            return time.perf_counter() - t0, copy_s.value

        ring = np.zeros((args.ring, T, T, 3), np.uint8)
        run(addresses(parts, ring, keep=args.ring), pread=False)
        if not np.array_equal(ring, reference):
            sys.exit("decode_scatter: the scatter's tiles differ from the reader's")
        rows = addresses(parts, ring)

        def copies_alone() -> float:
            t0 = time.perf_counter()
            for k in keys:
                dll.scatter_only(tw, th, len(rows[k]), rows[k].ctypes.data)
            return time.perf_counter() - t0

        times = _passes(args, coords, run, rows, copies_alone)
    os.close(fd)
    med = {k: statistics.median(v) for k, v in times.items()}
    limit = min(times["decode_limit"])
    print(
        json.dumps(
            {
                "command": " ".join(["python", "research/decode_scatter.py", *sys.argv[1:]]),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "slide": str(args.slide),
                "tiles": len(coords),
                "tiff_tiles": len(keys),
                "band": args.band,
                "ring": args.ring,
                "prefetch": args.prefetch,
                "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
                "median_s": {k: round(v, 4) for k, v in med.items()},
                "decode_limit_s": round(limit, 4),
                "fraction_of_limit": {
                    k: round(limit / med[k], 3) for k in ("scanline_scatter", "reader")
                },
                "machine": describe(),
            }
        )
    )


if __name__ == "__main__":
    main()
