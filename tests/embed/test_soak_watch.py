"""``benchmarks/soak_watch.py`` at a small N: the soak's own checks pass, and they can fail."""

from __future__ import annotations

import pytest

from benchmarks import soak_watch


@pytest.mark.slow
def test_soak_small(tiny_model, tmp_path):
    args = ["--slides", "8", "--model", str(tiny_model), "--cache", str(tmp_path), "--json"]
    r = soak_watch.main([*args, "--settle", "1.0", "--interval", "0.3", "--linger", "1.5"])
    assert not r["crashed"] and r["duplicates"] == 0, r
    assert r["embedded"] + r["failed"] == r["slides"] == 8
    assert r["failed"] == sum(r["bad"].values()) == 1 and r["failures"][0]["error"]
    assert r["slow"] >= 1 and not r["removed_embedded"]  # a slow copy and a removed one ran
    assert r["partial"] == r["unreadable"] == r["shm_left"] == r["readers_left"] == []
    assert r["slots_while_running"] >= 2 and r["samples"] > 0
    assert r["ok"], r


def test_soak_checks_catch_faults():
    """The report's verdict turns false on each fault it is meant to catch."""
    good = {
        "crashed": False,
        "duplicates": 0,
        "slides": 3,
        "embedded": 2,
        "failed": 1,
        "bad": {"truncated": 1, "corrupt": 0, "garbage": 0},
        "missing": [],
        "bad_embedded": [],
        "failed_without_reason": [],
        "removed_embedded": False,
        "partial": [],
        "unreadable": [],
        "shm_left": [],
        "readers_left": [],
        "rss_growth": 0.01,
    }
    assert soak_watch._ok(good)
    for key, bad in [
        ("crashed", True),
        ("duplicates", 1),
        ("embedded", 1),
        ("missing", ["a"]),
        ("bad_embedded", ["b"]),
        ("removed_embedded", True),
        ("partial", [".a.h5.lock"]),
        ("shm_left", ["edgepath-1-ab-cd"]),
        ("readers_left", [123]),
        ("rss_growth", 0.2),
    ]:
        assert not soak_watch._ok({**good, key: bad}), key
