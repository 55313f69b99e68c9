"""The settings a run was started with: resuming with them (`takeover iterate --resume`, the nightly
flow's `resume`), and the warning when an unfinished iteration goes on with other settings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import takeover.iteration as it
from storage.store import Store
from takeover.cli import main
from takeover.iteration import (
    IterationConfig,
    LoopError,
    changed_settings,
    configure,
    last_wins,
    load_iteration_config,
    load_run_config,
    run_iteration,
    stored_iteration_config,
)


class Interrupted(RuntimeError):
    """Stands in for a crash in the middle of the demonstrations."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}", str(tmp_path / "clips")) as s:
        yield s


@pytest.fixture
def crashing_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise Interrupted("the machine went down")

    monkeypatch.setattr(it, "collect_episodes", crash)


def start(store: Store, run: str, config: IterationConfig) -> None:
    """Start the bootstrap of `run` and let it crash in its first step (the iteration row is written)."""
    with pytest.raises(Interrupted):
        run_iteration(run, 0, config, store, progress=False)


def keyframe_run_config() -> IterationConfig:
    return configure(
        load_iteration_config(["collect_seeds=[2]"], recipe="keyframe"),
        train_overrides=["dagger.loop.seed=2"],
    )


def test_resume_goes_on_with_the_recipe_and_flags_the_run_started_with(
    store: Store, crashing_collection: None
):
    # given a run started with a recipe, a --set and a --train-set, that crashed
    started = keyframe_run_config()
    start(store, "kf", started)
    # when it is resumed with no flags at all
    resumed = load_run_config(store, "kf", resume=True)
    # then it has exactly the settings it started with, not conf/loop.yaml's
    assert resumed == started
    assert resumed != load_iteration_config()


def test_set_flags_still_apply_on_top_of_the_stored_settings(store: Store, crashing_collection: None):
    start(store, "kf", keyframe_run_config())
    resumed = load_run_config(store, "kf", ["torch_threads=2"], resume=True)
    assert resumed.torch_threads == 2
    assert resumed.collect_seeds == [2] and "dagger.data.keyframe_brake_gain=3" in resumed.train_overrides


def test_resuming_with_the_same_train_flags_does_not_grow_the_list(store: Store, crashing_collection: None):
    # given a run started with --train-set dagger.loop.seed=2
    started = keyframe_run_config()
    start(store, "kf", started)
    # when a schedule resumes it with the same flag again, night after night
    again = configure(load_run_config(store, "kf", resume=True), train_overrides=["dagger.loop.seed=2"])
    # then the overrides are those it started with
    assert again.train_overrides == started.train_overrides


def test_a_run_with_nothing_stored_cannot_be_resumed(store: Store):
    # a mistyped run name must not bootstrap a new run
    with pytest.raises(LoopError, match=r"run 'kf-typo' has no stored settings .* to resume"):
        load_run_config(store, "kf-typo", resume=True)
    assert stored_iteration_config(store, "kf-typo") is None


def test_a_schedule_may_start_a_new_run_from_the_layers(store: Store):
    # given the nightly flow's resume on a run's first night
    config = load_run_config(store, "nightly", recipe="keyframe", resume=True, new_run_ok=True)
    # then it starts from conf/loop.yaml and the recipe
    assert config == load_iteration_config(recipe="keyframe")


def test_a_recipe_given_on_resume_is_not_applied_again(
    store: Store, crashing_collection: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # given a run started with the keyframe recipe
    start(store, "kf", keyframe_run_config())
    other = tmp_path / "other.yaml"
    other.write_text("use_dpo: false\n")
    # when it is resumed with another recipe, then the stored settings win and the log says so
    with caplog.at_level(logging.WARNING, logger="takeover.iteration"):
        config = load_run_config(store, "kf", recipe=str(other), resume=True)
    assert config.use_dpo
    assert "not applied again" in caplog.text


def test_an_unfinished_iteration_resumed_with_other_settings_is_warned_about(
    store: Store, crashing_collection: None, caplog: pytest.LogCaptureFixture
):
    # given a run started with the keyframe recipe that crashed in its first step
    start(store, "kf", keyframe_run_config())
    # when it is run again without the recipe (the flags forgotten)
    with caplog.at_level(logging.WARNING, logger="takeover.iteration"), pytest.raises(Interrupted):
        run_iteration("kf", 0, load_iteration_config(), store, progress=False)
    # then the log names what changed and how to keep the stored settings
    assert "collect_seeds" in caplog.text and "train_overrides" in caplog.text
    assert "--resume" in caplog.text
    # and with --resume there is nothing to warn about
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="takeover.iteration"), pytest.raises(Interrupted):
        run_iteration("kf", 0, load_run_config(store, "kf", resume=True), store, progress=False)
    assert "other settings" not in caplog.text


def test_changed_settings_names_nested_keys():
    old = {"use_dpo": True, "eval": {"seeds": [0, 1], "routes": "builtin:eval"}, "maps": []}
    new = {"use_dpo": True, "eval": {"seeds": [0], "routes": "builtin:eval"}, "maps": ["/m"]}
    assert changed_settings(old, new) == ["eval.seeds", "maps"]
    assert changed_settings(None, new) == []
    assert changed_settings(new, new) == []


def test_last_wins_drops_only_earlier_copies():
    assert last_wins(["a=1", "b=2", "a=1"]) == ["b=2", "a=1"]
    assert last_wins(["a=1", "a=2"]) == ["a=1", "a=2"]  # different values: both kept, in order


def test_the_command_line_refuses_to_resume_an_unknown_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    code = main(["iterate", "--run", "nope", "--resume", "--db-url", db, "--clip-root", str(tmp_path / "c")])
    assert code == 2
    assert "run 'nope' has no stored settings" in capsys.readouterr().err


def stored_by_an_older_version(store: Store, run: str, **changes: object) -> None:
    """An iteration row whose stored settings differ from what this version would write."""
    settings = it.config_dict(keyframe_run_config())
    settings.update(changes)
    store.start_iteration(run, 0, config={"loop": settings})


def test_settings_a_newer_version_removed_are_ignored_on_resume(
    store: Store, caplog: pytest.LogCaptureFixture
):
    # given a run whose stored settings have a key (top level and in a section) this version dropped
    settings = it.config_dict(keyframe_run_config())
    settings["retired_knob"] = 3
    settings["eval"]["retired_eval_knob"] = True
    store.start_iteration("old", 0, config={"loop": settings})
    # when it is resumed, then it goes on with the rest and the log names what was ignored
    with caplog.at_level(logging.WARNING, logger="takeover.iteration"):
        config = load_run_config(store, "old", resume=True)
    assert config == keyframe_run_config()
    assert "retired_knob" in caplog.text and "eval.retired_eval_knob" in caplog.text


def test_stored_settings_that_no_longer_fit_name_the_run_and_the_fix(store: Store):
    stored_by_an_older_version(store, "old", torch_threads="many")
    with pytest.raises(LoopError, match=r"run 'old'.s stored settings \(iteration 0\) do not fit.*--set"):
        load_run_config(store, "old", resume=True)
    # and the fix the message names works
    assert load_run_config(store, "old", ["torch_threads=1"], resume=True).torch_threads == 1


def test_free_form_sections_are_kept_whole():
    data = {"collect_overrides": {"episode": ["max_steps=10"]}, "eval": {"seeds": [0]}}
    assert it.known_settings(data) == (data, [])


def test_keys_only_one_version_has_are_not_reported_as_changed():
    assert changed_settings({"use_dpo": True, "gone": 1}, {"use_dpo": True, "added": 2}) == []


def test_the_select_candidate_flag_is_stored_with_the_run_and_kept_on_resume(
    tmp_path: Path, crashing_collection: None
):
    # given a run started from the command line with --select-candidate that crashed in its first step
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    flags = ["--db-url", db, "--clip-root", str(tmp_path / "c"), "--no-progress"]
    with pytest.raises(Interrupted):
        main(["iterate", "--run", "sel", "--iterations", "1", "--select-candidate", *flags])
    # then the run's stored settings select candidates, and a resume without the flag keeps that
    with Store(db, str(tmp_path / "c")) as store:
        stored = stored_iteration_config(store, "sel")
        assert stored is not None and stored.select_candidate
        resumed = load_run_config(store, "sel", [], None, resume=True)
    assert resumed.select_candidate
    assert not load_iteration_config().select_candidate  # off unless asked for
