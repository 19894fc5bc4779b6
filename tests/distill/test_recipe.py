"""Recipe cards: shipped cards validate, CLI-style overrides, the resolved recipe round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepath import cards
from edgepath.distill.recipe import apply_overrides, load_recipe, to_toml
from edgepath.errors import ConfigError


def test_shipped_recipes() -> None:
    recipes = {c.name: c for c in cards.load_all("distill")}
    assert {"h0mini", "xmag", "expert"} <= set(recipes)
    h0 = recipes["h0mini"]
    assert h0.student.name == "vit-b14-swiglu" and h0.teachers[0].card == "h-optimus-0"
    assert h0.views.local_crops == 8 and h0.loss.teacher_temp == 0.07
    # frozen random-prototype heads: own temperature, no KoLeo (the paper's 0.1 is for real heads)
    assert (h0.loss.frozen_head_temp, h0.loss.koleo_weight) == (0.5, 0.0)
    x = recipes["xmag"]
    assert (x.data.low_mpp, x.data.high_mpp, x.loss.local_weight) == (2.0, 0.5, 0.5)
    e = recipes["expert"]
    assert len(e.teachers) >= 2
    assert (e.loss.patch_cos_weight, e.loss.patch_smooth_l1_weight) == (0.9, 0.1)


def test_overrides_change_values_and_keep_types() -> None:
    card = load_recipe(
        "xmag",
        [
            "optim.lr=1e-3",
            "train.steps=7",
            'student.name="vit-t14"',
            "student.embedding=cls+mean_patch",
            'teachers=[{card="tiny-teacher"}]',
        ],
    )
    assert card.optim.lr == 1e-3 and card.train.steps == 7
    assert card.student.name == "vit-t14" and card.student.embedding == "cls+mean_patch"
    assert card.teachers[0].card == "tiny-teacher" and card.teachers[0].weight == 1.0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'"),
        ("optim.lr", "expected KEY=VALUE"),
        ("train.steps=abc", "train.steps"),
        ("data.low_mpp=1.2", "must be an integer"),
        ("data.holdout=1.5", "data.holdout"),
        ("loss.frozen_head_temp=0", "softmax temperature"),
        ("train.calibration_temp=0", "calibration_temp"),
        ("train.calibration_items=4", "calibration_items"),
    ],
)
def test_bad_overrides(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_recipe("xmag", [override])


def test_metric_calibration_is_an_xmag_option() -> None:
    assert load_recipe("xmag", ["train.metric_calibration=true"]).train.metric_calibration
    with pytest.raises(ConfigError, match="xmag option"):
        load_recipe("h0mini", ["train.metric_calibration=true"])


def test_single_teacher_recipes_refuse_two() -> None:
    card = load_recipe("h0mini")
    with pytest.raises(ConfigError, match="exactly one teacher"):
        apply_overrides(card, ['teachers=[{card="a"}, {card="b"}]'])


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    card = load_recipe("expert", ["optim.lr=2e-4", "views.global_scale=[0.4, 1.0]"])
    p = tmp_path / "expert.toml"
    p.write_text(to_toml(card))
    again = cards.load("distill", p)
    assert again == card
