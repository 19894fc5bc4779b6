"""Recipe cards: shipped cards validate, CLI-style overrides, the resolved recipe round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepath import cards
from edgepath.distill.recipe import apply_overrides, load_recipe, to_toml
from edgepath.errors import ConfigError

PAPER_CARDS = {"h0mini", "xmag", "expert"}

#: Options that go beyond the papers: off in the paper cards, and a card that turns one on says
#: it is a variant beyond the paper.
BEYOND_PAPER = (
    ("train", "metric_calibration"),
    ("loss", "center_targets"),
    ("loss", "with_h0mini"),
)


def test_shipped_recipes() -> None:
    recipes = {c.name: c for c in cards.load_all("distill")}
    assert PAPER_CARDS | {"xmag-calibrated", "h0mini-frozen-heads"} <= set(recipes)
    h0 = recipes["h0mini"]
    assert h0.student.name == "vit-b14-swiglu" and h0.teachers[0].card == "h-optimus-0"
    assert h0.views.local_crops == 8 and h0.loss.teacher_temp == 0.07
    # DINOv2's KoLeo 0.1; the frozen random-prototype heads have their own temperature
    assert (h0.loss.frozen_head_temp, h0.loss.koleo_weight) == (0.5, 0.1)
    x = recipes["xmag"]
    assert (x.data.low_mpp, x.data.high_mpp, x.loss.local_weight) == (2.0, 0.5, 0.5)
    e = recipes["expert"]
    assert [t.card for t in e.teachers] == ["uni", "phikon-v2", "conch"]
    assert (e.loss.patch_cos_weight, e.loss.patch_smooth_l1_weight) == (0.9, 0.1)


def test_xmag_card_is_the_papers_and_the_calibrated_variant_is_labelled() -> None:
    """The XMAG paper has no metric calibration; the measured variant is a card of its own."""
    x = load_recipe("xmag")
    assert x.train.metric_calibration is False and x.loss.local_weight == 0.5
    assert x.loss.center_targets is False
    v = load_recipe("xmag-calibrated")
    assert v.recipe == "xmag" and v.train.metric_calibration is True
    assert v.loss.center_targets is True and v.views.fixed_views == 8
    assert "variant, beyond the paper" in v.description and "histo-teacher" in v.description
    f = load_recipe("h0mini-frozen-heads")
    assert f.recipe == "h0mini" and f.loss.koleo_weight == 0.0
    assert "variant, beyond the paper" in f.description and "histo-teacher" in f.description


def test_paper_cards_keep_options_beyond_the_paper_off_and_variants_say_so() -> None:
    """Would fail if someone switched a paper card to a measured variant again."""
    for card in cards.load_all("distill"):
        on = [f"{s}.{k}" for s, k in BEYOND_PAPER if getattr(getattr(card, s), k)]
        if card.name in PAPER_CARDS:
            assert not on, f"paper card {card.name} turns on {on}"
            assert "variant" not in card.description.lower()
            continue
        # every other shipped card is a labelled variant or a demo
        desc = card.description.lower()
        assert "variant" in desc or "demo" in desc, card.name
        if on or "variant" in desc:
            assert "variant, beyond the paper; evidence:" in desc, (card.name, on)


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
        ("train.num_workers=-1", "num_workers"),
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


def test_teachers_override_quotes_paths_and_checks_weights() -> None:
    """Teacher names and checkpoint paths go into the override as TOML strings, quotes and
    backslashes escaped, so a path is taken as it is; a weights list must match the cards."""
    from edgepath.distill.recipe import teachers_override
    from edgepath.errors import ConfigError

    odd = 'C:\\models\\uni "2"'
    card = load_recipe("expert", [teachers_override(["tiny-teacher", "tiny-teacher"], ("", odd))])
    assert [t.weights for t in card.teachers] == ["", odd]
    with pytest.raises(ConfigError, match="one --teacher-weights per --teacher"):
        teachers_override(["tiny-teacher"], ("a", "b"))
