"""Closed-loop evaluation of a policy checkpoint on held-out routes, and the promotion rule.

A checkpoint drives every route x seed twice (seeds are the leaderboard's repetitions):
  without takeovers (episode mode "policy", phase `eval`): the leaderboard scores of each episode,
      driving score DS_i = RC_i * IP_i (route completion x infraction penalty), success;
      DS = (1/N) sum_i DS_i over the N route x seed episodes, RC and IP likewise, SR = successes / N;
  with takeovers enabled (mode "takeover", phase `eval_takeover`): the shadow expert takes over
      when the monitor says so; disengagements per km = sum_i takeovers_i / (sum_i distance_i / 1000 m),
      expert share = sum_i expert_s_i / sum_i duration_i (simulated time from each takeover to its
      hand-back, or to the end), and the share of episodes without a takeover. On short one-scenario
      routes one takeover per episode puts a floor under disengagements/km; the expert share shows
      how much of the driving the expert still does.
Both kinds of episodes are stored (Store.ingest_episode). Episodes already stored under the same
natural key are read back instead of driven again, so an evaluation that stopped half-way resumes;
the result is always built from the database rows, whichever way they got there.

Episodes run as `EpisodeJob`s through a `JobMapper` (sequential with a progress bar by default; the
Prefect flows pass one that fans the jobs out as tasks with retries). Each worker thread builds its
own simulator/expert/policy once (`SetupCache`). A job that fails for good (e.g. a route whose town
does not exist) does not stop the others: it is returned as a failure and recorded in the database
as a `training_rounds` row of kind "episode_failure" (status "failed", later "resolved" when a re-run
of the same episode succeeds; see `record_failures`).

Promotion (`should_promote`): a candidate C replaces the incumbent I when C failed no more episodes
than I and either
    DS_C >= DS_I + min_ds_gain                                              (a higher score), or
    |DS_C - DS_I| <= ds_tie_tolerance and DPK_C < (1 - min_disengagement_drop) * DPK_I
                                                               (an equal score, fewer disengagements/km).
With `max_disengagement_rise` r set, a higher score does not count when DPK_C > (1 + r) DPK_I: the
score alone would promote a policy that drives further and needs the expert more often.
With `max_necessary_rise` m set, no candidate is promoted whose necessary disengagements/km
(takeover/counterfactual.py: takeovers without which the policy would have failed) exceed (1 + m) times
the incumbent's: the monitor's count mixes needed takeovers with false alarms, and a policy that drives
further and crashes more when left alone can still win on score and disengagements/km. With
`necessary_confidence` c > 0 as well, the guard refuses only a rise shown pair by pair: the paired
interval at confidence c of the ratio N_C / N_I (takeover/counterfactual.py's `necessary_ratio`) lies
wholly above 1 + m. Thirty episodes give intervals of about x 0.6-2, so the point rule refuses many
candidates on noise; the paired rule refuses fewer, and only on evidence.
With `paired_confidence` c > 0 the change must also hold pair by pair (takeover/paired.py): the
interval at confidence c of the DS change of C over I, over their shared (route, seed) episodes, lies
above 0 (a higher score), or that of the DPK ratio C / I lies below 1 (an equal score). Thirty
episodes of one-scenario routes scatter widely, and a nightly loop that promotes on noise trains its
next round from a policy that is not better.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.orm import Session

from carla_bridge.errors import SimulatorError, TakeoverError
from carla_bridge.maps import MapLibrary
from carla_bridge.route_sets import route_files
from carla_bridge.scoring.record import optional_float
from carla_bridge.units import M_PER_KM
from storage.models import Checkpoint, Episode, Iteration, Takeover, TrainingRound
from storage.models import Route as RouteRow
from storage.records import EXPERT_DISTANCE_KEY, CheckpointRecord, TrainingRoundRecord
from takeover.collect import CollectSetup, check_overrides, make_setup, plan_missing, route_set_name
from takeover.episode import EpisodeMode, EpisodeTags, run_episode
from takeover.paired import Interval, PairedComparison, compare_evaluations, load_paired_config

if TYPE_CHECKING:
    from carla_bridge.route import Route
    from storage.store import Store

log = logging.getLogger(__name__)

FAILURE_KIND = "episode_failure"  # training_rounds.kind of a route x seed that failed for good
FAILED = "failed"
RESOLVED = "resolved"
EMBEDDED = "embedded"
CARLA = "carla"
BACKENDS = (EMBEDDED, CARLA)
SHA_NAME_CHARS = 12  # checkpoint sha256 prefix in failure-row names


class EvaluationError(TakeoverError):
    """An evaluation cannot run: no routes or seeds, a missing checkpoint, every episode failed."""


# ------------------------------------------------------------------------------------------ configs


@dataclass
class EvalConfig:
    """Closed-loop evaluation on held-out routes (section `eval` of conf/loop.yaml)."""

    routes: str = "builtin:eval"  # route set: builtin:eval or a route XML (never the training routes)
    route_ids: list[str] = field(default_factory=list)  # only these ids; empty = every route of the set
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # leaderboard repetitions
    with_takeovers: bool = True  # also drive with the shadow expert to measure disengagements per km
    phase: str = "eval"  # storage phase of the episodes without takeovers
    takeover_phase: str = "eval_takeover"  # ... and with takeovers (never a training phase)
    # Intra-op torch threads while driving; 1 avoids oversubscribing shared CPUs; 0 = torch's default.
    torch_threads: int = 1
    # Per-section dotlists over conf/episode.yaml, monitor.yaml, sim.yaml, expert.yaml, policy.yaml.
    overrides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class PromotionConfig:
    """When a candidate replaces the incumbent (module docstring); scores are DS points, 0-100."""

    min_ds_gain: float = 1.0  # DS points above the incumbent's that count as a higher score
    ds_tie_tolerance: float = 1.0  # |DS_C - DS_I| at most this counts as an equal score
    min_disengagement_drop: float = 0.1  # on an equal score, the relative drop of disengagements/km needed
    paired_confidence: float = 0.0  # > 0: the gain must also hold at this confidence pair by pair; 0 = off
    # A higher score is refused when disengagements/km rise by more than this fraction (0.2 = 20 %); None = any
    max_disengagement_rise: float | None = None
    # No candidate is promoted when its necessary disengagements/km (counterfactual replays, needs the
    # loop's `counterfactuals`) rise by more than this fraction over the incumbent's (0 = any rise); None = off
    max_necessary_rise: float | None = None
    # > 0 (e.g. 0.8): that guard refuses only when the paired interval of the necessary-rate ratio at this
    # confidence lies wholly above 1 + max_necessary_rise; 0 = the point rates decide
    necessary_confidence: float = 0.0


def validate_eval_config(config: EvalConfig, where: str = "eval") -> None:
    if not config.routes:
        raise EvaluationError(f"{where}.routes is empty: name a route set (builtin:eval) or a route XML")
    if not config.seeds:
        raise EvaluationError(f"{where}.seeds is empty: give at least one seed, e.g. [0, 1, 2]")
    if not config.phase or not config.takeover_phase or config.phase == config.takeover_phase:
        raise EvaluationError(
            f"{where}.phase and {where}.takeover_phase must be two different non-empty names (eval, eval_takeover)"
        )
    if config.torch_threads < 0:
        raise EvaluationError(
            f"{where}.torch_threads={config.torch_threads} must be >= 0 (0 = torch's default)"
        )
    check_overrides(config.overrides)


def validate_promotion_config(config: PromotionConfig, where: str = "promotion") -> None:
    if config.min_ds_gain < 0 or config.ds_tie_tolerance < 0:
        raise EvaluationError(f"{where}.min_ds_gain and {where}.ds_tie_tolerance must be >= 0 DS points")
    if not 0.0 <= config.min_disengagement_drop < 1.0:
        raise EvaluationError(
            f"{where}.min_disengagement_drop={config.min_disengagement_drop} must be in [0, 1) (0.1 = 10 % fewer)"
        )
    if config.max_disengagement_rise is not None and config.max_disengagement_rise < 0:
        raise EvaluationError(
            f"{where}.max_disengagement_rise={config.max_disengagement_rise} must be >= 0 (0.2 = 20 % more), or null"
        )
    if not 0.0 <= config.paired_confidence < 1.0:
        raise EvaluationError(
            f"{where}.paired_confidence={config.paired_confidence} must be in [0, 1) (0 = off, e.g. 0.8)"
        )
    if config.max_necessary_rise is not None and config.max_necessary_rise < 0:
        raise EvaluationError(
            f"{where}.max_necessary_rise={config.max_necessary_rise} must be >= 0 (0 = no rise at all), or null"
        )
    if not 0.0 <= config.necessary_confidence < 1.0:
        raise EvaluationError(
            f"{where}.necessary_confidence={config.necessary_confidence} must be in [0, 1) (0 = off, e.g. 0.8)"
        )
    if config.necessary_confidence > 0 and config.max_necessary_rise is None:
        raise EvaluationError(
            f"{where}.necessary_confidence={config.necessary_confidence} sets how sure the necessary-rate "
            f"guard must be, which is off: set {where}.max_necessary_rise (e.g. 0.0), or necessary_confidence=0"
        )


# ------------------------------------------------------------------------------------------ episode jobs


@dataclass(frozen=True)
class EpisodeJob:
    """One route x seed to drive in one mode, stored under `phase`."""

    route: Route
    seed: int
    mode: EpisodeMode
    phase: str

    @property
    def label(self) -> str:
        return f"{self.phase} route {self.route.id} seed {self.seed}"


@dataclass(frozen=True)
class EpisodeBatch:
    """What every job of one batch shares: where episodes go, who drives, which settings."""

    store: Store
    run: str
    iteration: int | None
    route_set: str  # the name recorded with the episodes (collect.route_set_name of the spec)
    checkpoint: str | None  # the policy that drives (None for expert demonstrations)
    maps_dirs: tuple[str, ...] = ()  # folders searched first for <Town>.xodr
    overrides: Mapping[str, Sequence[str]] = field(default_factory=dict)
    backend: str = EMBEDDED


@dataclass(frozen=True)
class EpisodeFailure:
    """A route x seed that failed for good (after the flow's retries)."""

    route_id: str
    seed: int
    phase: str
    error: str


JobFunction = Callable[[EpisodeJob], int]
# (what, job function, jobs) -> one episode id or the exception of the job, in job order.
JobMapper = Callable[[str, JobFunction, Sequence[EpisodeJob]], list["int | BaseException"]]


def run_sequentially(
    what: str, fn: JobFunction, jobs: Sequence[EpisodeJob], *, progress: bool = True
) -> list[int | BaseException]:
    """Run the jobs one after the other with a progress bar; a job raising TakeoverError is kept as its
    error and the next job runs (a bug, any other exception, stops the batch)."""
    results: list[int | BaseException] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(what, total=len(jobs))
        for job in jobs:
            bar.update(task, description=f"{what}: {job.label}")
            try:
                results.append(fn(job))
            except TakeoverError as exc:
                log.warning("%s failed: %s", job.label, exc)
                results.append(exc)
            bar.advance(task)
    return results


class SetupCache:
    """One CollectSetup per (thread, mode): a simulator is stateful, so concurrent jobs never share one."""

    def __init__(self, batch: EpisodeBatch) -> None:
        self.batch = batch
        self._local = threading.local()

    def get(self, mode: EpisodeMode) -> CollectSetup:
        setups: dict[EpisodeMode, CollectSetup] = self._local.__dict__.setdefault("setups", {})
        if mode not in setups:
            maps = MapLibrary.from_config(extra_dirs=self.batch.maps_dirs)
            checkpoint = None if mode is EpisodeMode.EXPERT else self.batch.checkpoint
            overrides = {k: list(v) for k, v in self.batch.overrides.items()}
            setups[mode] = make_setup(mode, checkpoint=checkpoint, maps=maps, overrides=overrides)
        return setups[mode]

    def planned(self, route: Route, setup: CollectSetup) -> Route:
        """A planned copy of `route` for this thread (RouteError when its town is unknown)."""
        routes: dict[str, Route] = self._local.__dict__.setdefault("routes", {})
        if route.id not in routes:
            own = copy.copy(route)
            maps = getattr(setup.sim, "maps", None)
            if own.dense is None and isinstance(maps, MapLibrary):
                plan_missing([own], maps)
            routes[route.id] = own
        return routes[route.id]


def run_episode_job(batch: EpisodeBatch, setups: SetupCache, job: EpisodeJob) -> int:
    """Drive one job in the embedded simulator and store it atomically; returns the episode id."""
    setup = setups.get(job.mode)
    route = setups.planned(job.route, setup)
    store = batch.store
    if setup.checkpoint_sha256 is not None and setup.checkpoint_path is not None:
        store.record_checkpoint(
            CheckpointRecord(path=setup.checkpoint_path, sha256=setup.checkpoint_sha256, kind="policy")
        )
    if batch.iteration is not None:
        store.start_iteration(batch.run, batch.iteration)
    tags = EpisodeTags(
        run=batch.run, route_set=batch.route_set, iteration=batch.iteration,
        checkpoint_sha256=setup.checkpoint_sha256, phase=job.phase,
    )  # fmt: skip
    result = run_episode(
        setup.sim, route, job.seed, setup.policy, setup.expert, setup.monitor, setup.episode,
        tags=tags, feature_config=setup.feature_config,
    )  # fmt: skip
    return store.ingest_episode(result.episode, result.takeovers, result.clips)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block (0 leaves it alone).

    One thread per rollout: a 64x64..128x128 CNN gains nothing from more, and on shared CPUs the extra
    threads' spinning made episodes several times slower.
    """
    if count <= 0:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ stored episodes


@dataclass(frozen=True)
class EpisodeScore:
    """One stored episode's leaderboard scores and disengagements (as read from the database)."""

    episode_id: int
    route_id: str
    seed: int
    phase: str
    status: str
    driving_score: float  # 0-100
    route_completion: float  # percent
    infraction_penalty: float  # 0-1
    success: bool
    distance_m: float
    takeovers: int
    takeovers_by_reason: dict[str, int] = field(default_factory=dict)
    scenario_type: str = "none"
    duration_s: float = 0.0  # simulated seconds
    expert_s: float = 0.0  # simulated seconds the shadow expert had the wheel (takeover to hand-back)
    expert_distance_m: float | None = None  # metres it drove then; None: stored before this was recorded


def _sha_filter(stmt: Any, checkpoint_sha256: str | None) -> Any:
    if checkpoint_sha256 is None:
        return stmt.where(Episode.checkpoint_id.is_(None))
    return stmt.join(Checkpoint, Checkpoint.id == Episode.checkpoint_id).where(
        Checkpoint.sha256 == checkpoint_sha256
    )


def stored_episodes(
    store: Store,
    run: str,
    iteration: int | None,
    checkpoint_sha256: str | None,
    route_set: str,
    phases: Sequence[str],
    backend: str = EMBEDDED,
) -> list[EpisodeScore]:
    """The stored episodes (repetition 0) of one run/iteration/checkpoint/route set in `phases`."""
    stmt = (
        select(
            Episode.id,
            Episode.phase,
            RouteRow.route_id,
            RouteRow.scenario_type,
            Episode.seed,
            Episode.status,
            Episode.driving_score,
            Episode.route_completion,
            Episode.infraction_penalty,
            Episode.success,
            Episode.distance_m,
            Episode.duration_s,
            Episode.n_takeovers,
            Episode.scores,
        )
        .join(RouteRow, RouteRow.id == Episode.route_pk)
        .where(
            Episode.run == run,
            Episode.phase.in_(list(phases)),
            RouteRow.route_set == route_set,
            Episode.backend == backend,
            Episode.repetition == 0,
        )
        .order_by(Episode.id)
    )
    stmt = _sha_filter(stmt, checkpoint_sha256)
    if iteration is None:
        stmt = stmt.where(Episode.iteration_id.is_(None))
    else:
        stmt = stmt.join(Iteration, Iteration.id == Episode.iteration_id).where(Iteration.number == iteration)
    with Session(store.engine) as session:
        rows = session.execute(stmt).all()
        ids = [int(r.id) for r in rows]
        takeovers = (
            session.execute(
                select(Takeover.episode_id, Takeover.reason, Takeover.time_s, Takeover.handback_time_s).where(
                    Takeover.episode_id.in_(ids)
                )
            ).all()
            if ids
            else []
        )
    duration = {int(r.id): float(r.duration_s or 0.0) for r in rows}
    reasons: dict[int, Counter[str]] = {i: Counter() for i in ids}
    expert_s = dict.fromkeys(ids, 0.0)
    for episode_id, reason, start_s, end_s in takeovers:
        reasons[int(episode_id)][str(reason)] += 1
        # a takeover never handed back lasts until the episode ends
        end = duration[int(episode_id)] if end_s is None else float(end_s)
        expert_s[int(episode_id)] += max(0.0, end - float(start_s))
    return [
        EpisodeScore(
            episode_id=int(r.id),
            route_id=str(r.route_id),
            seed=int(r.seed),
            phase=str(r.phase),
            status=str(r.status),
            driving_score=float(r.driving_score or 0.0),
            route_completion=float(r.route_completion or 0.0),
            infraction_penalty=float(r.infraction_penalty if r.infraction_penalty is not None else 1.0),
            success=bool(r.success),
            distance_m=float(r.distance_m),
            takeovers=int(r.n_takeovers),
            takeovers_by_reason=dict(sorted(reasons[int(r.id)].items())),
            scenario_type=str(r.scenario_type),
            duration_s=duration[int(r.id)],
            expert_s=expert_s[int(r.id)],
            expert_distance_m=optional_float((r.scores or {}).get(EXPERT_DISTANCE_KEY)),
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------------------ failure log


def failure_name(phase: str, route_set: str, route_id: str, seed: int, checkpoint_sha256: str | None) -> str:
    sha = checkpoint_sha256[:SHA_NAME_CHARS] if checkpoint_sha256 else "none"
    return f"{phase}/{route_set}/{route_id}/seed={seed}/ckpt={sha}"


def record_failures(
    store: Store,
    run: str,
    iteration: int | None,
    route_set: str,
    checkpoint_sha256: str | None,
    failures: Sequence[EpisodeFailure],
) -> None:
    """One `training_rounds` row (kind "episode_failure", status "failed") per failed route x seed."""
    now = datetime.now(UTC)
    for failure in failures:
        store.record_training_round(
            TrainingRoundRecord(
                run=run,
                kind=FAILURE_KIND,
                name=failure_name(
                    failure.phase, route_set, failure.route_id, failure.seed, checkpoint_sha256
                ),
                iteration=iteration,
                input_checkpoint_sha256=checkpoint_sha256,
                status=FAILED,
                config={
                    "route_set": route_set,
                    "route_id": failure.route_id,
                    "seed": failure.seed,
                    "phase": failure.phase,
                    "error": failure.error,
                },
                started_at=now,
                finished_at=now,
            )
        )


def resolve_failures(
    store: Store,
    run: str,
    iteration: int | None,
    route_set: str,
    checkpoint_sha256: str | None,
    succeeded: Sequence[EpisodeJob],
) -> int:
    """Mark the failure rows of jobs that have now succeeded as "resolved"; returns how many."""
    names = {failure_name(j.phase, route_set, j.route.id, j.seed, checkpoint_sha256): j for j in succeeded}
    open_rows = {f.name: f for f in _failure_rows(store, run, iteration, FAILED)}
    resolved = 0
    for name in sorted(set(names) & set(open_rows)):
        row = open_rows[name]
        store.record_training_round(
            TrainingRoundRecord(
                run=run, kind=FAILURE_KIND, name=name, iteration=iteration,
                input_checkpoint_sha256=checkpoint_sha256, status=RESOLVED, config=row.config,
                finished_at=datetime.now(UTC),
            )
        )  # fmt: skip
        resolved += 1
    return resolved


@dataclass(frozen=True)
class _FailureRow:
    name: str
    config: dict[str, Any]


def _failure_rows(store: Store, run: str, iteration: int | None, status: str | None) -> list[_FailureRow]:
    stmt = select(TrainingRound.name, TrainingRound.config, TrainingRound.status).where(
        TrainingRound.kind == FAILURE_KIND,
        TrainingRound.natural_key.like(f"run={_like_escape(run)}|%", escape="\\"),
    )
    if iteration is None:
        stmt = stmt.where(TrainingRound.iteration_id.is_(None))
    else:
        stmt = stmt.join(Iteration, Iteration.id == TrainingRound.iteration_id).where(
            Iteration.number == iteration, Iteration.run == run
        )
    if status is not None:
        stmt = stmt.where(TrainingRound.status == status)
    with Session(store.engine) as session:
        return [
            _FailureRow(str(n), dict(c or {})) for n, c, _ in session.execute(stmt.order_by(TrainingRound.id))
        ]


def _like_escape(text: str) -> str:
    from urllib.parse import quote

    # Natural keys quote their parts (storage.records._key_part); LIKE needs %, _ and \ escaped on top.
    quoted = quote(text, safe="")
    return quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def episode_failures(store: Store, run: str, iteration: int | None) -> list[EpisodeFailure]:
    """The route x seed failures of a run's iteration that no later run resolved."""
    return [
        EpisodeFailure(
            str(c.get("route_id")), int(c.get("seed", 0)), str(c.get("phase")), str(c.get("error"))
        )
        for c in (row.config for row in _failure_rows(store, run, iteration, FAILED))
    ]


# ------------------------------------------------------------------------------------------ batches


@dataclass(frozen=True)
class BatchOutcome:
    """Which jobs of a batch are stored (episode ids) and which failed."""

    episode_ids: tuple[int, ...]
    failures: tuple[EpisodeFailure, ...]


def run_batch(
    batch: EpisodeBatch,
    jobs: Sequence[EpisodeJob],
    *,
    map_jobs: JobMapper | None = None,
    progress: bool = True,
    threads: int = 1,
    what: str = "episodes",
) -> BatchOutcome:
    """Drive the jobs not stored yet (natural keys), record failures, resolve earlier ones that now pass."""
    if batch.backend not in BACKENDS:
        raise EvaluationError(f"backend {batch.backend!r} is unknown; use one of {list(BACKENDS)}")
    if batch.backend != EMBEDDED:
        raise EvaluationError(
            "run_batch drives the embedded simulator; use run_carla_batch for backend carla"
        )
    sha = _checkpoint_sha(batch)
    phases = sorted({j.phase for j in jobs})
    done = {
        (e.phase, e.route_id, e.seed)
        for e in stored_episodes(batch.store, batch.run, batch.iteration, sha, batch.route_set, phases)
    }
    missing = [j for j in jobs if (j.phase, j.route.id, j.seed) not in done]
    setups = SetupCache(batch)
    mapper = map_jobs or (lambda w, fn, js: run_sequentially(w, fn, js, progress=progress))
    with torch_threads(threads):
        results = mapper(what, lambda job: run_episode_job(batch, setups, job), missing) if missing else []
    failures = [
        EpisodeFailure(job.route.id, job.seed, job.phase, f"{type(r).__name__}: {r}")
        for job, r in zip(missing, results, strict=True)
        if isinstance(r, BaseException)
    ]
    succeeded = [job for job, r in zip(missing, results, strict=True) if not isinstance(r, BaseException)]
    record_failures(batch.store, batch.run, batch.iteration, batch.route_set, sha, failures)
    resolve_failures(batch.store, batch.run, batch.iteration, batch.route_set, sha, succeeded)
    stored = stored_episodes(batch.store, batch.run, batch.iteration, sha, batch.route_set, phases)
    wanted = {(j.phase, j.route.id, j.seed) for j in jobs}
    ids = tuple(e.episode_id for e in stored if (e.phase, e.route_id, e.seed) in wanted)
    return BatchOutcome(ids, tuple(failures))


def _checkpoint_sha(batch: EpisodeBatch) -> str | None:
    """sha256 of the batch's checkpoint, recorded in the store (None for expert batches)."""
    if batch.checkpoint is None:
        return None
    from takeover.policy import file_sha256

    path = Path(batch.checkpoint)
    if not path.is_file():
        raise EvaluationError(f"checkpoint {path} does not exist; train one first or give the right path")
    sha = file_sha256(path)
    batch.store.record_checkpoint(CheckpointRecord(path=str(path), sha256=sha, kind="policy"))
    return sha


# ------------------------------------------------------------------------------------------ CARLA backend


@dataclass(frozen=True)
class CarlaRun:
    """How episodes run on real CARLA: one Bench2Drive leaderboard run per route on a server pool."""

    route_file: str  # the leaderboard route XML the evaluator reads
    overrides: tuple[str, ...] = ()  # dotlist over conf/carla.yaml (server.gpus=[0,1], ...)
    managed: bool = True  # start CARLA servers here (False: external servers, e.g. docker compose)
    out_dir: str = ""  # evaluator output; empty = leaderboard.out_dir of conf/carla.yaml


def single_route_file(spec: str) -> Path:
    """The one route XML of a route-set spec (a leaderboard run reads one file)."""
    files = route_files(spec)
    if len(files) != 1:
        raise EvaluationError(
            f"backend carla runs one route XML per leaderboard call; {spec} names {len(files)} files: "
            "use builtin:train / builtin:eval or a single XML"
        )
    return files[0]


def run_carla_batch(
    batch: EpisodeBatch, jobs: Sequence[EpisodeJob], carla: CarlaRun, *, what: str = "episodes"
) -> BatchOutcome:
    """The jobs as leaderboard runs (run_leaderboard_routes) on a CarlaServerPool, one server per GPU.

    Jobs are grouped by (mode, phase, seed): each group is one fan-out of its routes over the pool. A
    route that failed for good (SimulatorError after the pool's restarts) is recorded as failed.
    """
    from carla_bridge.carla_client import leaderboard
    from carla_bridge.carla_client.config import load_carla_config
    from carla_bridge.carla_client.server import CarlaServerPool, carla_root

    config = load_carla_config(list(carla.overrides))
    paths = leaderboard.LeaderboardPaths.resolve(config.leaderboard, carla_root(config.server))
    sha = _checkpoint_sha(batch)
    phases = sorted({j.phase for j in jobs})
    done = {
        (e.phase, e.route_id, e.seed)
        for e in stored_episodes(batch.store, batch.run, batch.iteration, sha, batch.route_set, phases, CARLA)
    }
    missing = [j for j in jobs if (j.phase, j.route.id, j.seed) not in done]
    groups: dict[tuple[EpisodeMode, str, int], list[EpisodeJob]] = {}
    for job in missing:
        groups.setdefault((job.mode, job.phase, job.seed), []).append(job)
    failures: list[EpisodeFailure] = []
    succeeded: list[EpisodeJob] = []
    if groups:
        out_root = (
            Path(carla.out_dir or config.leaderboard.out_dir) / batch.run / f"iteration-{batch.iteration}"
        )
        with CarlaServerPool(config.server, host=config.client.host, managed=carla.managed) as pool:
            for (mode, phase, seed), group in groups.items():
                agent = dataclasses.replace(
                    config.agent,
                    mode=mode.value,
                    policy=f"policy:{Path(batch.checkpoint).resolve()}" if batch.checkpoint else "",
                    run=batch.run,
                    iteration=-1 if batch.iteration is None else batch.iteration,
                    phase=phase,
                    route_set=batch.route_set,
                    backend=CARLA,
                    record=True,
                )
                results = leaderboard.run_leaderboard_routes(
                    carla.route_file, [j.route.id for j in group], pool, agent,
                    config=config.leaderboard, paths=paths, out_dir=out_root / f"{phase}-seed{seed}",
                    store=batch.store, seed=seed,
                )  # fmt: skip
                for job, result in zip(group, results, strict=True):
                    if isinstance(result, SimulatorError):
                        failures.append(
                            EpisodeFailure(job.route.id, seed, phase, f"{type(result).__name__}: {result}")
                        )
                    else:
                        succeeded.append(job)
    record_failures(batch.store, batch.run, batch.iteration, batch.route_set, sha, failures)
    resolve_failures(batch.store, batch.run, batch.iteration, batch.route_set, sha, succeeded)
    stored = stored_episodes(batch.store, batch.run, batch.iteration, sha, batch.route_set, phases, CARLA)
    wanted = {(j.phase, j.route.id, j.seed) for j in jobs}
    ids = tuple(e.episode_id for e in stored if (e.phase, e.route_id, e.seed) in wanted)
    return BatchOutcome(ids, tuple(failures))


# ------------------------------------------------------------------------------------------ evaluation


def mean(values: Sequence[float]) -> float | None:
    """(1/N) sum_i v_i, None for no values."""
    return sum(values) / len(values) if values else None


def disengagements_per_km(takeovers: int, distance_m: float) -> float | None:
    """takeovers / (distance_m / 1000); None when nothing was driven."""
    return takeovers * M_PER_KM / distance_m if distance_m > 0 else None


@dataclass(frozen=True)
class RouteSummary:
    """One route's scores averaged over its seeds (and its disengagements per km with takeovers)."""

    route_id: str
    scenario_type: str
    seeds: int
    driving_score: float
    route_completion: float
    infraction_penalty: float
    success_rate: float
    disengagements_per_km: float | None


@dataclass(frozen=True)
class EvalResult:
    """A checkpoint's closed-loop evaluation (module docstring for the formulas)."""

    run: str
    iteration: int | None
    checkpoint_path: str
    checkpoint_sha256: str
    route_set: str
    backend: str
    episodes: tuple[EpisodeScore, ...]  # without takeovers (leaderboard scores)
    takeover_episodes: tuple[EpisodeScore, ...]  # with takeovers (disengagements)
    failures: tuple[EpisodeFailure, ...] = ()

    @property
    def driving_score(self) -> float | None:
        return mean([e.driving_score for e in self.episodes])

    @property
    def route_completion(self) -> float | None:
        return mean([e.route_completion for e in self.episodes])

    @property
    def infraction_penalty(self) -> float | None:
        return mean([e.infraction_penalty for e in self.episodes])

    @property
    def success_rate(self) -> float | None:
        return mean([float(e.success) for e in self.episodes])

    @property
    def disengagements(self) -> int | None:
        return sum(e.takeovers for e in self.takeover_episodes) if self.takeover_episodes else None

    @property
    def takeover_distance_km(self) -> float:
        return sum(e.distance_m for e in self.takeover_episodes) / M_PER_KM

    @property
    def disengagements_per_km(self) -> float | None:
        if not self.takeover_episodes:
            return None
        return disengagements_per_km(
            sum(e.takeovers for e in self.takeover_episodes),
            sum(e.distance_m for e in self.takeover_episodes),
        )

    @property
    def policy_distance_km(self) -> float | None:
        """Kilometres the policy drove with takeovers enabled (the expert's stretches left out); None
        when an episode was stored before the expert's distance was recorded."""
        episodes = self.takeover_episodes
        if not episodes or any(e.expert_distance_m is None for e in episodes):
            return None
        return sum(e.distance_m - (e.expert_distance_m or 0.0) for e in episodes) / M_PER_KM

    @property
    def disengagements_per_policy_km(self) -> float | None:
        """sum_i takeovers_i / sum_i (distance_i - expert_distance_i): the rate per kilometre the policy
        drove itself, which longer takeovers cannot lower (the industry's miles per intervention, inverted)."""
        km = self.policy_distance_km
        if km is None:
            return None
        return disengagements_per_km(sum(e.takeovers for e in self.takeover_episodes), km * M_PER_KM)

    @property
    def expert_share(self) -> float | None:
        """sum_i expert_s_i / sum_i duration_s_i: the share of the driving (with takeovers) the expert did."""
        total_s = sum(e.duration_s for e in self.takeover_episodes)
        return sum(e.expert_s for e in self.takeover_episodes) / total_s if total_s > 0 else None

    @property
    def takeover_free_share(self) -> float | None:
        """The share of episodes with takeovers enabled that the policy drove without one."""
        return mean([float(e.takeovers == 0) for e in self.takeover_episodes])

    @property
    def takeovers_by_reason(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for e in self.takeover_episodes:
            total.update(e.takeovers_by_reason)
        return dict(sorted(total.items()))

    def per_route(self) -> list[RouteSummary]:
        order = list(dict.fromkeys(e.route_id for e in (*self.episodes, *self.takeover_episodes)))
        rows = []
        for route_id in order:
            plain = [e for e in self.episodes if e.route_id == route_id]
            taken = [e for e in self.takeover_episodes if e.route_id == route_id]
            scenario = (plain or taken)[0].scenario_type
            rows.append(
                RouteSummary(
                    route_id=route_id,
                    scenario_type=scenario,
                    seeds=len(plain),
                    driving_score=mean([e.driving_score for e in plain]) or 0.0,
                    route_completion=mean([e.route_completion for e in plain]) or 0.0,
                    infraction_penalty=mean([e.infraction_penalty for e in plain]) or 0.0,
                    success_rate=mean([float(e.success) for e in plain]) or 0.0,
                    disengagements_per_km=disengagements_per_km(
                        sum(e.takeovers for e in taken), sum(e.distance_m for e in taken)
                    )
                    if taken
                    else None,
                )
            )
        return rows

    def metrics(self) -> dict[str, float]:
        """The headline numbers as floats (absent when undefined), e.g. for a step-log row."""
        values = {
            "driving_score": self.driving_score,
            "route_completion": self.route_completion,
            "infraction_penalty": self.infraction_penalty,
            "success_rate": self.success_rate,
            "disengagements": self.disengagements,
            "disengagements_per_km": self.disengagements_per_km,
            "takeover_distance_km": self.takeover_distance_km if self.takeover_episodes else None,
            "policy_distance_km": self.policy_distance_km,
            "disengagements_per_policy_km": self.disengagements_per_policy_km,
            "expert_share": self.expert_share,
            "takeover_free_share": self.takeover_free_share,
            "episodes": len(self.episodes),
            "takeover_episodes": len(self.takeover_episodes),
            "failed_episodes": len(self.failures),
        }
        return {k: float(v) for k, v in values.items() if v is not None}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvalResult:
        values = dict(data)
        values["episodes"] = tuple(EpisodeScore(**e) for e in values["episodes"])
        values["takeover_episodes"] = tuple(EpisodeScore(**e) for e in values["takeover_episodes"])
        values["failures"] = tuple(EpisodeFailure(**f) for f in values.get("failures", ()))
        return cls(**values)


def evaluate_checkpoint(
    checkpoint: str | Path,
    routes: Sequence[Route],
    seeds: Sequence[int],
    store: Store,
    run: str,
    iteration: int | None,
    *,
    config: EvalConfig | None = None,
    route_set: str | None = None,
    maps_dirs: Sequence[str] = (),
    backend: str = EMBEDDED,
    carla: CarlaRun | None = None,
    map_jobs: JobMapper | None = None,
    progress: bool = True,
) -> EvalResult:
    """Drive `checkpoint` on every route x seed without and (config.with_takeovers) with takeovers.

    `route_set` is the spec the routes came from (default config.routes); episodes are stored under
    its name. Episodes stored already are read back, not driven again. backend "carla" runs one
    leaderboard run per route through `carla` (CarlaRun) instead of the embedded simulator.
    """
    config = config or EvalConfig()
    validate_eval_config(config)
    if not routes:
        raise EvaluationError("no evaluation routes: check eval.routes / eval.route_ids")
    if not seeds:
        raise EvaluationError("no evaluation seeds: pass --seeds 0 [1 ...]")
    checkpoint = str(checkpoint)
    if not Path(checkpoint).is_file():
        raise EvaluationError(
            f"checkpoint {checkpoint} does not exist; train one first or give the right path"
        )
    name = route_set_name(route_set or config.routes)
    batch = EpisodeBatch(
        store, run, iteration, name, checkpoint, tuple(maps_dirs),
        {k: list(v) for k, v in config.overrides.items()}, backend,
    )  # fmt: skip
    jobs = [EpisodeJob(r, int(s), EpisodeMode.POLICY, config.phase) for r in routes for s in seeds]
    if config.with_takeovers:
        jobs += [
            EpisodeJob(r, int(s), EpisodeMode.TAKEOVER, config.takeover_phase) for r in routes for s in seeds
        ]
    if backend == CARLA:
        if carla is None:
            raise EvaluationError(
                "backend carla needs a CarlaRun (the route XML and conf/carla.yaml overrides)"
            )
        outcome = run_carla_batch(batch, jobs, carla, what="evaluate")
    else:
        outcome = run_batch(
            batch, jobs, map_jobs=map_jobs, progress=progress, threads=config.torch_threads, what="evaluate"
        )
    sha = _checkpoint_sha(batch)
    assert sha is not None
    phases = [config.phase, config.takeover_phase]
    wanted = {(j.phase, j.route.id, j.seed) for j in jobs}
    stored = [
        e
        for e in stored_episodes(store, run, iteration, sha, name, phases, backend)
        if (e.phase, e.route_id, e.seed) in wanted
    ]
    if not stored:
        raise EvaluationError(
            f"every evaluation episode of {checkpoint} failed; first error: "
            f"{outcome.failures[0].error if outcome.failures else 'none recorded'}"
        )
    return EvalResult(
        run=run,
        iteration=iteration,
        checkpoint_path=checkpoint,
        checkpoint_sha256=sha,
        route_set=name,
        backend=backend,
        episodes=tuple(e for e in stored if e.phase == config.phase),
        takeover_episodes=tuple(e for e in stored if e.phase == config.takeover_phase),
        failures=outcome.failures,
    )


# ------------------------------------------------------------------------------------------ promotion


def stored_evaluation(
    store: Store,
    run: str,
    iteration: int | None,
    route_set: str,
    phase_pairs: Sequence[tuple[str, str]],
    checkpoint: str | None = None,
    backend: str = EMBEDDED,
) -> EvalResult:
    """A checkpoint's stored evaluation in `run`/`iteration`, read back from the database.

    `phase_pairs` lists the (leaderboard, takeover) phases an evaluation may be stored under, in order
    (eval / eval_takeover, then e.g. a selected iteration's eval_dagger / eval_takeover_dagger); the
    first pair with leaderboard episodes of the checkpoint is read. `checkpoint` picks one of several
    checkpoints by file name stem (dagger-3) or sha256 prefix; with one checkpoint it may be left out.
    An EvaluationError names what was found when nothing or more than one checkpoint matches."""
    phases = [phase for pair in phase_pairs for phase in pair]
    stmt = (
        select(Checkpoint.sha256, Checkpoint.path)
        .join(Episode, Episode.checkpoint_id == Checkpoint.id)
        .join(RouteRow, RouteRow.id == Episode.route_pk)
        .where(Episode.run == run, Episode.phase.in_(phases), RouteRow.route_set == route_set)
        .distinct()
    )
    if iteration is None:
        stmt = stmt.where(Episode.iteration_id.is_(None))
    else:
        stmt = stmt.join(Iteration, Iteration.id == Episode.iteration_id).where(Iteration.number == iteration)
    with Session(store.engine) as session:
        found = sorted((str(sha), str(path)) for sha, path in session.execute(stmt).all())
    where = f"run {run!r}" + (f" iteration {iteration}" if iteration is not None else "") + f" on {route_set}"
    if not found:
        raise EvaluationError(
            f"no evaluation stored for {where} (phases {phases}); `takeover evaluate --run {run}` stores one"
        )
    matches = [
        (sha, path) for sha, path in found
        if checkpoint is None or Path(path).stem == checkpoint or sha.startswith(checkpoint)
    ]  # fmt: skip
    if len(matches) != 1:
        names = ", ".join(f"{Path(path).stem} ({sha[:10]})" for sha, path in found)
        problem = "several checkpoints are" if matches else f"no checkpoint {checkpoint!r} is"
        raise EvaluationError(
            f"{problem} evaluated in {where}: {names}; name one after '@' (RUN:ITERATION@NAME)"
        )
    sha, path = matches[0]
    for phase, takeover_phase in phase_pairs:
        episodes = stored_episodes(store, run, iteration, sha, route_set, [phase], backend)
        if episodes:
            takeover_episodes = stored_episodes(
                store, run, iteration, sha, route_set, [takeover_phase], backend
            )
            return EvalResult(
                run, iteration, path, sha, route_set, backend, tuple(episodes), tuple(takeover_episodes)
            )
    raise EvaluationError(f"{Path(path).stem} in {where} has takeover episodes only: no leaderboard scores")


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str


@dataclass(frozen=True)
class NecessaryRates:
    """Necessary disengagements/km (takeover/counterfactual.py) of a candidate and of the incumbent;
    None where an evaluation drove no kilometre with takeovers. `ratio`: candidate over incumbent, pair
    by pair, with its paired interval (None when not computed or no (route, seed) pair defines it)."""

    candidate: float | None
    incumbent: float | None
    ratio: Interval | None = None

    @property
    def rise(self) -> float | None:
        """N_C / N_I - 1 (infinite when only the candidate has any); None when either is unmeasured."""
        c, i = self.candidate, self.incumbent
        if c is None or i is None:
            return None
        if i > 0:
            return c / i - 1.0
        return math.inf if c > 0 else 0.0


def promotion_decision(
    candidate: EvalResult,
    incumbent: EvalResult | None,
    config: PromotionConfig,
    necessary: NecessaryRates | None = None,
) -> PromotionDecision:
    """The rule of the module docstring, with the reason in words: `score_decision`, then, with
    `max_necessary_rise` set, the guard on the necessary-disengagement rates `necessary`."""
    decision = score_decision(candidate, incumbent, config)
    limit = config.max_necessary_rise
    if not decision.promoted or incumbent is None or limit is None:
        return decision
    rise = necessary.rise if necessary is not None else None
    if necessary is None or rise is None:
        return PromotionDecision(
            False,
            f"{decision.reason}, but necessary disengagements/km were not measured for both (promotion."
            "max_necessary_rise needs the loop's counterfactuals=true)",
        )
    rates = (
        f"necessary disengagements/km {necessary.candidate:.2f} vs the incumbent's {necessary.incumbent:.2f}"
    )
    if config.necessary_confidence > 0:
        return _paired_necessary_decision(
            decision, necessary.ratio, rates, limit, config.necessary_confidence
        )
    if rise > limit:
        return PromotionDecision(False, f"{decision.reason}, but {rates} (a rise above {100 * limit:g} %)")
    return PromotionDecision(True, f"{decision.reason}; {rates}")


def _paired_necessary_decision(
    decision: PromotionDecision, ratio: Interval | None, rates: str, limit: float, confidence: float
) -> PromotionDecision:
    """The guard's paired rule: refuse when the interval of N_C / N_I lies wholly above 1 + limit."""
    if ratio is None or abs(ratio.confidence - confidence) > 1e-9:
        have = "none" if ratio is None else f"one at {100 * ratio.confidence:g} %"
        return PromotionDecision(
            False,
            f"{decision.reason}, but {rates} and no paired {100 * confidence:g} % interval of their ratio "
            f"({have}; the counterfactual step computes it with promotion.necessary_confidence set)",
        )
    shown = f"the paired {100 * confidence:g} % interval of their ratio, x {ratio.estimate:.2f} {ratio.bounds('.2f')}"
    if ratio.low > 1.0 + limit:
        return PromotionDecision(
            False, f"{decision.reason}, but {rates}: {shown}, lies above {1.0 + limit:g}"
        )
    return PromotionDecision(True, f"{decision.reason}; {rates}: {shown}, does not lie above {1.0 + limit:g}")


def score_decision(
    candidate: EvalResult, incumbent: EvalResult | None, config: PromotionConfig
) -> PromotionDecision:
    """The promotion rule on the evaluations alone (scores, disengagements/km, the paired gate)."""
    validate_promotion_config(config)
    ds_c = candidate.driving_score
    if ds_c is None:
        return PromotionDecision(False, "the candidate has no evaluation episodes")
    if incumbent is None:
        return PromotionDecision(True, f"no incumbent yet: the candidate (DS {ds_c:.1f}) becomes it")
    ds_i = incumbent.driving_score or 0.0
    if len(candidate.failures) > len(incumbent.failures):
        return PromotionDecision(
            False,
            f"the candidate failed {len(candidate.failures)} episode(s), the incumbent {len(incumbent.failures)}",
        )
    gain = ds_c - ds_i
    if gain >= config.min_ds_gain:
        higher = f"DS {ds_c:.1f} >= incumbent {ds_i:.1f} + {config.min_ds_gain:g}"
        rise, limit = _disengagement_rise(candidate, incumbent), config.max_disengagement_rise
        if rise is not None and limit is not None and rise > limit:
            return PromotionDecision(
                False,
                f"{higher}, but disengagements/km rise {100 * rise:.0f} % (more than {100 * limit:g} %)",
            )
        paired = _paired(candidate, incumbent, config)
        if paired is None:
            return PromotionDecision(True, higher)
        change = paired.ds_change_pct
        held = change is not None and change.low > 0.0
        shown = f"{change.bounds('+.1f')} %" if change else ""
        return PromotionDecision(held, higher + _paired_clause(change, "DS change", shown, held, "above 0"))
    if abs(gain) <= config.ds_tie_tolerance:
        dpk_c, dpk_i = candidate.disengagements_per_km, incumbent.disengagements_per_km
        if dpk_c is None or dpk_i is None:
            return PromotionDecision(
                False, f"DS {ds_c:.1f} ties {ds_i:.1f} and disengagements were not measured for both"
            )
        limit = (1.0 - config.min_disengagement_drop) * dpk_i
        if dpk_c < limit:
            fewer = (
                f"DS {ds_c:.1f} ties {ds_i:.1f} (within {config.ds_tie_tolerance:g}) and disengagements/km "
                f"{dpk_c:.2f} < {limit:.2f}"
            )
            paired = _paired(candidate, incumbent, config)
            if paired is None:
                return PromotionDecision(True, fewer)
            ratio = paired.dpk_ratio
            held = ratio is not None and ratio.high < 1.0
            shown = ratio.bounds(".2f") if ratio else ""
            return PromotionDecision(held, fewer + _paired_clause(ratio, "DPK ratio", shown, held, "below 1"))
        return PromotionDecision(
            False, f"DS {ds_c:.1f} ties {ds_i:.1f} but disengagements/km {dpk_c:.2f} is not below {limit:.2f}"
        )
    if gain < 0:
        return PromotionDecision(False, f"DS {ds_c:.1f} is below the incumbent's {ds_i:.1f}")
    return PromotionDecision(
        False, f"DS {ds_c:.1f} is above {ds_i:.1f} by less than the required {config.min_ds_gain:g}"
    )


def _disengagement_rise(candidate: EvalResult, incumbent: EvalResult) -> float | None:
    """DPK_C / DPK_I - 1, or None when either is unmeasured or the incumbent had none."""
    dpk_c, dpk_i = candidate.disengagements_per_km, incumbent.disengagements_per_km
    if dpk_c is None or dpk_i is None or dpk_i <= 0:
        return None
    return dpk_c / dpk_i - 1.0


def _paired(candidate: EvalResult, incumbent: EvalResult, config: PromotionConfig) -> PairedComparison | None:
    """The candidate over the incumbent pair by pair, at the promotion's confidence (None: gate off)."""
    if config.paired_confidence <= 0.0:
        return None
    settings = load_paired_config([f"confidence={config.paired_confidence}"])
    return compare_evaluations(incumbent, candidate, settings)


def _paired_clause(interval: Interval | None, name: str, shown: str, held: bool, side: str) -> str:
    """The promotion reason's tail on the paired gate, e.g. ', but the paired 80 % interval of the DS
    change, [+0.0, +200.0] %, is not above 0' (`shown`: the interval as text)."""
    if interval is None:
        return f", but no shared (route, seed) episode gives a paired {name}"
    verdict, where = ("and", side) if held else ("but", f"not {side}")
    return (
        f", {verdict} the paired {100 * interval.confidence:g} % interval of the {name}, {shown}, is {where}"
    )


def should_promote(
    candidate: EvalResult,
    incumbent: EvalResult | None,
    config: PromotionConfig,
    necessary: NecessaryRates | None = None,
) -> bool:
    """True when `candidate` should replace `incumbent` (module docstring); no incumbent: True."""
    return promotion_decision(candidate, incumbent, config, necessary).promoted


__all__ = [
    "BatchOutcome",
    "CarlaRun",
    "EpisodeBatch",
    "EpisodeFailure",
    "EpisodeJob",
    "EpisodeScore",
    "EvalConfig",
    "EvalResult",
    "EvaluationError",
    "JobMapper",
    "NecessaryRates",
    "PromotionConfig",
    "PromotionDecision",
    "RouteSummary",
    "disengagements_per_km",
    "episode_failures",
    "evaluate_checkpoint",
    "promotion_decision",
    "record_failures",
    "resolve_failures",
    "run_batch",
    "run_carla_batch",
    "run_episode_job",
    "run_sequentially",
    "score_decision",
    "should_promote",
    "single_route_file",
    "stored_episodes",
    "stored_evaluation",
]
