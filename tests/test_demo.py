"""The demo's stage runner: finished stages are reused, a redone stage redoes what follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepath import demo
from edgepath.errors import ConfigError


@pytest.fixture()
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def make(name: str):
        def stage(cfg, state):
            calls.append(name)
            return {"value": len(calls)}

        return stage

    monkeypatch.setattr(demo, "STAGES", [(n, make(n)) for n in ("a", "b", "c")])
    return calls


def test_rerun_reuses_finished_stages(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = demo.DemoConfig(out=tmp_path)
    demo.run_demo(cfg)
    assert fake_stages == ["a", "b", "c"]
    events = []
    demo.run_demo(cfg, on_stage=lambda n, s, _: events.append((n, s)))
    assert fake_stages == ["a", "b", "c"], "finished stages must not run again"
    assert events == [("a", "reused"), ("b", "reused"), ("c", "reused")]


def test_unfinished_stage_and_everything_after_it_rerun(
    tmp_path: Path, fake_stages: list[str]
) -> None:
    cfg = demo.DemoConfig(out=tmp_path)
    demo.run_demo(cfg)
    state = json.loads((tmp_path / demo.STATE).read_text())
    del state["b"]  # as if the run had been killed during stage b
    (tmp_path / demo.STATE).write_text(json.dumps(state))
    demo.run_demo(cfg)
    assert fake_stages == ["a", "b", "c", "b", "c"]


def test_force_redoes_everything(tmp_path: Path, fake_stages: list[str]) -> None:
    demo.run_demo(demo.DemoConfig(out=tmp_path))
    demo.run_demo(demo.DemoConfig(out=tmp_path, force=True))
    assert fake_stages == ["a", "b", "c"] * 2


def test_other_teacher_in_same_folder_is_refused(tmp_path: Path, fake_stages: list[str]) -> None:
    demo.run_demo(demo.DemoConfig(out=tmp_path))
    with pytest.raises(ConfigError, match="--force"):
        demo.run_demo(demo.DemoConfig(out=tmp_path, teacher="uni"))


def test_real_stage_list_is_the_whole_job() -> None:
    names = [n for n, _ in demo.STAGES]
    assert names == ["slides", "distill", "quantize", "export", "bench", "report"]


def test_stand_in_is_read_from_the_teacher_card(tmp_path: Path) -> None:
    assert demo.teacher_is_stand_in("tiny-teacher") and demo.teacher_is_stand_in("histo-teacher")
    assert not demo.teacher_is_stand_in("uni")
    tiny = Path(__file__).resolve().parents[1] / "teachers" / "tiny-teacher.toml"
    real = tmp_path / "tiny-real.toml"  # the same card, not a stand-in: the card decides
    real.write_text(tiny.read_text().replace("stand_in = true", "stand_in = false"))
    assert not demo.teacher_is_stand_in(str(real))


def test_demo_compares_no_teacher_name() -> None:
    import inspect
    import re

    from edgepath.cli import demo as cli_demo

    for module in (demo, cli_demo):
        src = inspect.getsource(module)
        assert not re.search(r"[!=]= *\"tiny-teacher\"|\"tiny-teacher\" *[!=]=", src), module
