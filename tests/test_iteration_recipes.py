"""Recipes: named partial `iterate` sections under conf/recipes/ (`takeover iterate --recipe NAME`)."""

from __future__ import annotations

from pathlib import Path

import pytest

import takeover.iteration as it
from storage.store import Store
from takeover.cli import main
from takeover.commands.train import load_train_config
from takeover.iteration import (
    IterationConfig,
    LoopError,
    load_iteration_config,
    recipe_names,
    recipe_path,
    run_iteration,
)
from takeover.training import TrainingError


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_recipe_loads_with_valid_training_overrides(name: str):
    config = load_iteration_config(recipe=name)
    load_train_config(config.train_overrides)  # raises on an unknown key or a bad value
    assert config.train_overrides, f"recipe {name} changes no training setting"


def test_the_keyframe_recipe_is_the_measured_one():
    # given the keyframe recipe (docs/results/issue6_experiments.md, session 11: kf-ba3)
    config = load_iteration_config(recipe="keyframe")
    train = load_train_config(config.train_overrides)
    # then it sets keyframe focus, the 6 s window on both rounds and in the stored clips
    assert (train.dagger.data.keyframe_brake_gain, train.dagger.data.keyframe_accel_gain) == (3.0, 3.0)
    assert train.dagger.data.pre_takeover_window_s == train.dpo.pairs.pre_takeover_window_s == 6.0
    assert config.collect_overrides == {"episode": ["pre_window_s=6.0"]}
    # and keeps the evaluation protocol of conf/loop.yaml (so its runs compare with any other)
    assert config.eval == load_iteration_config().eval


def test_set_overrides_win_over_the_recipe():
    config = load_iteration_config(["collect_seeds=[2]", "collect_overrides={episode: [pre_window_s=3.0]}"],
                                   recipe="keyframe")  # fmt: skip
    assert config.collect_seeds == [2]
    assert config.collect_overrides == {"episode": ["pre_window_s=3.0"]}


def test_a_recipe_may_be_a_file_path(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("use_dpo: false\ntrain_overrides: [dagger.loop.max_steps=7]\n")
    assert recipe_path(str(path)) == path
    config = load_iteration_config(recipe=str(path))
    assert not config.use_dpo and config.train_overrides == ["dagger.loop.max_steps=7"]


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(LoopError, match=r"recipe 'nope'.*conf/recipes/nope.yaml.*'keyframe'"):
        load_iteration_config(recipe="nope")


def test_a_recipe_with_an_unknown_key_names_the_recipe(tmp_path: Path):
    path = tmp_path / "typo.yaml"
    path.write_text("use_dp0: false\n")
    with pytest.raises(LoopError, match=r"use_dp0.*recipe '.*typo.yaml'"):
        load_iteration_config(recipe=str(path))


def test_a_bad_train_override_fails_before_any_step_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # given a run whose training overrides name a key train.yaml does not have
    config = IterationConfig(train_overrides=["dagger.data.keyframe_brak_gain=3"])
    collected: list[object] = []
    monkeypatch.setattr(it, "collect_episodes", lambda *a, **k: collected.append(a))
    # when the bootstrap starts, then it stops at once, before the demonstrations are collected
    with (
        Store(f"sqlite:///{tmp_path / 'db.sqlite'}", str(tmp_path / "clips")) as store,
        pytest.raises(TrainingError, match="keyframe_brak_gain"),
    ):
        run_iteration("r", 0, config, store)
    assert collected == []


def test_the_command_line_reports_an_unknown_recipe(capsys: pytest.CaptureFixture[str]):
    assert main(["iterate", "--run", "r", "--recipe", "nope"]) == 2
    assert "recipe 'nope'" in capsys.readouterr().err
