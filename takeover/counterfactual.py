"""Counterfactual disengagements: would the policy have failed had the expert not taken over?

The monitor fires on forecasts (two plans that part, a forecast overlap, a stop line about to be
crossed), so some of its takeovers prevent an infraction and others interrupt a policy that would have
driven on without one: a false alarm, which still counts in disengagements per km. Safety reports of
driverless fleets count the first kind apart: each disengagement is simulated again without the
takeover, and only those whose simulated continuation ends in a contact are reported as such (Waymo's
"counterfactual" disengagement analysis). The embedded simulator replays an episode exactly (same
route, seed, checkpoint and settings give the same ticks), so this module can do the same for every
takeover of a stored evaluation:

    replay takeover k of an episode: drive it again; the monitor hands the wheel to the expert for
    takeovers 0..k-1 as it did, and at takeover k it is overruled: the policy keeps the wheel for
    `horizon_s` seconds while the route's scoring watches.

A takeover is **necessary** when, within the horizon, the policy commits one of the `counted`
infractions (a collision, a red light or stop sign run, leaving the route's lanes or the route), or,
for a `standing_reasons` trigger (stuck), drives less than `standing_progress_m` (it would have stood
on). Otherwise it was a **false alarm** ("clear"). Events that follow a trigger within the horizon
are charged to it, though a late one may have another cause: the horizon bounds that error. A replay
that does not reach the stored trigger (same reason, same tick) has **diverged**: the simulator did not
replay the episode; such a takeover is counted as necessary (nothing shows otherwise) and reported.

The necessary rate per km is sum_j N_j / sum_j d_j over the evaluation's takeover episodes j (N_j its
necessary takeovers, d_j its metres), and two evaluations of one protocol compare pair by pair with
the paired bootstrap of takeover/paired.py. A CARLA server cannot replay an episode tick for tick, so
counterfactuals need the embedded backend.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import track

from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.maps import MapLibrary
from storage.records import CounterfactualRecord, TakeoverInfo
from takeover.collect import CollectSetup, make_setup, plan_missing
from takeover.episode import EpisodeMode, run_episode
from takeover.evaluate import EMBEDDED, EpisodeScore, EvalResult, torch_threads
from takeover.monitor import TIME_EPS_S, Driver, MonitorConfig, MonitorDecision, TakeoverMonitor
from takeover.paired import (
    Interval,
    PairedConfig,
    bootstrap_interval,
    interval_json,
    load_paired_config,
    pair_episodes,
    sum_ratio,
)
from takeover.report import markdown_table
from takeover.text import MISSING, fmt

if TYPE_CHECKING:
    from carla_bridge.route import Route
    from carla_bridge.snapshot import WorldSnapshot
    from experts.expert import ExpertPlan
    from storage.store import Store
    from takeover.policy.protocol import PolicyPlan

CONFIG_NAME = "counterfactual"
CLEAR = "clear"  # outcomes besides an infraction kind
STANDING = "standing"
DIVERGED = "diverged"


class CounterfactualError(TakeoverError):
    """Counterfactuals cannot be computed as asked (bad settings, a backend that cannot replay)."""


@dataclass
class CounterfactualConfig:
    """Schema of conf/counterfactual.yaml."""

    horizon_s: float = 8.0  # the policy keeps the wheel this long after the refused trigger
    counted: list[str] = field(
        default_factory=lambda: [
            "collision_pedestrian", "collision_vehicle", "collision_static", "red_light", "stop_sign",
            "outside_route_lanes", "route_deviation", "yield_to_emergency_vehicle",
        ]
    )  # fmt: skip
    standing_reasons: list[str] = field(default_factory=lambda: ["stuck"])
    standing_progress_m: float = 1.0  # ... under which such a trigger's policy counts as standing on
    diverge_slack_s: float = 1.0  # a replay past the stored trigger by this much without it has diverged
    torch_threads: int = 1  # torch intra-op threads while replaying


def load_counterfactual_config(overrides: Sequence[str] | None = None) -> CounterfactualConfig:
    config = load_config(CounterfactualConfig, CONFIG_NAME, list(overrides or []))
    if not config.horizon_s > 0:
        raise CounterfactualError(f"counterfactual.horizon_s={config.horizon_s} must be > 0 s (e.g. 8)")
    if config.standing_progress_m < 0 or config.diverge_slack_s < 0:
        raise CounterfactualError("counterfactual.standing_progress_m and diverge_slack_s must be >= 0")
    return config


def judged_settings(config: CounterfactualConfig) -> dict[str, Any]:
    """The settings that decide a verdict (how the replay is computed, torch threads, does not)."""
    return {k: v for k, v in asdict(config).items() if k != "torch_threads"}


def config_digest(config: CounterfactualConfig) -> str:
    """sha256 of `judged_settings`: stored verdicts are reused only under the same ones."""
    return hashlib.sha256(json.dumps(judged_settings(config), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Verdict:
    outcome: str  # the first counted infraction's kind, STANDING or CLEAR
    necessary: bool
    first_event_s: float | None  # seconds from the trigger to that infraction


def judge(
    reason: str, events: Sequence[Mapping[str, Any]], progress_m: float, config: CounterfactualConfig
) -> Verdict:
    """Was the takeover necessary? `events` are the window's infractions ({"kind", "after_s"}, seconds
    after the trigger, in order) and `progress_m` the metres the policy drove in it."""
    counted = [
        e for e in events if e["kind"] in config.counted and e["after_s"] <= config.horizon_s + TIME_EPS_S
    ]
    if counted:
        first = min(counted, key=lambda e: e["after_s"])
        return Verdict(str(first["kind"]), True, float(first["after_s"]))
    if reason in config.standing_reasons and progress_m < config.standing_progress_m:
        return Verdict(STANDING, True, None)
    return Verdict(CLEAR, False, None)


# ---------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Branch:
    """Where a replay left the stored episode: the overruled trigger."""

    time_s: float
    reason: str


class OverruledMonitor(TakeoverMonitor):
    """A TakeoverMonitor whose takeover number `overrule` (from 0) is not carried out: from that trigger
    on the policy keeps the wheel, and the monitor only measures how far it drives."""

    def __init__(self, config: MonitorConfig, overrule: int) -> None:
        if overrule < 0:
            raise CounterfactualError(f"overrule={overrule}: takeovers are numbered from 0")
        self.overrule = overrule
        super().__init__(config)

    def _reset_state(self) -> None:
        super()._reset_state()
        self.carried_out = 0
        self.branch: Branch | None = None
        self.progress_m = 0.0
        self._last_xy: np.ndarray | None = None

    def update(
        self, snapshot: WorldSnapshot, policy_plan: PolicyPlan, expert_plan: ExpertPlan
    ) -> MonitorDecision:
        if self.branch is not None:
            xy = snapshot.ego.pose.xy
            if self._last_xy is not None:
                self.progress_m += float(np.hypot(*(xy - self._last_xy)))
            self._last_xy = xy
            return MonitorDecision(Driver.POLICY, None, False, None, (), {})
        decision = super().update(snapshot, policy_plan, expert_plan)
        if decision.triggered is None:
            return decision
        if self.carried_out < self.overrule:
            self.carried_out += 1
            return decision
        self.branch = Branch(float(snapshot.time_s), decision.triggered.value)
        self._last_xy = snapshot.ego.pose.xy
        return MonitorDecision(Driver.POLICY, None, False, None, decision.active, decision.severity)


def replay_takeover(
    setup: CollectSetup, route: Route, seed: int, takeover: TakeoverInfo, config: CounterfactualConfig
) -> CounterfactualRecord:
    """Drive `route` x `seed` again with `setup` (a takeover-mode setup of the stored episode's
    checkpoint and settings), overrule `takeover` and judge the policy's next `horizon_s` seconds."""
    if setup.monitor is None or setup.policy is None:
        raise CounterfactualError("a counterfactual replay needs a takeover-mode setup (policy and monitor)")
    monitor = OverruledMonitor(setup.monitor.config, takeover.seq)
    give_up_s = takeover.time_s + config.diverge_slack_s

    def stop(snap: WorldSnapshot) -> bool:
        if monitor.branch is None:
            return snap.time_s > give_up_s
        return snap.time_s >= monitor.branch.time_s + config.horizon_s - TIME_EPS_S

    result = run_episode(
        setup.sim, route, seed, setup.policy, setup.expert, monitor, setup.episode, stop=stop
    )
    digest = config_digest(config)
    settings = judged_settings(config)  # what the digest covers, stored with the verdict
    branch = monitor.branch
    if (
        branch is None
        or abs(branch.time_s - takeover.time_s) > TIME_EPS_S
        or branch.reason != takeover.reason
    ):
        return CounterfactualRecord(
            takeover.id, digest, config.horizon_s, DIVERGED, None, None, 0.0, (), settings
        )
    events = tuple(
        {"kind": str(e["kind"]), "after_s": round(float(e["time_s"]) - branch.time_s, 6)}
        for e in result.episode.infractions
        if float(e["time_s"]) >= branch.time_s - TIME_EPS_S
    )
    verdict = judge(takeover.reason, events, monitor.progress_m, config)
    return CounterfactualRecord(
        takeover.id, digest, config.horizon_s, verdict.outcome, verdict.necessary, verdict.first_event_s,
        monitor.progress_m, events, settings,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class VerdictTally:
    """How a set of counterfactual verdicts came out."""

    verdicts: int
    necessary: int  # diverged ones included
    diverged: int
    outcomes: dict[str, int]  # every verdict by outcome (an infraction kind, clear, standing, diverged)

    @property
    def false_alarms(self) -> int:
        return self.verdicts - self.necessary


def tally_verdicts(records: Iterable[CounterfactualRecord]) -> VerdictTally:
    """Count verdicts: the one rule by which evaluations and collections tell necessary from false alarms."""
    found = list(records)
    outcomes = Counter(r.outcome for r in found)
    necessary = sum(1 for r in found if r.counts_as_necessary)
    return VerdictTally(len(found), necessary, outcomes[DIVERGED], dict(outcomes.most_common()))


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    takeovers: int
    necessary: int  # diverged ones included
    diverged: int

    @property
    def precision(self) -> float | None:
        """The share of this reason's takeovers that were necessary."""
        return self.necessary / self.takeovers if self.takeovers else None


@dataclass(frozen=True)
class ScenarioCount:
    """One scenario type's takeovers: how many were necessary, of which kinds, and per km."""

    scenario: str
    takeovers: int
    necessary: int  # diverged ones included
    distance_km: float  # of that scenario's takeover episodes
    outcomes: dict[str, int]  # the necessary ones by outcome (an infraction kind, standing, diverged)

    @property
    def necessary_per_km(self) -> float | None:
        return self.necessary / self.distance_km if self.distance_km > 0 else None


@dataclass(frozen=True)
class Counterfactuals:
    """Every takeover of one evaluation (its takeover episodes) with its counterfactual verdict."""

    result: EvalResult
    takeovers: tuple[TakeoverInfo, ...]
    records: Mapping[int, CounterfactualRecord]  # by takeover id
    config: CounterfactualConfig
    replayed: int  # verdicts computed now (the rest were stored)

    def is_necessary(self, takeover: TakeoverInfo) -> bool:
        return self.records[takeover.id].counts_as_necessary

    def necessary_by_episode(self) -> dict[int, int]:
        counts = Counter(t.episode_id for t in self.takeovers if self.is_necessary(t))
        return {e.episode_id: counts.get(e.episode_id, 0) for e in self.result.takeover_episodes}

    @property
    def necessary(self) -> int:
        return sum(1 for t in self.takeovers if self.is_necessary(t))

    @property
    def diverged(self) -> int:
        return tally_verdicts(self.records.values()).diverged

    def by_reason(self) -> list[ReasonCount]:
        rows = []
        for reason in sorted({t.reason for t in self.takeovers}):
            mine = [t for t in self.takeovers if t.reason == reason]
            tally = tally_verdicts(self.records[t.id] for t in mine)
            rows.append(ReasonCount(reason, len(mine), tally.necessary, tally.diverged))
        return rows

    def by_scenario(self) -> list[ScenarioCount]:
        """Per scenario type of the routes, most necessary first: where the policy fails when left alone."""
        scenario = {e.episode_id: e.scenario_type for e in self.result.takeover_episodes}
        metres: Counter[str] = Counter()
        for e in self.result.takeover_episodes:
            metres[e.scenario_type] += e.distance_m
        rows = []
        for name in metres:
            mine = [t for t in self.takeovers if scenario[t.episode_id] == name]
            needed = Counter(self.records[t.id].outcome for t in mine if self.is_necessary(t))
            rows.append(ScenarioCount(
                name, len(mine), sum(needed.values()), metres[name] / 1000.0, dict(needed.most_common()),
            ))  # fmt: skip
        return sorted(rows, key=lambda r: (-r.necessary, r.scenario))

    def overall(self) -> ReasonCount:
        """All reasons together, as one row."""
        return ReasonCount("all", len(self.takeovers), self.necessary, self.diverged)

    def outcomes(self) -> dict[str, int]:
        return tally_verdicts(self.records.values()).outcomes

    @property
    def distance_km(self) -> float:
        return self.result.takeover_distance_km

    @property
    def necessary_per_km(self) -> float | None:
        return self.necessary / self.distance_km if self.distance_km > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.result.run,
            "iteration": self.result.iteration,
            "checkpoint": self.result.checkpoint_path,
            "horizon_s": self.config.horizon_s,
            "takeovers": len(self.takeovers),
            "necessary": self.necessary,
            "diverged": self.diverged,
            "distance_km": self.distance_km,
            "disengagements_per_km": self.result.disengagements_per_km,
            "necessary_per_km": self.necessary_per_km,
            "by_reason": [asdict(r) | {"precision": r.precision} for r in self.by_reason()],
            "by_scenario": [asdict(r) | {"necessary_per_km": r.necessary_per_km} for r in self.by_scenario()],
            "outcomes": self.outcomes(),
        }


def analyse_evaluation(
    store: Store,
    result: EvalResult,
    routes: Sequence[Route],
    config: CounterfactualConfig | None = None,
    *,
    overrides: Mapping[str, Sequence[str]] | None = None,
    maps_dirs: Sequence[str] = (),
    progress: bool = True,
) -> Counterfactuals:
    """The counterfactual of every takeover of `result`'s takeover episodes (`judge_episodes`).

    `routes` holds the evaluation's routes and `overrides` the per-section settings it drove with
    (EvalConfig.overrides); settings other than the stored episodes' show up as diverged replays."""
    config = config or load_counterfactual_config()
    what = f"{result.run}:{result.iteration}"
    if result.backend != EMBEDDED:
        raise CounterfactualError(
            f"{what} was driven on the {result.backend!r} backend, which cannot "
            "replay an episode tick for tick; counterfactuals need an evaluation on the embedded simulator"
        )
    if not result.takeover_episodes:
        raise CounterfactualError(f"{what} has no episodes with takeovers (eval.with_takeovers was off)")
    takeovers, records, replayed = judge_episodes(
        store, result.takeover_episodes, result.checkpoint_path, routes, config, overrides=overrides,
        maps_dirs=maps_dirs, progress=progress, what=what,
    )  # fmt: skip
    return Counterfactuals(result, takeovers, records, config, replayed)


def judge_episodes(
    store: Store,
    episodes: Sequence[EpisodeScore],
    checkpoint: str,
    routes: Sequence[Route],
    config: CounterfactualConfig,
    *,
    overrides: Mapping[str, Sequence[str]] | None = None,
    maps_dirs: Sequence[str] = (),
    progress: bool = True,
    what: str = "episodes",
) -> tuple[tuple[TakeoverInfo, ...], dict[int, CounterfactualRecord], int]:
    """(takeovers, their verdicts by takeover id, verdicts computed now) of the stored takeover-mode
    `episodes` that `checkpoint` drove on `routes` with the per-section `overrides` (an evaluation's or a
    collection's). Verdicts stored under `config` are read back; each episode's new ones are stored
    together, so an interrupted analysis resumes."""
    by_episode = {e.episode_id: e for e in episodes}
    takeovers = tuple(store.list_takeovers(episode_ids=by_episode))
    digest = config_digest(config)
    records = {r.takeover_id: r for r in store.list_counterfactuals((t.id for t in takeovers), digest)}
    missing = [t for t in takeovers if t.id not in records]
    if missing:
        maps = MapLibrary.from_config(extra_dirs=tuple(maps_dirs))
        wanted = {e.route_id for e in by_episode.values()}
        by_id = {r.id: r for r in plan_missing([r for r in routes if r.id in wanted], maps)}
        absent = sorted({by_episode[t.episode_id].route_id for t in missing} - set(by_id))
        if absent:
            raise CounterfactualError(f"routes {absent} of {what} are not in the route set given")
        sections = {k: list(v) for k, v in (overrides or {}).items()}
        sections["episode"] = [*sections.get("episode", []), "store_features=false"]
        setup = make_setup(EpisodeMode.TAKEOVER, checkpoint=checkpoint, maps=maps, overrides=sections)
        with torch_threads(config.torch_threads):
            for episode_id, group in _by_episode(missing, progress, f"counterfactuals {what}"):
                episode = by_episode[episode_id]
                fresh = [
                    replay_takeover(setup, by_id[episode.route_id], episode.seed, t, config) for t in group
                ]
                store.add_counterfactuals(fresh)
                records.update((r.takeover_id, r) for r in fresh)
    return takeovers, records, len(missing)


REASON_COLUMNS = ("reason", "takeovers", "necessary", "false alarms", "precision")
SCENARIO_COLUMNS = ("scenario", "takeovers", "necessary", "necessary/km", "necessary by outcome")


def reason_cells(row: ReasonCount) -> list[str]:
    """One reason's cells under REASON_COLUMNS (the CLI's table and the flow's markdown)."""
    precision = MISSING if row.precision is None else f"{100 * row.precision:.0f} %"
    return [row.reason, str(row.takeovers), str(row.necessary), str(row.takeovers - row.necessary), precision]


def scenario_cells(row: ScenarioCount) -> list[str]:
    """One scenario type's cells under SCENARIO_COLUMNS."""
    kinds = ", ".join(f"{kind} {n}" for kind, n in row.outcomes.items()) or MISSING
    return [row.scenario, str(row.takeovers), str(row.necessary), fmt(row.necessary_per_km, ".2f"), kinds]


def evaluation_title(found: Counterfactuals) -> str:
    r = found.result
    return f"{r.run}:{r.iteration} ({Path(r.checkpoint_path).name}), {found.config.horizon_s:g} s horizon"


def counterfactual_markdown(found: Sequence[Counterfactuals], ratio: Interval | None = None) -> str:
    """The verdicts per reason of each evaluation (and, for two, the paired necessary-rate ratio) as markdown."""
    lines = []
    for f in found:
        rows = [reason_cells(row) for row in [*f.by_reason(), f.overall()]]
        scenarios = [scenario_cells(row) for row in f.by_scenario()]
        lines += [f"### {evaluation_title(f)}", "", markdown_table(REASON_COLUMNS, rows), "",
                  markdown_table(SCENARIO_COLUMNS, scenarios), "",
                  f"Disengagements/km {fmt(f.result.disengagements_per_km, '.2f')}, necessary/km "
                  f"{fmt(f.necessary_per_km, '.2f')}; diverged replays: {f.diverged}.", ""]  # fmt: skip
    if len(found) == 2:
        lines.append(f"Necessary disengagements/km, second over first, pair by pair: {ratio_text(ratio)}.")
    return "\n".join(lines)


def counterfactuals_json(found: Sequence[Counterfactuals], ratio: Interval | None = None) -> dict[str, Any]:
    """The CLI's --json and the flow's result: each evaluation's verdicts, and for two the paired ratio."""
    out: dict[str, Any] = {"evaluations": [f.to_json() for f in found]}
    if len(found) == 2:
        out["necessary_ratio"] = interval_json(ratio)
    return out


def ratio_text(ratio: Interval | None) -> str:
    return MISSING if ratio is None else f"x {ratio.estimate:.2f} {ratio.bounds('.2f')}"


def _by_episode(
    takeovers: Sequence[TakeoverInfo], progress: bool, what: str
) -> Iterator[tuple[int, list[TakeoverInfo]]]:
    groups: dict[int, list[TakeoverInfo]] = {}
    for t in takeovers:
        groups.setdefault(t.episode_id, []).append(t)
    items = list(groups.items())
    yield from track(items, description=what, disable=not progress, transient=True)


def necessary_ratio(
    before: Counterfactuals, after: Counterfactuals, paired: PairedConfig | None = None
) -> Interval | None:
    """The necessary-disengagement rate of `after` over `before`, pair by pair (route, seed), with its
    paired bootstrap interval (takeover/paired.py); None without a pair."""
    paired = paired if paired is not None else load_paired_config()
    pairs, unpaired = pair_episodes(before.result.takeover_episodes, after.result.takeover_episodes)
    counts = (before.necessary_by_episode(), after.necessary_by_episode())

    def columns(side: int) -> np.ndarray:
        rows = [(counts[side][pair[side].episode_id], pair[side].distance_m) for pair in pairs]
        return np.array(rows, dtype=float).reshape(-1, 2)

    return bootstrap_interval(columns(0), columns(1), sum_ratio, paired, unpaired)
