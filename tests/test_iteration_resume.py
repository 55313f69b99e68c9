"""The iteration as resumable steps: step log, resume after a crash, promotion, ablation, shared v0.

The training rounds, collections and evaluations are replaced by counting stand-ins (their own tests
cover them); the step log, the promotion and the iteration rows go through a real SQLite store.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import text

import takeover.iteration as it
from storage.records import CounterfactualRecord, TakeoverInfo
from storage.store import Store
from takeover.commands.iterate import _progress_line, loop_json
from takeover.counterfactual import Counterfactuals
from takeover.datasets import DatasetError
from takeover.evaluate import EpisodeScore, EvalResult
from takeover.iteration import (
    IterationConfig,
    LoopError,
    LoopHooks,
    Step,
    configure,
    next_iteration,
    read_loop,
    run_iteration,
    run_loop,
)
from takeover.report import (
    Spread,
    ablation_table,
    before_after_table,
    incumbent_evaluation,
    iteration_markdown,
    iteration_table,
    loop_markdown,
    plot_iterations,
    plot_replicates,
    replicate_summary,
    replicate_table,
)
from takeover.training import TrainResult

EVAL_EPISODE_S = 40.0  # the stand-in evaluation: one 40 s episode with takeovers ...
EXPERT_S_PER_TAKEOVER = 2.0  # ... in which each takeover hands the wheel to the expert for 2 s
EXPERT_M_PER_TAKEOVER = 10.0  # ... and the metres it drives


@dataclass
class Fakes:
    """Counting stand-ins for the library steps; `ds` maps checkpoint names to driving scores."""

    root: Path
    ds: dict[str, float] = field(default_factory=dict)
    takeovers: int = 4
    fail_once: set[str] = field(default_factory=set)  # step functions that raise on their first call
    calls: Counter[str] = field(default_factory=Counter)
    seeds: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (mode, iteration) -> seeds
    eval_phases: dict[str, tuple[str, str]] = field(default_factory=dict)  # checkpoint -> storage phases
    necessary: dict[str, int] = field(
        default_factory=dict
    )  # checkpoint -> necessary takeovers of its evaluation
    replayed: list[str] = field(default_factory=list)  # checkpoints whose evaluations were analysed, in order
    judged: list[dict[str, object]] = field(default_factory=list)  # the collections replayed (judge_episodes)
    dagger_configs: list[object] = field(default_factory=list)  # the DAgger rounds' configs, in order

    def _maybe_fail(self, name: str) -> None:
        self.calls[name] += 1
        if name in self.fail_once:
            self.fail_once.discard(name)
            raise RuntimeError(f"injected crash in {name}")

    def _checkpoint(self, run: str, name: str, iteration: int | None, parent: str | None) -> TrainResult:
        path = self.root / run / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{run}/{name}".encode())
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        return TrainResult(run=run, kind=name.split("-")[0], name=name, iteration=iteration, checkpoint_path=path,
                           sha256=sha, parent_sha256=parent, metrics={"loss": 1.0}, n_samples=10, steps=2,
                           samples_per_s=5.0, wall_s=0.1, round_id=1)  # fmt: skip

    def collect_episodes(self, mode, routes, seeds, store, run, iteration, **kwargs) -> it.CollectOutcome:
        self._maybe_fail(f"collect_{mode}")
        self.seeds[(str(mode), iteration)] = list(seeds)
        n = 0 if str(mode) == "expert" else self.takeovers
        episode = EpisodeScore(1, "1000", 0, "rollout", "Completed", 50.0, 100.0, 0.5, False, 400.0, n,
                               {"stuck": n} if n else {})  # fmt: skip
        return it.CollectOutcome(str(mode), (episode,), ())

    def train_bc(self, store, run, config, policy_config) -> TrainResult:
        self._maybe_fail("bc")
        return self._checkpoint(run, "bc", None, None)

    def dagger_round(self, store, run, iteration, parent, config) -> TrainResult:
        self.dagger_configs.append(config)
        self._maybe_fail("dagger")
        return self._checkpoint(run, f"dagger-{iteration}", iteration, None)

    def dpo_round(self, store, run, iteration, parent, config) -> TrainResult:
        self._maybe_fail("dpo")
        return self._checkpoint(run, f"dpo-{iteration}", iteration, None)

    def evaluate_checkpoint(self, checkpoint, routes, seeds, store, run, iteration, **kwargs) -> EvalResult:
        phases = (kwargs["config"].phase, kwargs["config"].takeover_phase)
        self.eval_phases[Path(checkpoint).stem] = phases
        self._maybe_fail("evaluate_dagger" if phases[0].endswith(it.DAGGER_PHASE_SUFFIX) else "evaluate")
        name = Path(checkpoint).stem
        sha = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
        ds = self.ds.get(name, 10.0)
        plain = EpisodeScore(2, "2000", 0, "eval", "Completed", ds, ds, 1.0, False, 200.0, 0)
        n = max(0, int(10 - ds / 10))
        taken = EpisodeScore(3, "2000", 0, "eval_takeover", "Completed", 0.0, 100.0, 1.0, False, 200.0, n,
                             duration_s=EVAL_EPISODE_S, expert_s=n * EXPERT_S_PER_TAKEOVER,
                             expert_distance_m=n * EXPERT_M_PER_TAKEOVER)  # fmt: skip
        return EvalResult(
            run, iteration, str(checkpoint), sha, "builtin:eval", "embedded", (plain,), (taken,)
        )

    def analyse_evaluation(self, store, result, routes, config, **kwargs) -> Counterfactuals:
        """The first `necessary[checkpoint]` of the evaluation's takeovers were necessary."""
        self._maybe_fail("counterfactual")
        name = Path(result.checkpoint_path).stem
        self.replayed.append(name)
        episode = result.takeover_episodes[0]
        takeovers = tuple(
            TakeoverInfo(100 * episode.episode_id + k, episode.episode_id, k, 10 * k, float(k), 0.0, 0.0, None,
                         1.0, "stuck", None, None, {}, "ego", [], [], None, None)
            for k in range(episode.takeovers)
        )  # fmt: skip
        necessary = self.necessary.get(name, 0)
        records = {
            t.id: CounterfactualRecord(t.id, "d" * 64, config.horizon_s, "collision_vehicle" if t.seq < necessary
                                       else "clear", t.seq < necessary, None, 5.0)
            for t in takeovers
        }  # fmt: skip
        return Counterfactuals(result, takeovers, records, config, len(takeovers))

    def collection_episodes(self, store, run, iteration, sha, config) -> tuple[EpisodeScore, ...]:
        return (
            EpisodeScore(
                1, "1000", 0, "rollout", "Completed", 50.0, 100.0, 0.5, False, 400.0, self.takeovers
            ),
        )

    def judge_episodes(self, store, episodes, checkpoint, routes, config, **kwargs):
        """Of the collection's takeovers, the first one was necessary."""
        self._maybe_fail("collect_counterfactual")
        self.judged.append({"checkpoint": Path(checkpoint).stem, "overrides": kwargs["overrides"],
                            "routes": [r.id for r in routes], "horizon_s": config.horizon_s})  # fmt: skip
        records = {
            k: CounterfactualRecord(k, "d" * 64, config.horizon_s, "collision_vehicle" if k == 0 else "clear",
                                    k == 0, None, 5.0)
            for k in range(episodes[0].takeovers)
        }  # fmt: skip
        return (), records, len(records)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = Fakes(tmp_path / "ckpt")
    for name in ("collect_episodes", "train_bc", "dagger_round", "dpo_round", "evaluate_checkpoint",
                 "analyse_evaluation", "collection_episodes", "judge_episodes"):  # fmt: skip
        monkeypatch.setattr(it, name, getattr(f, name))
    return f


@pytest.fixture
def store(tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'loop.db'}", str(tmp_path / "clips")) as s:
        yield s


@pytest.fixture
def config() -> IterationConfig:
    return configure(IterationConfig(), seeds=[0], train_route_ids=["1000"], eval_route_ids=["2000"])


def test_bootstrap_logs_each_step_and_promotes_v0(fakes: Fakes, store: Store, config: IterationConfig):
    # given a new run
    result = run_iteration("r", 0, config, store)
    # then demos, BC, evaluation and promotion ran once each, and v0 is the incumbent
    assert result.steps_run == ("collect_demos", "bc", "evaluate", "promote")
    assert result.promoted and result.incumbent_after.path.endswith("bc.pt")
    assert fakes.calls == Counter({"collect_expert": 1, "bc": 1, "evaluate": 1})
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, status FROM training_rounds WHERE kind = 'step' ORDER BY id")
        ).all()
        promoted = conn.execute(
            text("SELECT promoted_checkpoint_id IS NOT NULL, status FROM iterations")
        ).one()
    assert [tuple(r) for r in rows] == [("collect_demos", "completed"), ("bc", "completed"),
                                        ("evaluate", "completed"), ("promote", "completed")]  # fmt: skip
    assert tuple(promoted) == (1, "completed")


def test_a_crashed_iteration_resumes_without_repeating_finished_steps(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given v0, and an iteration whose DPO round crashes
    run_iteration("r", 0, config, store)
    fakes.fail_once = {"dpo"}
    with pytest.raises(RuntimeError, match="injected crash in dpo"):
        run_iteration("r", 1, config, store)
    assert (fakes.calls["collect_takeover"], fakes.calls["dagger"], fakes.calls["dpo"]) == (1, 1, 1)
    # when it runs again
    result = run_iteration("r", 1, config, store)
    # then collection and DAgger are read back, DPO and the rest run once more
    assert result.steps_resumed == ("collect_takeovers", "dagger")
    assert result.steps_run == ("dpo", "evaluate", "promote")
    assert (fakes.calls["collect_takeover"], fakes.calls["dagger"], fakes.calls["dpo"]) == (1, 1, 2)
    assert result.candidate is not None and result.candidate.path.endswith("dpo-1.pt")
    # and the failed attempt is logged beside the finished steps
    with store.engine.connect() as conn:
        failed = conn.execute(
            text("SELECT name, config FROM training_rounds WHERE kind = 'step_failure'")
        ).all()
    assert len(failed) == 1 and failed[0][0].startswith("dpo@") and "injected crash" in failed[0][1]
    # and a third run repeats nothing
    again = run_iteration("r", 1, config, store)
    assert again.steps_run == ()
    assert fakes.calls == Counter(
        {"collect_expert": 1, "bc": 1, "evaluate": 2, "collect_takeover": 1, "dagger": 1, "dpo": 2}
    )


def test_the_candidate_is_promoted_only_when_it_beats_the_incumbent(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given v0 at DS 10, iteration 1's candidate at 30 and iteration 2's at 20
    fakes.ds = {"bc": 10.0, "dpo-1": 30.0, "dpo-2": 20.0}
    loop = run_loop("r", 2, config, store)
    one, two = loop.iterations[1], loop.iterations[2]
    # then iteration 1 is promoted, iteration 2 is not and the incumbent stays dpo-1
    assert one.promoted and one.incumbent_after.path.endswith("dpo-1.pt")
    assert not two.promoted and "below" in two.reason
    assert two.incumbent_after.path.endswith("dpo-1.pt")
    assert two.incumbent_before is not None and two.incumbent_before.path.endswith("dpo-1.pt")
    # and the log rebuilds the same story
    assert [r.promoted for r in read_loop(store, "r").iterations] == [True, True, False]
    assert next_iteration(store, "r") == 3


def test_the_reports_show_the_expert_share_beside_disengagements(
    fakes: Fakes, store: Store, config: IterationConfig, tmp_path: Path
):
    # given v0 at DS 10 (9 takeovers, the expert drives 18 of 40 s) and a candidate at DS 50 (5: 10 of 40 s)
    fakes.ds = {"bc": 10.0, "dpo-1": 50.0}
    loop = run_loop("r", 1, config, store)
    # when the before/after and per-iteration tables are printed
    out = Console(record=True, width=250)
    out.print(before_after_table(loop))
    out.print(iteration_table(loop))
    lines = out.export_text().splitlines()
    # then the expert's share of the driving time falls from 45 % to 25 %, beside disengagements per km
    expert_row = next(line for line in lines if "expert share of driving %" in line)
    assert [cell.strip() for cell in expert_row.split("│")][2:5] == ["45.0", "25.0", "-20.0"]
    assert any("expert %" in line for line in lines)
    # and per km the policy drove itself (200 m less 90 m, then less 50 m), 81.82 -> 33.33
    policy_row = next(line for line in lines if "disengagements / policy km" in line)
    assert [cell.strip() for cell in policy_row.split("│")][2:5] == ["81.82", "33.33", "x 0.41"]
    # and the paired interval of one (route, seed) episode has no width: every draw is that episode
    ds_row = next(line for line in lines if "│ driving score" in line)
    assert [cell.strip() for cell in ds_row.split("│")][4:6] == ["+400.0 %", "[+400.0, +400.0] %"]
    # and the line `takeover iterate` prints per iteration says both
    progress = Console(record=True, width=250)
    _progress_line(loop.iterations[1], progress)
    assert "(expert drove 25 % of the time; 33.33 per km the policy drove)" in progress.export_text()
    assert "45 % -> 25 %" in loop_markdown(loop)
    assert plot_iterations(loop, tmp_path / "plot" / "iterations.png").stat().st_size > 0


def test_dagger_only_ablation_skips_dpo_and_evaluates_the_dagger_checkpoint(
    fakes: Fakes, store: Store, config: IterationConfig
):
    config = configure(config, use_dpo=False)
    result = run_loop("abl", 1, config, store).final
    assert fakes.calls["dpo"] == 0
    assert result.candidate is not None and result.candidate.path.endswith("dagger-1.pt")
    assert not result.use_dpo and "dpo" not in result.training
    assert read_loop(store, "abl").method == "DAgger only"


def test_the_ablation_table_compares_each_arms_final_with_the_first_pair_by_pair(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given DAgger + DPO ending at DS 50 (5 takeovers on 200 m) and DAgger only at DS 30 (7 takeovers)
    fakes.ds = {"bc": 10.0, "dagger-1": 30.0, "dpo-1": 50.0}
    full = run_loop("full", 1, config, store)
    dagger_only = run_loop("abl", 1, configure(config, use_dpo=False), store)
    # when the ablation table is printed
    out = Console(record=True, width=250)
    out.print(ablation_table([full, dagger_only]))
    row = next(line for line in out.export_text().splitlines() if "vs full, paired" in line)
    # then DAgger only scores 40 % less and disengages 1.4 times as often, on the one shared episode
    assert [cell.strip() for cell in row.split("│")][4:6] == ["-40.0 % [-40.0, -40.0]", "x 1.40 [1.40, 1.40]"]


def test_no_takeovers_means_no_training_and_no_promotion(fakes: Fakes, store: Store, config: IterationConfig):
    fakes.takeovers = 0
    result = run_loop("quiet", 1, config, store).final
    assert (fakes.calls["dagger"], fakes.calls["dpo"], fakes.calls["evaluate"]) == (0, 0, 1)  # v0's only
    assert not result.promoted and result.candidate is None
    assert result.incumbent_after.path.endswith("bc.pt")


def test_dpo_without_usable_pairs_is_skipped_and_dagger_stands(fakes: Fakes, store: Store, config: IterationConfig,
                                                                 monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    def no_pairs(*_args, **_kwargs):
        raise DatasetError("no preference pairs of sources ['expert_vs_policy']")

    monkeypatch.setattr(it, "dpo_round", no_pairs)
    result = run_loop("nopairs", 1, config, store).final
    assert result.candidate is not None and result.candidate.path.endswith("dagger-1.pt")
    record = it.StepLog(store, "nopairs").get(1, Step.DPO)
    assert (
        record is not None
        and record.status == "skipped"
        and "no preference pairs" in record.outputs["reason"]
    )


def test_selection_takes_daggers_checkpoint_when_it_beats_dpos(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given candidate selection on, v0 at DS 10, DAgger's checkpoint at 40 and DAgger + DPO's at 20
    fakes.ds = {"bc": 10.0, "dagger-1": 40.0, "dpo-1": 20.0}
    result = run_loop("sel", 1, configure(config, select_candidate=True), store).final
    # then both were evaluated, DAgger's under its own storage phases, and DAgger's is the candidate
    assert result.steps_run == (
        "collect_takeovers",
        "dagger",
        "dpo",
        "evaluate_dagger",
        "evaluate",
        "promote",
    )
    assert fakes.eval_phases["dagger-1"] == ("eval_dagger", "eval_takeover_dagger")
    assert fakes.eval_phases["dpo-1"] == ("eval", "eval_takeover")
    assert result.candidate is not None and result.candidate.path.endswith("dagger-1.pt")
    assert result.evaluation is not None and result.evaluation.driving_score == 40.0
    assert result.rival is not None and result.rival.path.endswith("dpo-1.pt")
    assert result.rival_evaluation is not None and result.rival_evaluation.driving_score == 20.0
    # and it is promoted over v0, with both decisions in the reason
    assert result.promoted and result.incumbent_after.path.endswith("dagger-1.pt")
    assert result.reason.startswith("DAgger's checkpoint beat DAgger + DPO's (DS 40.0 >= incumbent 20.0")
    assert "DS 40.0 >= incumbent 10.0" in result.reason
    # and the iteration's artifact and JSON name the checkpoint not chosen
    assert "The other checkpoint evaluated, dpo-1.pt: DS 20.0" in iteration_markdown(
        store, result, "eval_takeover"
    )
    # and, given the incumbent's evaluation, it says how the candidate beat it pair by pair
    judged = iteration_markdown(
        store, result, "eval_takeover", incumbent_evaluation(read_loop(store, "sel"), result)
    )
    assert (
        "Against the incumbent bc.pt: 95 % paired bootstrap interval over 1 (route, seed) episodes: "
        in judged
    )
    assert "DS change [+300.0, +300.0] %" in judged
    as_json = loop_json(read_loop(store, "sel"))
    assert as_json["iterations"][1]["rival_metrics"]["driving_score"] == 20.0
    # and v0 (DS 10) vs the selected checkpoint (DS 40) carries its paired interval: +300 % on the one pair
    assert as_json["paired"]["ds_change_pct"] == pytest.approx(
        {"estimate": 300.0, "low": 300.0, "high": 300.0, "confidence": 0.95, "pairs": 1, "unpaired": 0}
    )
    assert read_loop(store, "sel").method == "DAgger + DPO, selected"


def test_selection_keeps_dpos_checkpoint_unless_daggers_is_better(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given DAgger's checkpoint only ties DAgger + DPO's (DS 30.5 vs 30.2, as many disengagements)
    fakes.ds = {"bc": 10.0, "dagger-1": 30.5, "dpo-1": 30.2}
    result = run_loop("tie", 1, configure(config, select_candidate=True), store).final
    # then the method's output stays the candidate
    assert result.candidate is not None and result.candidate.path.endswith("dpo-1.pt")
    assert result.rival is not None and result.rival.path.endswith("dagger-1.pt")
    assert "DAgger + DPO's checkpoint kept over DAgger's (DS 30.2 vs 30.5)" in result.reason


def test_the_next_promotion_compares_with_the_selected_checkpoints_evaluation(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given iteration 1 selected DAgger's checkpoint at DS 40, and iteration 2's best is DPO's at 35
    fakes.ds = {"bc": 10.0, "dagger-1": 40.0, "dpo-1": 20.0, "dagger-2": 30.0, "dpo-2": 35.0}
    loop = run_loop("sel", 2, configure(config, select_candidate=True), store)
    # then iteration 2 is judged against 40 (DAgger's evaluation), not 20 (the other one of iteration 1)
    two = loop.iterations[2]
    assert not two.promoted and "below the incumbent's 40.0" in two.reason
    assert two.incumbent_after.path.endswith("dagger-1.pt")
    # and the log rebuilds the same candidates
    assert [Path(r.candidate.path).name for r in read_loop(store, "sel").iterations[1:]] == [
        "dagger-1.pt",
        "dpo-2.pt",
    ]


def test_a_crash_in_the_second_evaluation_does_not_repeat_the_first(
    fakes: Fakes, store: Store, config: IterationConfig
):
    config = configure(config, select_candidate=True)
    run_iteration("r", 0, config, store)
    fakes.fail_once = {"evaluate"}  # DAgger + DPO's evaluation, after DAgger's finished
    with pytest.raises(RuntimeError, match="injected crash in evaluate"):
        run_iteration("r", 1, config, store)
    result = run_iteration("r", 1, config, store)
    assert result.steps_resumed == ("collect_takeovers", "dagger", "dpo", "evaluate_dagger")
    assert result.steps_run == ("evaluate", "promote")
    assert fakes.calls["evaluate_dagger"] == 1


def test_selection_without_a_dpo_checkpoint_evaluates_daggers_once(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given the DAgger-only ablation with selection on
    result = run_loop("abl", 1, configure(config, select_candidate=True, use_dpo=False), store).final
    # then there is nothing to select between: DAgger's checkpoint is evaluated once, as the candidate
    assert fakes.calls["evaluate_dagger"] == 0 and fakes.calls["evaluate"] == 2  # v0 and dagger-1
    assert result.candidate is not None and result.candidate.path.endswith("dagger-1.pt")
    assert result.rival is None and result.rival_evaluation is None
    record = it.StepLog(store, "abl").get(1, Step.EVALUATE_DAGGER)
    assert record is not None and record.status == "skipped"


def test_a_run_from_a_base_run_shares_its_v0_and_evaluation(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given a finished v0 in run "base"
    run_iteration("base", 0, config, store)
    # when the ablation arm starts from it
    arm = run_loop("arm", 1, configure(config, base_run="base", use_dpo=False), store)
    # then no demonstrations, BC or v0 evaluation ran again, and both arms start from the same v0
    assert fakes.calls["collect_expert"] == 1 and fakes.calls["bc"] == 1
    assert fakes.calls["evaluate"] == 2  # base's v0 and the arm's iteration-1 candidate
    base_v0 = read_loop(store, "base").v0.incumbent_after
    assert arm.v0.incumbent_after == base_v0
    assert arm.final.incumbent_before == base_v0


def test_changing_the_protocol_mid_run_is_refused(fakes: Fakes, store: Store, config: IterationConfig):
    run_iteration("r", 0, config, store)
    with pytest.raises(LoopError, match="must stay fixed within a run"):
        run_iteration("r", 1, configure(config, use_dpo=False), store)


def test_an_iteration_needs_the_previous_one_finished(fakes: Fakes, store: Store, config: IterationConfig):
    with pytest.raises(LoopError, match="has not finished"):
        run_iteration("r", 1, config, store)


def test_training_on_the_evaluation_routes_is_refused():
    with pytest.raises(LoopError, match="held-out"):
        configure(IterationConfig(), train_routes="builtin:eval")


def test_hooks_see_every_step_that_runs(fakes: Fakes, store: Store, config: IterationConfig):
    seen: list[str] = []

    def run_step(name, fn):
        seen.append(name)
        return fn()

    run_loop("h", 1, config, store, hooks=LoopHooks(run_step=run_step))
    assert seen == ["collect_demos", "bc", "evaluate", "promote",
                    "collect_takeovers", "dagger", "dpo", "evaluate", "promote"]  # fmt: skip


def test_each_iteration_rolls_out_on_fresh_seeds(fakes: Fakes, store: Store, config: IterationConfig):
    # given a run whose candidates are never promoted (the incumbent stays v0)
    config = configure(config, seeds=[0, 1])
    fakes.ds = {"bc": 50.0}
    # when three iterations run
    for k in range(4):
        run_iteration("r", k, config, store)
    # then every iteration's rollouts use other seeds (the same ones would replay identical episodes)
    rollouts = [fakes.seeds[("takeover", k)] for k in (1, 2, 3)]
    assert rollouts == [[0, 1], [1000, 1001], [2000, 2001]]
    assert fakes.seeds[("expert", 0)] == [0, 1]


def test_replicates_are_summarised_per_iteration_by_mean_and_spread(
    fakes: Fakes, store: Store, config: IterationConfig, tmp_path: Path
):
    # given a shared v0 at DS 10 (9 takeovers in 200 m: 45 /km) and three replicate runs from it whose
    # iteration-1 candidates score DS 30, 50 and 70 (7, 5, 3 takeovers: 35, 25, 15 /km); the third
    # run also has an iteration 2
    fakes.ds = {"bc": 10.0}
    run_iteration("base", 0, config, store)
    loops = []
    for run, ds in (("a", 30.0), ("b", 50.0), ("c", 70.0)):
        fakes.ds = {"bc": 10.0, "dpo-1": ds, "dpo-2": 90.0}
        loops.append(run_loop(run, 2 if run == "c" else 1, configure(config, base_run="base"), store))
    # when they are summarised as replicates
    summary = replicate_summary(loops)
    # then only the iterations all three finished are rows, each the incumbent's mean and sample sd
    assert [row.iteration for row in summary.rows] == [0, 1]
    first = summary.rows[1]
    assert first.driving_score is not None and first.disengagements_per_km is not None
    assert (first.driving_score.mean, first.driving_score.sd) == pytest.approx((50.0, 20.0))
    assert (first.disengagements_per_km.mean, first.disengagements_per_km.sd) == pytest.approx((25.0, 10.0))
    assert first.promoted == 3
    # and the final change is each run's own at that depth: +200, +400, +600 %; x 35/45, 25/45, 15/45
    assert summary.ds_change_pct is not None and summary.dpk_ratio is not None
    assert summary.ds_change_pct.values == pytest.approx((200.0, 400.0, 600.0))
    assert (summary.dpk_ratio.mean, summary.dpk_ratio.sd) == pytest.approx((25.0 / 45.0, 10.0 / 45.0))
    # and per km the policy drove (200 m less 10 m per takeover): v0 9 / 0.11 km, the runs 7 / 0.13,
    # 5 / 0.15 and 3 / 0.17 km
    policy = first.disengagements_per_policy_km
    assert policy is not None and policy.values == pytest.approx((7 / 0.13, 5 / 0.15, 3 / 0.17))
    assert summary.policy_dpk_ratio is not None
    assert summary.policy_dpk_ratio.values == pytest.approx(tuple(v / (9 / 0.11) for v in policy.values))
    out = Console(record=True, width=250)
    out.print(replicate_table(summary))
    text_out = out.export_text()
    assert "50.0 ± 20.0 [30.0, 70.0]" in text_out and "3 of 3" in text_out
    assert "x 0.43 ± 0.22 [0.22, 0.66]" in text_out
    assert plot_replicates(summary, tmp_path / "rep.png").stat().st_size > 0


def test_a_single_value_has_no_spread():
    assert Spread((7.0,)).sd is None
    assert Spread((7.0,)).format(".1f") == "7.0"
    assert Spread((1.0, 3.0)).format(".1f") == "2.0 ± 1.4 [1.0, 3.0]"
    assert Spread((-1.0, 3.0)).format("+.1f") == "+1.0 ± 2.8 [-1.0, +3.0]"


def guarded(config: IterationConfig, max_rise: float | None = 0.0) -> IterationConfig:
    new = copy.deepcopy(config)
    new.counterfactuals = True
    new.promotion.max_necessary_rise = max_rise
    it.validate_iteration_config(new)
    return new


def test_a_candidate_that_fails_more_often_when_left_alone_is_not_promoted(
    fakes: Fakes, store: Store, config: IterationConfig, tmp_path: Path
):
    # given scores rising 10 -> 30 -> 50 with 9, 7, 5 takeovers on 200 m, of which 1, 1 and 3 were necessary
    fakes.ds = {"bc": 10.0, "dpo-1": 30.0, "dpo-2": 50.0}
    fakes.necessary = {"bc": 1, "dpo-1": 1, "dpo-2": 3}
    # when two iterations run with counterfactuals and no rise of the necessary rate allowed
    loop = run_loop("g", 2, guarded(config), store)
    v0, one, two = loop.iterations
    # then every iteration replays its candidate's takeovers (and the incumbent's), before promoting
    assert v0.steps_run == ("collect_demos", "bc", "evaluate", "counterfactual", "promote")
    assert fakes.replayed == ["bc", "dpo-1", "bc", "dpo-2", "dpo-1"]
    assert [r.necessary_per_km for r in loop.iterations] == [pytest.approx(5.0), pytest.approx(5.0),
                                                            pytest.approx(15.0)]  # fmt: skip
    # and iteration 1 (5.0 vs 5.0 per km) is promoted, iteration 2 (15.0 vs 5.0) not, despite DS 50 > 30
    assert one.promoted and "necessary disengagements/km 5.00 vs the incumbent's 5.00" in one.reason
    assert not two.promoted and "but necessary disengagements/km 15.00 vs the incumbent's 5.00" in two.reason
    assert two.incumbent_after.path.endswith("dpo-1.pt")
    # and the per-iteration table and the markdown show the rate; the JSON carries it
    out = Console(record=True, width=300)
    out.print(iteration_table(loop))
    shown = out.export_text()
    assert "necessary/km" in shown and "15.00" in shown
    assert "necessary disengagements/km" in loop_markdown(loop)
    assert loop_json(loop)["iterations"][2]["necessary_per_km"] == pytest.approx(15.0)
    assert plot_iterations(loop, tmp_path / "guarded.png").stat().st_size > 0  # with the necessary crosses


def test_the_paired_guard_judges_the_ratio_the_replays_log(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given the rates of the test above (5, 5, then 15 necessary/km on one shared (route, seed) pair)
    fakes.ds = {"bc": 10.0, "dpo-1": 30.0, "dpo-2": 50.0}
    fakes.necessary = {"bc": 1, "dpo-1": 1, "dpo-2": 3}
    # when the guard judges the paired 80 % interval of the ratio instead of the point rates
    paired = guarded(config)
    paired.promotion.necessary_confidence = 0.8
    loop = run_loop("p", 2, paired, store)
    v0, one, two = loop.iterations
    # then each counterfactual step logged the ratio at that confidence (v0 has nothing to compare with)
    assert v0.necessary_ratio is None
    assert (one.necessary_ratio.estimate, one.necessary_ratio.confidence, one.necessary_ratio.pairs) == (
        pytest.approx(1.0), pytest.approx(0.8), 1,
    )  # fmt: skip
    # and iteration 1's ratio of 1 does not lie above 1, iteration 2's of 3 does
    assert one.promoted and "x 1.00 [1.00, 1.00], does not lie above 1" in one.reason
    assert not two.promoted and "x 3.00 [3.00, 3.00], lies above 1" in two.reason
    assert loop_json(loop)["iterations"][2]["necessary_ratio"]["estimate"] == pytest.approx(3.0)


def test_a_crash_in_the_replays_resumes_without_evaluating_again(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given v0 and an iteration whose counterfactual step crashes
    config = guarded(config, max_rise=None)
    fakes.ds = {"bc": 10.0, "dpo-1": 30.0}
    run_iteration("c", 0, config, store)
    fakes.fail_once = {"counterfactual"}
    with pytest.raises(RuntimeError, match="injected crash in counterfactual"):
        run_iteration("c", 1, config, store)
    # when it runs again, the evaluation is read back and the replays and the promotion run
    result = run_iteration("c", 1, config, store)
    assert result.steps_resumed == ("collect_takeovers", "dagger", "dpo", "evaluate")
    assert result.steps_run == ("counterfactual", "promote")
    assert fakes.calls["evaluate"] == 2 and result.promoted  # the guard is off: measured only


def test_counterfactual_settings_are_checked_before_anything_runs(config: IterationConfig):
    # given the guard without the replays it compares
    wrong = copy.deepcopy(config)
    wrong.promotion.max_necessary_rise = 0.0
    with pytest.raises(LoopError, match="needs the necessary disengagements it compares"):
        it.validate_iteration_config(wrong)
    # given replays on a CARLA server, which cannot replay an episode tick for tick
    with pytest.raises(LoopError, match="needs the embedded backend"):
        configure(guarded(config, None), backend="carla")
    # given replay settings that do not exist
    odd = guarded(config, None)
    odd.counterfactual_overrides = ["horizon=8"]
    with pytest.raises(
        LoopError, match="counterfactual_overrides: Key 'horizon' not in 'CounterfactualConfig'"
    ):
        it.validate_iteration_config(odd)


def weighted(config: IterationConfig) -> IterationConfig:
    """`config` with the collection replayed and DAgger's frames weighted by verdict."""
    new = copy.deepcopy(config)
    new.collect_counterfactuals = True
    new.collect_overrides = {"monitor": ["agree_s=2.0"]}
    new.counterfactual_overrides = ["horizon_s=6"]
    new.train_overrides = ["dagger.data.verdict_weights.necessary=3.0"]
    it.validate_iteration_config(new)
    return new


def test_the_collection_is_replayed_before_training_and_not_again_on_resume(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given v0 and a run that weighs the collected takeovers by their counterfactual verdicts
    config = weighted(config)
    run_iteration("w", 0, config, store)
    # when iteration 1 crashes in DAgger and runs again
    fakes.fail_once = {"dagger"}
    with pytest.raises(RuntimeError, match="injected crash in dagger"):
        run_iteration("w", 1, config, store)
    result = run_iteration("w", 1, config, store)
    # then the collection was replayed once, between collecting and training, as the incumbent drove it
    assert result.steps_resumed == ("collect_takeovers", "collect_counterfactual")
    assert result.steps_run == ("dagger", "dpo", "evaluate", "promote")
    assert fakes.judged == [{"checkpoint": "bc", "overrides": {"monitor": ["agree_s=2.0"]}, "routes": ["1000"],
                             "horizon_s": 6.0}]  # fmt: skip
    # and its verdicts are logged: 1 of 4 takeovers necessary on 400 m
    logged = it.StepLog(store, "w").get(1, Step.COLLECT_COUNTERFACTUAL)
    assert logged.metrics["necessary"] == 1 and logged.metrics["false_alarms"] == 3
    assert logged.metrics["necessary_per_km"] == pytest.approx(2.5)
    # and DAgger reads the verdicts under the settings they were replayed with
    data = fakes.dagger_configs[-1].data
    assert data.verdict_weights == {"necessary": 3.0} and data.verdict_overrides == ["horizon_s=6"]
    # and the iteration table shows the collection's necessary rate beside its takeover rate; the JSON too
    loop = read_loop(store, "w")
    out = Console(record=True, width=300)
    out.print(iteration_table(loop))
    shown = out.export_text()
    assert "rollout necessary/km" in shown and "2.50" in shown
    assert loop_json(loop)["iterations"][1]["collect_verdicts"]["necessary"] == 1


def test_verdict_weights_without_the_replays_are_refused_before_anything_runs(
    fakes: Fakes, store: Store, config: IterationConfig
):
    # given DPO pairs weighted by verdict in a run that does not replay its collection
    wrong = copy.deepcopy(config)
    wrong.train_overrides = ["dpo.pairs.verdict_weights.false_alarm=0.5"]
    # when the run starts, then it stops at once with the fix
    with pytest.raises(LoopError, match=r"dpo\.pairs\.verdict_weights .*set collect_counterfactuals=true"):
        run_iteration("x", 0, wrong, store)
    assert sum(fakes.calls.values()) == 0
    # and a CARLA backend, which cannot replay, is refused with the replays
    with pytest.raises(LoopError, match="collect_counterfactuals needs the embedded backend"):
        configure(weighted(config), backend="carla")
