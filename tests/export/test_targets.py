"""Export target cards: aliases, precision refusals with reasons, the JetPack → TensorRT table."""

from __future__ import annotations

import pytest

from edgepath import cards
from edgepath.errors import ConfigError
from edgepath.export.targets import JETPACK, load_target, tensorrt_major

EXPECTED = {"onnx", "openvino", "tensorrt", "jetson-orin", "jetson-thor", "triton", "timm"}


def test_every_target_the_issue_names_ships() -> None:
    assert set(cards.card_paths("export")) >= EXPECTED


def test_jetson_alias_is_orin() -> None:
    assert load_target("jetson").name == "jetson-orin"


def test_orin_refuses_fp8_with_the_reason_thor_accepts_it() -> None:
    orin, thor = load_target("jetson-orin"), load_target("jetson-thor")
    with pytest.raises(ConfigError, match=r"sm_87.*no FP8"):
        orin.check_precision("fp8")
    with pytest.raises(ConfigError, match="no FP8"):
        orin.check_precision("fp8-e4m3")
    for p in ("fp8", "fp16", "int8"):
        assert thor.check_precision(p) == p
    assert orin.jetson.compute_capability == "8.7" and not orin.jetson.fp8
    assert thor.jetson.fp8


def test_jetpack_table_maps_to_the_three_tensorrt_majors() -> None:
    majors = {tensorrt_major(trt) for trt, _ in JETPACK.values()}
    assert majors == {8, 10, 11}
    assert JETPACK["6.0"][0] == "8.6" and JETPACK["6.2"][0].startswith("10.")
    assert load_target("jetson-orin").jetson.jetpack == "6.2"  # what Orins ship with today


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="jetson-orin"):
        load_target("tflite")


def test_card_cross_checks(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'description = "x"\nformat = "jetson"\nprecisions = ["fp8"]\n'
        '[jetson]\nsoc = "orin"\ngpu = "Ampere"\ncompute_capability = "8.7"\n'
        'jetpacks = ["6.2"]\nfp8 = false\n'
    )
    with pytest.raises(ConfigError, match="fp8 accepted but jetson.fp8 is false"):
        cards.load("export", bad)
