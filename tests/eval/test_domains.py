"""Synthetic domains: invertible colour transforms, determinism, labels, expected ordering."""

from __future__ import annotations

import numpy as np

from edgepath.eval import domains as D
from edgepath.eval.plism import pair_group


def test_colour_spaces_round_trip() -> None:
    tile = D.base_tiles(224, n=1)[0]
    assert np.abs(D.hed_to_rgb(D.rgb_to_hed(tile)).astype(int) - tile).max() <= 1
    assert np.abs(D.lab_to_rgb(D.rgb_to_lab(tile)).astype(int) - tile).max() <= 1


def test_base_tiles_are_real_tissue() -> None:
    tiles = D.base_tiles(224)
    assert tiles.dtype == np.uint8 and tiles.shape[1:] == (224, 224, 3) and len(tiles) >= 30
    assert all(D._tissue_fraction(t) >= 0.5 for t in tiles)
    sub = D.base_tiles(224, n=10, seed=1)
    assert len(sub) == 10 and (sub == D.base_tiles(224, n=10, seed=1)).all()


def test_domains_are_seeded_aligned_and_ordered_by_strength() -> None:
    tiles = D.base_tiles(112, n=6)
    a = D.make_domains(tiles, seed=0)
    b = D.make_domains(tiles, seed=0)
    c = D.make_domains(tiles, seed=1)
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)  # deterministic
    assert not (a["hed-strong"] == c["hed-strong"]).all()  # the seed matters
    assert all(v.shape == tiles.shape for v in a.values())  # aligned copies
    assert (a["original"] == tiles).all()

    def dist(name: str) -> float:
        return float(np.abs(a[name].astype(int) - tiles).mean())

    assert dist("hed-light") < dist("hed-medium") < dist("hed-strong")
    assert dist("blur-1.0") < dist("blur-2.0")
    assert dist("jpeg-q50") < dist("jpeg-q20")


def test_reinhard_matches_the_reference_statistics() -> None:
    tile = D.base_tiles(224, n=1)[0]
    ref = D.stain_references()[0]
    mean, std = D.lab_stats(ref)
    got_mean, got_std = D.lab_stats(D.reinhard(tile, mean, std))
    assert np.allclose(got_mean, mean, atol=0.05) and np.allclose(
        got_std, std, rtol=0.25, atol=0.02
    )


def test_domain_labels_group_like_plism() -> None:
    doms = {d.name: d.key for d in D.default_domains()}
    assert pair_group(doms["hed-light"], doms["hed-strong"]) == "cross-staining"
    assert pair_group(doms["blur-1.0"], doms["jpeg-q20"]) == "cross-scanner"
    assert pair_group(doms["hed-light"], doms["jpeg-q20"]) == "cross-both"
    assert pair_group(doms["original"], doms["jpeg-q20"]) == "cross-scanner"
