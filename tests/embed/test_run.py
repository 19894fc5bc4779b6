"""The reader pool and the per-slide runner in-process: order, errors, busy slides, clean stops."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgepath.embed.jobs import lock_path
from edgepath.embed.lock import SlideLock
from edgepath.embed.reader import Preprocess, TileReader
from edgepath.embed.run import Embedder, ModelInfo, NullReporter
from edgepath.errors import SlideReadError

PRE = Preprocess(mpp=0.5, tile_px=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _coords(sample_slide):
    from edgepath.slides import tile_slide

    return tile_slide(sample_slide, mpp=0.5, tile_px=224).coords[:10]


def test_workers_read_what_inline_reads_in_order(sample_slide):
    from edgepath.runtime import normalize
    from edgepath.slides import open_slide

    coords = _coords(sample_slide)
    with TileReader(PRE, batch=3, workers=0) as r0:
        inline = [(s, x.copy()) for s, x in r0.batches(sample_slide, coords)]
    with TileReader(PRE, batch=3, workers=2) as r2:
        pooled = [(s, x.copy()) for s, x in r2.batches(sample_slide, coords)]
        # the pool survives a bad slide and goes on with the next one
        with pytest.raises(SlideReadError):
            list(r2.batches(sample_slide.parent / "missing.svs", coords))
        again = np.concatenate([x.copy() for _, x in r2.batches(sample_slide, coords)])
    assert [s for s, _ in inline] == [s for s, _ in pooled] == [0, 3, 6, 9]
    a = np.concatenate([x for _, x in inline])
    np.testing.assert_array_equal(a, np.concatenate([x for _, x in pooled]))
    np.testing.assert_array_equal(a, again)

    spec = SimpleNamespace(input=SimpleNamespace(mean=PRE.mean, std=PRE.std))
    with open_slide(sample_slide) as s:
        # the reader's path (against read_tile: tests/slides/test_pyramid.py)
        tiles = s.read_batch(coords, mpp=0.5, tile_px=224)
    np.testing.assert_allclose(a, normalize(tiles, spec), atol=1e-5)  # runtime's arithmetic


def test_uint8_layout_for_fused_graphs(sample_slide):
    coords = _coords(sample_slide)
    pre = Preprocess(**{**PRE.__dict__, "uint8": True})
    with TileReader(pre, batch=4, workers=1) as r:
        x = np.concatenate([b.copy() for _, b in r.batches(sample_slide, coords)])
    assert x.dtype == np.uint8 and x.shape == (10, 224, 224, 3)


class _Engine:
    """A stand-in engine: mean colour per tile (cheap, deterministic)."""

    name, precision, input_format, embed_dim = "fake", "fp32", "nchw-float32", 3

    def __init__(self, spec, on_call=None) -> None:
        self.spec, self.on_call, self.calls = spec, on_call, 0

    def __call__(self, x):
        self.calls += 1
        if self.on_call:
            self.on_call(self)
        return x.mean(axis=(2, 3))


@pytest.fixture()
def spec():
    from edgepath.models.cards import InputSpec
    from edgepath.models.students import student_spec

    return student_spec("vit-test14", input=InputSpec(224, 0.5, PRE.mean, PRE.std))


INFO = ModelInfo(id="fake", sha256="0" * 64, engine="fake", precision="fp32")


def test_stop_mid_slide_leaves_nothing(spec, sample_slide, tmp_path):
    out = tmp_path / "feats"
    emb = Embedder(
        _Engine(spec, on_call=lambda e: e.calls == 2 and emb.request_stop()),
        INFO,
        out,
        batch=4,
        workers=1,
        reporter=NullReporter(),
    )
    with emb:
        summary = emb.run([sample_slide, sample_slide])
    assert summary.interrupted and summary.results == [] and summary.exit_code == 130
    assert list(out.iterdir()) == []  # no feature file, no temporary, no lock


def test_busy_and_lost_locks(spec, sample_slide, tmp_path):
    out = tmp_path / "feats"
    other = SlideLock(lock_path(out / "cmu-1-small-region.h5"), heartbeat=0)
    with Embedder(_Engine(spec), INFO, out, batch=8, workers=0) as emb:
        assert other.acquire()
        assert emb.process(sample_slide).status == "busy"  # a live holder: left alone
        other.release()
        r = emb.process(sample_slide)
        assert r.status == "done" and r.n_tiles > 0
        assert emb.process(sample_slide).status == "skipped"

    # a run whose lock was taken over while it worked drops its result
    def steal(e):
        lp = lock_path(out / "cmu-1-small-region.h5")
        lp.write_text('{"pid": 1, "host": "elsewhere", "token": "thief"}')

    with Embedder(_Engine(spec, on_call=steal), INFO, out, batch=8, workers=0, force=True) as emb:
        r = emb.process(sample_slide)
    assert r.status == "failed" and "took this slide's lock over" in r.error


def test_bar_reporter_rates():
    from edgepath.cli.embed import BarReporter
    from edgepath.embed.run import SlideResult

    class Bar:
        def __init__(self):
            self.fields = {}

        def add_task(self, name, total, rate):
            self.fields[name] = {"total": total, "rate": rate}
            return name

        def remove_task(self, task):
            self.fields.pop(task)

        def update(self, task, advance=0, rate=""):
            self.fields[task]["rate"] = rate

    from pathlib import Path

    bar = Bar()
    rep = BarReporter(bar, n_slides=2)
    rep.slide_started(Path("a.svs"), 10)
    rep.tiles_done(4)
    assert bar.fields["a.svs"]["rate"].endswith("tiles/s")
    rep.slide_finished(SlideResult("a.svs", "a.h5", "done", n_tiles=10, seconds=1.0))
    assert bar.fields["slides"]["rate"].endswith("WSI/min") and rep.done == 1
    rep.slide_started(Path("b.svs"), 5)  # the per-slide bar is replaced
    assert "a.svs" not in bar.fields and bar.fields["b.svs"]["total"] == 5


def test_engine_error_leaves_nothing_in_flight_for_the_next_slide(spec, sample_slide, tmp_path):
    """A slide whose engine call fails does not hand its late batches to the next slide.

    The failed slide's batch generator used to be closed only when garbage-collected; a log
    handler keeping the error's traceback kept it open with batches in flight, and the next
    slide took them (and their shared-memory slots) as its own.
    """
    import logging

    from edgepath.embed.features import read_features
    from edgepath.slides import synthesize_slide

    other = synthesize_slide(tmp_path / "other.tiff", tiles=12, seed=4)
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            kept.append(record)

    def fail_first(engine):
        if engine.calls == 1:
            raise RuntimeError("engine failed")

    logger = logging.getLogger("edgepath.embed.run")
    handler, level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with Embedder(_Engine(spec, fail_first), INFO, tmp_path / "a", batch=2, workers=1) as emb:
            assert emb.process(sample_slide).status == "failed"
            assert any(r.exc_info for r in kept)  # the traceback is still referenced
            assert emb.process(other).status == "done"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    with Embedder(_Engine(spec), INFO, tmp_path / "b", batch=2, workers=0) as emb:
        assert emb.process(other).status == "done"
    got, ref = (read_features(tmp_path / d / "other.h5").features for d in ("a", "b"))
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("workers", [0, 1])
def test_engine_sees_one_batch_shape(spec, sample_slide, tmp_path, workers):
    """The last, partial batch is padded: runtimes grow their memory for every new shape."""
    from edgepath.embed.features import read_features

    shapes = []

    class Recording(_Engine):
        def __call__(self, x):
            shapes.append(x.shape[0])
            return super().__call__(x)

    rec = Recording(spec)
    with Embedder(rec, INFO, tmp_path / "feats", batch=8, workers=workers) as emb:
        r = emb.process(sample_slide)
    assert r.status == "done" and r.n_tiles % 8 != 0  # a partial last batch
    assert set(shapes) == {8} and len(shapes) == -(-r.n_tiles // 8)
    coords = _coords(sample_slide)  # the first 10 tiles, read without padding
    with TileReader(PRE, batch=10, workers=0) as reader:
        ((_, x),) = list(reader.batches(sample_slide, coords))
        ref = x.mean(axis=(2, 3))
    got = read_features(tmp_path / "feats" / "cmu-1-small-region.h5").features
    assert got.shape == (r.n_tiles, 3)
    np.testing.assert_allclose(got[:10], ref, atol=1e-6)


def test_batches_split_at_the_workers_stripes():
    from edgepath.embed.reader import _runs, _stripes

    coords = np.array([[0, 0], [100, 0], [200, 0], [300, 0], [0, 100], [300, 100]])
    stripes = _stripes(coords, 2)
    assert stripes.tolist() == [0, 0, 1, 1, 0, 1]
    assert _runs(stripes) == [(0, 2, 0), (2, 4, 1), (4, 5, 0), (5, 6, 1)]
    assert _runs(_stripes(coords, 1)) == [(0, 6, 0)]


def test_every_row_is_shared_equally_whatever_the_tissue():
    from edgepath.embed.reader import _stripes

    # tissue on the left of the upper rows and on the right of the lower ones: fixed-width
    # stripes would leave one worker idle on each half of the slide
    rows = [(y, range(0, 10) if y < 5 else range(40, 46)) for y in range(10)]
    coords = np.array([[x * 224, y * 224] for y, xs in rows for x in xs])
    st = _stripes(coords, 3)
    for y in range(10):
        mine = st[coords[:, 1] == y * 224]
        counts = np.bincount(mine, minlength=3)
        assert counts.max() - counts.min() <= 1, (y, counts)
        assert (np.diff(mine) >= 0).all()  # left to right: each worker one contiguous run
    # rows in any order: the split follows x within each row, not the list order
    shuffled = np.random.default_rng(0).permutation(len(coords))
    np.testing.assert_array_equal(_stripes(coords[shuffled], 3), st[shuffled])


@pytest.mark.parametrize("workers", [0, 1])
def test_one_batch_in_flight_with_an_asynchronous_engine(spec, sample_slide, tmp_path, workers):
    """An engine with ``submit`` (torch on CUDA) is handed batch i+1 before batch i's result is
    asked for, and the features are those of the synchronous engine, in order."""
    from edgepath.embed.features import read_features

    log = []

    class Async(_Engine):
        def submit(self, x, *, tiles=False):
            i = sum(e[0] == "submit" for e in log)
            log.append(("submit", i))
            kept = x.copy()  # submit's contract: the reader may reuse x's slot on return

            def fetch():
                log.append(("fetch", i))
                return kept.mean(axis=(2, 3))

            return fetch

    outs = {}
    for name, engine in (("sync", _Engine(spec)), ("async", Async(spec))):
        with Embedder(engine, INFO, tmp_path / name, batch=4, workers=workers) as emb:
            r = emb.process(sample_slide)
        assert r.status == "done"
        outs[name] = read_features(tmp_path / name / "cmu-1-small-region.h5").features
    np.testing.assert_array_equal(outs["async"], outs["sync"])
    n = -(-r.n_tiles // 4)
    assert log[:3] == [("submit", 0), ("submit", 1), ("fetch", 0)]
    assert log[-2:] == [("fetch", n - 2), ("fetch", n - 1)] and len(log) == 2 * n
