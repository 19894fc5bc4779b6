"""mpp resolution: properties, vendor keys, TIFF tags with units, plausibility, overrides."""

from __future__ import annotations

import pytest

from edgepath.errors import ConfigError, SlideReadError
from edgepath.slides.mpp import lookup_override, read_mpp_csv, resolve_mpp


def test_openslide_property_wins_and_is_not_rounded():
    props = {"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527", "aperio.MPP": "0.25"}
    assert resolve_mpp(props, path="s.svs") == (0.2527, "property")


def test_vendor_keys():
    assert resolve_mpp({"aperio.MPP": "0.4990"}, path="a.svs") == (0.499, "property")
    mirax = {"mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_X": "0.2433"}
    assert resolve_mpp(mirax, path="m.mrxs") == (0.2433, "property")
    mpp, src = resolve_mpp({"philips.DICOM_PIXEL_SPACING": '"0.000243" "0.000243"'}, path="p")
    assert mpp == pytest.approx(0.243) and src == "property"


def test_tiff_resolution_units():
    cm = {"tiff.XResolution": "40000", "tiff.ResolutionUnit": "centimeter"}
    assert resolve_mpp(cm, path="t.tif") == (pytest.approx(0.25), "tiff-resolution")
    inch = {"tiff.XResolution": "101600", "tiff.ResolutionUnit": "inch"}
    assert resolve_mpp(inch, path="t.tif")[0] == pytest.approx(0.25)


def test_72_dpi_is_rejected_with_the_override_named():
    props = {"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch"}
    with pytest.raises(SlideReadError, match=r"t\.tif: implausible mpp 352\.8.*--slide-mpp"):
        resolve_mpp(props, path="t.tif")
    assert resolve_mpp(props, path="t.tif", override=0.5) == (0.5, "override")


def test_missing_mpp_names_slide_and_override():
    with pytest.raises(SlideReadError, match=r"x\.png: no mpp .*--slide-mpp VALUE.*--mpp-csv"):
        resolve_mpp({}, path="x.png")


def test_bad_override():
    with pytest.raises(ConfigError, match="positive"):
        resolve_mpp({}, path="x", override=-1.0)


def test_csv_overrides(tmp_path):
    p = tmp_path / "mpp.csv"
    p.write_text("slide,mpp\ncase-1.svs,0.2431\n/data/case-2.ndpi,0.4415\ncase3,0.5\n")
    o = read_mpp_csv(p)
    assert lookup_override(o, "/x/case-1.svs") == 0.2431
    assert lookup_override(o, "/data/case-2.ndpi") == 0.4415
    assert lookup_override(o, "/y/case3.tiff") == 0.5
    assert lookup_override(o, "/y/other.svs") is None
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,mpp\na.svs,fast\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:2: mpp 'fast'"):
        read_mpp_csv(bad)
    with pytest.raises(ConfigError, match="slide,mpp"):
        read_mpp_csv(tmp_path / "none.csv")
