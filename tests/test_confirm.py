# ruff: noqa: F811 (the fixtures imported from test_iteration_resume are parameters here)
"""Confirmation on fresh seeds: v0 and the incumbent driven again on seeds no decision used.

Evaluations are the counting stand-ins of test_iteration_resume (the real evaluation has its own
tests); the run, its step log and the confirmation's storage go through a real SQLite store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_iteration_resume import Fakes, config, fakes, store  # noqa: F401 (fixtures)

import takeover.iteration as it
from storage.store import Store
from takeover.cli import main
from takeover.confirm import CONFIRM_SUFFIX, confirm_run
from takeover.iteration import IterationConfig, LoopError, next_iteration, run_loop


@pytest.fixture
def evaluations(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int, list[int]]]:
    """(checkpoint name, run, iteration, seeds) of every evaluation driven."""
    calls: list[tuple[str, str, int, list[int]]] = []

    def recording(checkpoint, routes, seeds, store, run, iteration, **kwargs):
        calls.append((Path(checkpoint).stem, run, iteration, list(seeds)))
        return fakes.evaluate_checkpoint(checkpoint, routes, seeds, store, run, iteration, **kwargs)

    monkeypatch.setattr(it, "evaluate_checkpoint", recording)
    return calls


def test_confirmation_drives_v0_and_the_incumbent_on_the_fresh_seeds_only(
    fakes: Fakes, evaluations: list, store: Store, config: IterationConfig
):
    # given a run whose iteration 1 was promoted (DS 10 -> 30) and iteration 2 was not
    fakes.ds = {"bc": 10.0, "dpo-1": 30.0, "dpo-2": 20.0}
    run_loop("r", 2, config, store)
    evaluations.clear()
    # when it is confirmed on seeds 100 and 101
    result = confirm_run(store, "r", [100, 101], progress=False)
    # then v0 and the incumbent after iteration 2 (promoted in 1) ran on those seeds alone, under r-confirm
    assert evaluations == [("bc", "r-confirm", 0, [100, 101]), ("dpo-1", "r-confirm", 2, [100, 101])]
    assert (result.iteration, result.promoted_in, result.stored_as) == (2, 1, "r" + CONFIRM_SUFFIX)
    assert result.incumbent.driving_score == 30.0 and result.v0.driving_score == 10.0
    assert result.comparison.ds_change_pct is not None and result.comparison.ds_change_pct.estimate == 200.0
    # and the run's own log is untouched: it has no new iteration, and the confirmation run none at all
    assert next_iteration(store, "r") == 3 and next_iteration(store, "r-confirm") == 0


def test_an_incumbent_that_is_still_v0_is_driven_once(
    fakes: Fakes, evaluations: list, store: Store, config: IterationConfig
):
    # given a run whose only candidate lost to v0
    fakes.ds = {"bc": 50.0}
    run_loop("r", 1, config, store)
    evaluations.clear()
    # when it is confirmed, then v0 is driven once and compared with itself
    result = confirm_run(store, "r", [100], progress=False)
    assert [e[0] for e in evaluations] == ["bc"] and result.promoted_in == 0
    assert result.comparison.ds_change_pct is not None and result.comparison.ds_change_pct.estimate == 0.0


def test_seeds_that_decided_promotions_and_unfinished_runs_are_refused(
    fakes: Fakes, evaluations: list, store: Store, config: IterationConfig
):
    run_loop("r", 0, config, store)
    with pytest.raises(LoopError, match="no finished post-optimization iteration"):
        confirm_run(store, "r", [100], progress=False)
    with pytest.raises(LoopError, match="no stored iteration"):
        confirm_run(store, "nobody", [100], progress=False)
    run_loop("r", 1, config, store)
    evaluations.clear()
    with pytest.raises(LoopError, match=r"seeds \[0\] are run 'r'.s evaluation seeds"):
        confirm_run(store, "r", [0, 100], progress=False)
    with pytest.raises(LoopError, match=r"not in its finished iterations 1\.\.1"):
        confirm_run(store, "r", [100], iteration=2, progress=False)
    assert evaluations == []  # nothing was driven for a refused confirmation


def test_the_cli_prints_the_paired_table(
    fakes: Fakes, evaluations: list, store: Store, config: IterationConfig, capsys: pytest.CaptureFixture
):
    fakes.ds = {"bc": 10.0, "dpo-1": 30.0}
    run_loop("r", 1, config, store)
    code = main(
        [
            "confirm",
            "r",
            "--seeds",
            "100",
            "--db-url",
            f"sqlite:///{store.engine.url.database}",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "fresh seeds 100" in out and "+200.0 %" in out and "r-confirm" in out
