"""One post-optimization iteration as resumable steps, and the loop over iterations (`takeover iterate`).

    iteration 0 (bootstrap)  collect_demos -> bc -> evaluate [-> counterfactual] -> promote     (policy v0)
    iteration k >= 1         collect_takeovers -> dagger -> dpo [-> evaluate_dagger] -> evaluate
                             [-> counterfactual] -> promote

collect_demos: the expert drives the training routes (phase "expert"); bc: behaviour cloning (v0);
collect_takeovers: the incumbent drives the training routes with the shadow expert taking over (phase
"rollout", iteration k); dagger: fine-tune the incumbent on the aggregate of demonstrations and every
takeover so far; dpo: prefer the expert's plans over the policy's, from the DAgger checkpoint (skipped
in the DAgger-only ablation, `use_dpo: false`); evaluate: the candidate on the held-out routes
(takeover.evaluate); promote: the candidate becomes the incumbent only if it beats it
(takeover.evaluate.should_promote); the iteration row then records the promoted checkpoint.

With `select_candidate: true`, evaluate_dagger also evaluates DAgger's checkpoint (under the phases
eval_dagger / eval_takeover_dagger, so per-phase views never mix two checkpoints). The candidate is
then the DPO checkpoint unless DAgger's beats it by the promotion rule itself; DPO can hurt in a
given round (docs/results/issue6_experiments.md, session 14), and this keeps such a round from
costing the iteration. Both checkpoints are judged on the held-out routes, like every promotion:
the selection is one more comparison on the same routes, and the before/after numbers carry that
(small) selection bias.

With `counterfactuals: true`, the counterfactual step replays every takeover of the candidate's
evaluation (and of the incumbent's, when its verdicts are not stored yet) with that takeover refused
(takeover/counterfactual.py), and records the necessary disengagements per km of both. The iteration
table shows them, and `promotion.max_necessary_rise` refuses a candidate whose rate rises more than
that over the incumbent's: a policy that gains route progress and crashes more when left alone is
not promoted. The replays cost about a third of an evaluation.

Every finished step is logged in the database as a `training_rounds` row of kind "step" (name = the
step, status completed or skipped, metrics, outputs in `config`, input and output checkpoints); a
failed attempt is a row of kind "step_failure" with the error. Running an iteration again skips its
completed and skipped steps and re-reads their outputs from those rows, so an iteration that crashed
half-way resumes at the step that did not finish; inside a collection or evaluation step, episodes
already stored are not driven again either.

`base_run` starts a run from another run's v0: its demonstrations (DAgger's base data), its v0
checkpoint and v0's evaluation are reused, so the two arms of the DPO ablation share one v0.
Steps run through `LoopHooks`: plain calls and a sequential job mapper by default; the Prefect flows
pass hooks that run each step as a task and fan episodes out as tasks with retries.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from carla_bridge.config import CONF_DIR, load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.route_sets import load_route_set
from carla_bridge.units import M_PER_KM
from storage.models import Checkpoint, Iteration, TrainingRound
from storage.records import CheckpointRecord, TrainingRoundRecord
from takeover.bc import train_bc
from takeover.collect import route_set_name
from takeover.counterfactual import (
    CounterfactualConfig,
    Counterfactuals,
    analyse_evaluation,
    judge_episodes,
    load_counterfactual_config,
    necessary_ratio,
    tally_verdicts,
)
from takeover.dagger import dagger_round
from takeover.datasets import DatasetError
from takeover.dpo import dpo_round
from takeover.episode import MODE_PHASE, EpisodeMode
from takeover.evaluate import (
    CARLA,
    EMBEDDED,
    CarlaRun,
    EpisodeBatch,
    EpisodeFailure,
    EpisodeJob,
    EpisodeScore,
    EvalConfig,
    EvalResult,
    JobMapper,
    NecessaryRates,
    PromotionConfig,
    disengagements_per_km,
    evaluate_checkpoint,
    mean,
    promotion_decision,
    run_batch,
    run_carla_batch,
    score_decision,
    single_route_file,
    stored_episodes,
    stored_evaluation,
    torch_threads,
    validate_eval_config,
    validate_promotion_config,
)
from takeover.paired import Interval, load_paired_config
from takeover.text import fmt
from takeover.training import TrainResult, config_dict

if TYPE_CHECKING:
    from storage.store import Store
    from takeover.commands.train import TrainConfig

log = logging.getLogger(__name__)

CONFIG_NAME = "loop"
RECIPES_DIR = CONF_DIR / "recipes"  # named recipes: partial `iterate` sections (`--recipe NAME`)
STEP_KIND = "step"
STEP_FAILURE_KIND = "step_failure"
COMPLETED, SKIPPED, FAILED = "completed", "skipped", "failed"
DONE_STATUSES = (COMPLETED, SKIPPED)
T = TypeVar("T")


class LoopError(TakeoverError):
    """An iteration cannot run: missing v0, an earlier iteration unfinished, a config that changed mid-run."""


class Step(StrEnum):
    COLLECT_DEMOS = "collect_demos"
    BC = "bc"
    COLLECT_TAKEOVERS = "collect_takeovers"
    COLLECT_COUNTERFACTUAL = "collect_counterfactual"
    DAGGER = "dagger"
    DPO = "dpo"
    EVALUATE_DAGGER = "evaluate_dagger"
    EVALUATE = "evaluate"
    COUNTERFACTUAL = "counterfactual"
    PROMOTE = "promote"


STEP_NAMES = frozenset(s.value for s in Step)
BOOTSTRAP_STEPS = (Step.COLLECT_DEMOS, Step.BC, Step.EVALUATE, Step.COUNTERFACTUAL, Step.PROMOTE)
ITERATION_STEPS = (
    Step.COLLECT_TAKEOVERS, Step.COLLECT_COUNTERFACTUAL, Step.DAGGER, Step.DPO, Step.EVALUATE_DAGGER,
    Step.EVALUATE, Step.COUNTERFACTUAL, Step.PROMOTE,
)  # fmt: skip
EVAL_STEPS = (Step.EVALUATE, Step.EVALUATE_DAGGER)
# evaluate_dagger stores its episodes under the evaluation phases + this suffix (eval_dagger, ...)
DAGGER_PHASE_SUFFIX = "_dagger"


# ------------------------------------------------------------------------------------------ configs


@dataclass
class IterationConfig:
    """One run of the loop (section `iterate` of conf/loop.yaml; `demo.loop` holds the demo's sizes)."""

    train_routes: str = "builtin:train"  # route set the policy is trained on (never the eval set)
    train_route_ids: list[str] = field(default_factory=list)  # only these ids; empty = all
    demo_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # expert demonstrations per route
    collect_seeds: list[int] = field(default_factory=lambda: [0])  # takeover rollouts per route
    # Iteration k rolls out with seeds collect_seeds + (k - 1) x this: fresh traffic every iteration
    # (with the same seeds an incumbent kept after a failed promotion would replay identical episodes).
    collect_seed_stride: int = 1000
    use_dpo: bool = True  # false: the DAgger-only ablation
    # Also evaluate DAgger's checkpoint and take it as the candidate when it beats DAgger + DPO's
    # (the promotion rule); twice the evaluation time per iteration.
    select_candidate: bool = False
    base_run: str = ""  # reuse this run's demonstrations, v0 and v0's evaluation; "" = bootstrap here
    backend: str = EMBEDDED  # embedded | carla (leaderboard runs on a CARLA server pool)
    maps: list[str] = field(default_factory=list)  # folders searched first for <Town>.xodr
    # Intra-op torch threads while driving; 1 avoids oversubscribing shared CPUs; 0 = torch's default.
    torch_threads: int = 1
    train_torch_threads: int = 1  # ... while training; 0 = torch's default
    # Per-section dotlists over conf/episode|monitor|sim|expert|policy.yaml for the collection episodes.
    collect_overrides: dict[str, list[str]] = field(default_factory=dict)
    policy_overrides: list[str] = field(default_factory=list)  # conf/policy.yaml dotlist: v0's network
    # conf/train.yaml dotlist, e.g. dagger.loop.epochs=3
    train_overrides: list[str] = field(default_factory=list)
    carla_overrides: list[str] = field(default_factory=list)  # conf/carla.yaml dotlist (backend carla)
    carla_managed: bool = True  # start the CARLA servers here; false = external servers
    # Replay each takeover of the candidate's and the incumbent's evaluations with it refused: necessary
    # disengagements/km (takeover/counterfactual.py) beside the monitor's; needed by
    # promotion.max_necessary_rise; embedded backend only; about a third of an evaluation's time.
    counterfactuals: bool = False
    counterfactual_overrides: list[str] = field(default_factory=list)  # conf/counterfactual.yaml dotlist
    # Replay each takeover of the iteration's collection the same way, before training: the verdicts that
    # dagger.data.verdict_weights and dpo.pairs.verdict_weights weigh by (takeover/verdict_weights.py);
    # embedded backend only; about two thirds of the collection's time again.
    collect_counterfactuals: bool = False
    eval: EvalConfig = field(default_factory=EvalConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)


@dataclass
class DemoConfig:
    """`takeover demo`: the whole story at sizes that fit a 2-core CPU in about 15 minutes."""

    run: str = "demo"
    iterations: int = 2  # post-optimization iterations after v0
    runs_dir: str = "runs"  # everything under <runs_dir>/<run>/: database, clips, checkpoints, plot
    plot_name: str = "iterations.png"
    loop: IterationConfig = field(default_factory=IterationConfig)


@dataclass
class LoopFileConfig:
    """Schema of conf/loop.yaml."""

    iterate: IterationConfig = field(default_factory=IterationConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)


def recipe_names() -> list[str]:
    """The recipes shipped under conf/recipes/, by name."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(recipe: str) -> Path:
    """A recipe's YAML file: `recipe` as a path, else conf/recipes/<recipe>.yaml."""
    for path in (Path(recipe), RECIPES_DIR / f"{recipe}.yaml"):
        if path.is_file():
            return path
    raise LoopError(
        f"recipe {recipe!r}: no such file and no conf/recipes/{recipe}.yaml; name one of "
        f"{recipe_names()} or give the path of a YAML file with keys of conf/loop.yaml's iterate section"
    )


def load_loop_file(overrides: list[str] | None = None, recipe: str | None = None) -> LoopFileConfig:
    """Schema defaults <- conf/loop.yaml <- the recipe (a partial `iterate` section, see
    `recipe_path`) <- dotlist overrides ("iterate.use_dpo=false")."""
    where = "conf/loop.yaml" if recipe is None else f"conf/loop.yaml and recipe {recipe!r}"
    try:
        layers = [] if recipe is None else [{"iterate": OmegaConf.load(recipe_path(recipe))}]
        config = load_config(LoopFileConfig, CONFIG_NAME, overrides, layers)
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise LoopError(f"loop config: {detail}; see {where} for the keys") from None
    validate_iteration_config(config.iterate, "iterate")
    validate_iteration_config(config.demo.loop, "demo.loop")
    if config.demo.iterations < 0:
        raise LoopError(f"demo.iterations={config.demo.iterations} must be >= 0")
    return config


def load_iteration_config(overrides: list[str] | None = None, recipe: str | None = None) -> IterationConfig:
    """The `iterate` section, with `recipe` (name or path) merged in, then dotlist overrides given
    relative to it ("use_dpo=false")."""
    return load_loop_file([f"iterate.{o}" for o in overrides or []], recipe).iterate


def validate_iteration_config(config: IterationConfig, where: str = "iterate") -> None:
    if not config.train_routes:
        raise LoopError(f"{where}.train_routes is empty: name a route set (builtin:train) or a route XML")
    if config.collect_seed_stride < 0:
        raise LoopError(
            f"{where}.collect_seed_stride={config.collect_seed_stride} must be >= 0 (0 = same seeds)"
        )
    if not config.demo_seeds or not config.collect_seeds:
        raise LoopError(f"{where}.demo_seeds and {where}.collect_seeds need at least one seed each")
    if config.train_routes == config.eval.routes and not (
        config.train_route_ids
        and config.eval.route_ids
        and not set(config.train_route_ids) & set(config.eval.route_ids)
    ):
        raise LoopError(
            f"{where}: the training and evaluation routes are the same set ({config.train_routes}); evaluate "
            "on held-out routes (eval.routes: builtin:eval) or give disjoint train_route_ids / eval.route_ids"
        )
    if config.backend not in (EMBEDDED, CARLA):
        raise LoopError(f"{where}.backend={config.backend!r}; use embedded or carla")
    if config.torch_threads < 0 or config.train_torch_threads < 0:
        raise LoopError(f"{where}.torch_threads and {where}.train_torch_threads must be >= 0 (0 = torch's)")
    validate_eval_config(config.eval, f"{where}.eval")
    validate_promotion_config(config.promotion, f"{where}.promotion")
    if config.promotion.max_necessary_rise is not None and not config.counterfactuals:
        raise LoopError(
            f"{where}.promotion.max_necessary_rise needs the necessary disengagements it compares: set "
            f"{where}.counterfactuals=true, or max_necessary_rise=null"
        )
    for flag in ("collect_counterfactuals", "counterfactuals"):
        if getattr(config, flag) and config.backend != EMBEDDED:
            raise LoopError(
                f"{where}.{flag} needs the embedded backend (a CARLA server cannot replay an episode tick "
                f"for tick); set {flag}=false for backend carla"
            )
    if config.counterfactuals and not config.eval.with_takeovers:
        raise LoopError(
            f"{where}.counterfactuals replays the evaluation's takeovers: set {where}.eval.with_takeovers=true"
        )
    if config.counterfactuals or config.collect_counterfactuals:
        _counterfactual_config(config, where)


def _counterfactual_config(config: IterationConfig, where: str = "iterate") -> CounterfactualConfig:
    try:
        return load_counterfactual_config(config.counterfactual_overrides)
    except (TakeoverError, OmegaConfBaseException) as exc:
        raise LoopError(f"{where}.counterfactual_overrides: {' '.join(str(exc).split())}") from None


def _train_config(config: IterationConfig) -> TrainConfig:
    # TrainConfig lives with its command (takeover.commands.train); the lead may move it to the library.
    from takeover.commands.train import load_train_config

    train = load_train_config(list(config.train_overrides))
    if config.base_run and not train.dagger.data.demo_run:
        train.dagger.data.demo_run = config.base_run
    weighted = [
        name for name, weights in (("dagger.data", train.dagger.data.verdict_weights),
                                   ("dpo.pairs", train.dpo.pairs.verdict_weights)) if weights
    ]  # fmt: skip
    if weighted and not config.collect_counterfactuals:
        raise LoopError(
            f"{' and '.join(weighted)}.verdict_weights weigh the collection's takeovers by their counterfactual "
            "verdicts: set collect_counterfactuals=true, or drop the verdict_weights"
        )
    # The verdicts are read under the settings the loop replays with.
    train.dagger.data.verdict_overrides = list(config.counterfactual_overrides)
    train.dpo.pairs.verdict_overrides = list(config.counterfactual_overrides)
    return train


def _comparable(config: IterationConfig) -> dict[str, Any]:
    """What must not change within a run: the ablation switch and the evaluation protocol."""
    ev = config.eval
    return {
        "use_dpo": config.use_dpo,
        "eval": {
            "routes": ev.routes,
            "route_ids": list(ev.route_ids),
            "seeds": list(ev.seeds),
            "with_takeovers": ev.with_takeovers,
        },
    }


# ------------------------------------------------------------------------------------------ step log


@dataclass(frozen=True)
class CheckpointRef:
    path: str
    sha256: str

    @classmethod
    def of(cls, result: TrainResult) -> CheckpointRef:
        return cls(str(result.checkpoint_path), result.sha256)


@dataclass(frozen=True)
class StepOutcome:
    """What a step produced: stored as its step-log row."""

    status: str  # completed | skipped
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # JSON-able
    checkpoint: CheckpointRef | None = None


@dataclass(frozen=True)
class StepRecord:
    step: Step
    status: str
    metrics: dict[str, float]
    outputs: dict[str, Any]
    checkpoint: CheckpointRef | None  # what the step produced (for promote: the incumbent after it)
    input_checkpoint: CheckpointRef | None = None  # what it started from


class StepLog:
    """The steps of a run's iterations, as `training_rounds` rows of kind "step" (module docstring)."""

    def __init__(self, store: Store, run: str) -> None:
        self.store = store
        self.run = run

    def get(self, iteration: int, step: Step) -> StepRecord | None:
        """The step's row when it completed or was skipped, else None (never run, running or failed)."""
        return self.records(iteration).get(step)

    def records(self, iteration: int) -> dict[Step, StepRecord]:
        """Every done (completed / skipped) step of an iteration."""
        given = aliased(Checkpoint)
        stmt = (
            select(
                TrainingRound.name,
                TrainingRound.status,
                TrainingRound.metrics,
                TrainingRound.config,
                Checkpoint.path,
                Checkpoint.sha256,
                given.path,
                given.sha256,
            )
            .join(Iteration, Iteration.id == TrainingRound.iteration_id)
            .outerjoin(Checkpoint, Checkpoint.id == TrainingRound.output_checkpoint_id)
            .outerjoin(given, given.id == TrainingRound.input_checkpoint_id)
            .where(
                Iteration.run == self.run,
                Iteration.number == iteration,
                TrainingRound.kind == STEP_KIND,
                TrainingRound.status.in_(DONE_STATUSES),
            )
        )
        with Session(self.store.engine) as session:
            rows = session.execute(stmt).all()
        return {
            Step(name): StepRecord(
                Step(name),
                str(status),
                {k: float(v) for k, v in (metrics or {}).items()},
                dict((config or {}).get("outputs", {})),
                CheckpointRef(str(path), str(sha)) if sha is not None else None,
                CheckpointRef(str(in_path), str(in_sha)) if in_sha is not None else None,
            )
            for name, status, metrics, config, path, sha, in_path, in_sha in rows
            if name in STEP_NAMES
        }

    def _write(
        self,
        iteration: int,
        kind: str,
        name: str,
        status: str,
        *,
        input_sha: str | None,
        config: dict[str, Any],
        outcome: StepOutcome | None,
        started_at: datetime,
    ) -> None:
        checkpoint = outcome.checkpoint if outcome else None
        if checkpoint is not None:
            self.store.record_checkpoint(CheckpointRecord(checkpoint.path, checkpoint.sha256))
        self.store.record_training_round(
            TrainingRoundRecord(
                run=self.run,
                kind=kind,
                name=name,
                iteration=iteration,
                input_checkpoint_sha256=input_sha,
                output_checkpoint_sha256=checkpoint.sha256 if checkpoint else None,
                status=status,
                config=config,
                metrics=outcome.metrics if outcome else {},
                started_at=started_at,
                finished_at=datetime.now(UTC),
            )
        )

    def finish(
        self, iteration: int, step: Step, outcome: StepOutcome, input_sha: str | None, started_at: datetime
    ) -> None:
        """Log the step as done. Written once: a done step is never run again (record_training_round
        keeps the first `config` of a row, so outputs must not be written before they exist)."""
        if outcome.status not in DONE_STATUSES:
            raise LoopError(f"step {step} finished with status {outcome.status!r}; use completed or skipped")
        self._write(
            iteration, STEP_KIND, step.value, outcome.status, input_sha=input_sha,
            config={"outputs": outcome.outputs}, outcome=outcome, started_at=started_at,
        )  # fmt: skip

    def fail(
        self, iteration: int, step: Step, input_sha: str | None, error: str, started_at: datetime
    ) -> None:
        """Log a failed attempt as its own row (kind "step_failure", named after the step and its start)."""
        self._write(
            iteration, STEP_FAILURE_KIND, f"{step.value}@{started_at.isoformat()}", FAILED,
            input_sha=input_sha, config={"error": error}, outcome=None, started_at=started_at,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------ hooks


def _call(_name: str, fn: Callable[[], T]) -> T:
    return fn()


@dataclass
class LoopHooks:
    """How steps and episodes run: `run_step(name, fn)` around each step that runs, `map_jobs` for the
    episodes of a collection or evaluation (None: one after the other with a progress bar)."""

    run_step: Callable[[str, Callable[[], Any]], Any] = _call
    map_jobs: JobMapper | None = None


# ------------------------------------------------------------------------------------------ collection


@dataclass(frozen=True)
class CollectOutcome:
    """The stored episodes of a collection (re-read from the database) and the route x seeds that failed."""

    mode: str
    episodes: tuple[EpisodeScore, ...]
    failures: tuple[EpisodeFailure, ...]

    @property
    def takeovers(self) -> int:
        return sum(e.takeovers for e in self.episodes)

    @property
    def distance_km(self) -> float:
        return sum(e.distance_m for e in self.episodes) / M_PER_KM

    @property
    def takeovers_per_km(self) -> float | None:
        return disengagements_per_km(self.takeovers, sum(e.distance_m for e in self.episodes))

    @property
    def takeovers_by_reason(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for e in self.episodes:
            total.update(e.takeovers_by_reason)
        return dict(sorted(total.items()))

    @property
    def mean_driving_score(self) -> float | None:
        return mean([e.driving_score for e in self.episodes])

    def metrics(self) -> dict[str, float]:
        values = {
            "episodes": len(self.episodes),
            "failed_episodes": len(self.failures),
            "takeovers": self.takeovers,
            "distance_km": self.distance_km,
            "takeovers_per_km": self.takeovers_per_km,
            "mean_driving_score": self.mean_driving_score,
        }
        return {k: float(v) for k, v in values.items() if v is not None}


def collect_episodes(
    mode: EpisodeMode | str,
    routes: str,
    seeds: Sequence[int],
    store: Store,
    run: str,
    iteration: int | None,
    *,
    route_ids: Sequence[str] = (),
    checkpoint: str | None = None,
    maps_dirs: Sequence[str] = (),
    overrides: Mapping[str, Sequence[str]] | None = None,
    backend: str = EMBEDDED,
    carla: CarlaRun | None = None,
    map_jobs: JobMapper | None = None,
    threads: int = 1,
    progress: bool = True,
) -> CollectOutcome:
    """Demonstrations (mode expert) or takeover rollouts (mode takeover) on `routes` x `seeds`, stored.

    Route x seeds stored already are skipped; failed ones are recorded (takeover.evaluate) and returned.
    """
    mode = EpisodeMode(mode)
    if mode is EpisodeMode.POLICY:
        raise LoopError(
            "collect_episodes collects demonstrations or takeovers; evaluate with evaluate_checkpoint"
        )
    if not seeds:
        raise LoopError("no seeds given; pass --seeds 0 [1 ...]")
    loaded = load_route_set(routes, list(route_ids) or None)
    if not loaded:
        raise LoopError(f"route set {routes} holds none of the ids {list(route_ids)}")
    phase = MODE_PHASE[mode]
    batch = EpisodeBatch(
        store, run, iteration, route_set_name(routes), checkpoint, tuple(maps_dirs),
        {k: list(v) for k, v in (overrides or {}).items()}, backend,
    )  # fmt: skip
    jobs = [EpisodeJob(r, int(s), mode, phase) for r in loaded for s in seeds]
    what = f"{phase} episodes"
    if backend == CARLA:
        if carla is None:
            carla = CarlaRun(route_file=str(single_route_file(routes)))
        outcome = run_carla_batch(batch, jobs, carla, what=what)
    else:
        outcome = run_batch(batch, jobs, map_jobs=map_jobs, progress=progress, threads=threads, what=what)
    sha = None if checkpoint is None else _sha_of(store, checkpoint)
    wanted = {(j.route.id, j.seed) for j in jobs}
    episodes = tuple(
        e
        for e in stored_episodes(store, run, iteration, sha, batch.route_set, [phase], backend)
        if (e.route_id, e.seed) in wanted
    )
    return CollectOutcome(mode.value, episodes, outcome.failures)


def _sha_of(store: Store, checkpoint: str) -> str:
    from takeover.policy import file_sha256

    sha = file_sha256(checkpoint)
    store.record_checkpoint(CheckpointRecord(path=str(checkpoint), sha256=sha, kind="policy"))
    return sha


# ------------------------------------------------------------------------------------------ iterations


@dataclass(frozen=True)
class IterationResult:
    """One iteration, as run now or re-read from the step log."""

    run: str
    iteration: int
    incumbent_before: CheckpointRef | None  # the policy that collected (None for the bootstrap)
    candidate: CheckpointRef | None  # the checkpoint evaluated (None when training was skipped)
    evaluation: EvalResult | None  # the candidate's evaluation
    # select_candidate: the other evaluated checkpoint of the iteration (DAgger's or DAgger + DPO's)
    rival: CheckpointRef | None
    rival_evaluation: EvalResult | None
    promoted: bool
    reason: str  # why (not) promoted, or why training was skipped
    incumbent_after: CheckpointRef  # the incumbent once this iteration is done
    collect: dict[str, float]  # metrics of the collection step
    training: dict[str, dict[str, float]]  # step -> metrics of the training rounds that ran
    steps_run: tuple[str, ...]  # steps executed by this call
    steps_resumed: tuple[str, ...]  # steps found done in the log and skipped
    use_dpo: bool
    select_candidate: bool = False  # the setting the iteration ran with
    necessary_per_km: float | None = None  # the candidate's necessary disengagements/km (counterfactuals)
    necessary_ratio: Interval | None = None  # ... over the incumbent's, pair by pair
    # collect_counterfactuals: the collection's verdicts (takeovers, necessary, false_alarms, ...)
    collect_verdicts: dict[str, float] = field(default_factory=dict)


@dataclass
class _Context:
    run: str
    config: IterationConfig
    store: Store
    hooks: LoopHooks
    progress: bool
    steps: StepLog
    ran: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    def step(
        self, iteration: int, step: Step, fn: Callable[[], StepOutcome], input_sha: str | None
    ) -> StepRecord:
        """Run `fn` as the step unless the log has it done; the step's row either way."""
        found = self.steps.get(iteration, step)
        if found is not None:
            self.resumed.append(step.value)
            return found
        started = datetime.now(UTC)
        try:
            outcome = self.hooks.run_step(step.value, fn)
        except BaseException as exc:
            self.steps.fail(iteration, step, input_sha, f"{type(exc).__name__}: {exc}", started)
            raise
        self.steps.finish(iteration, step, outcome, input_sha, started)
        self.ran.append(step.value)
        found = self.steps.get(iteration, step)
        assert found is not None, f"step {step} was logged but cannot be read back"
        return found


def _batch_kwargs(ctx: _Context) -> dict[str, Any]:
    config = ctx.config
    carla = None
    if config.backend == CARLA:
        carla = CarlaRun(str(single_route_file(config.train_routes)), tuple(config.carla_overrides),
                         config.carla_managed)  # fmt: skip
    return {
        "maps_dirs": tuple(config.maps),
        "backend": config.backend,
        "carla": carla,
        "map_jobs": ctx.hooks.map_jobs,
        "progress": ctx.progress,
    }


def rollout_seeds(config: IterationConfig, iteration: int) -> list[int]:
    """The takeover-rollout seeds of iteration k >= 1: collect_seeds shifted by (k - 1) x stride."""
    return [int(s) + (iteration - 1) * config.collect_seed_stride for s in config.collect_seeds]


def _collect_step(ctx: _Context, iteration: int, mode: EpisodeMode, seeds: Sequence[int],
                  checkpoint: CheckpointRef | None) -> StepOutcome:  # fmt: skip
    config = ctx.config
    outcome = collect_episodes(
        mode, config.train_routes, seeds, ctx.store, ctx.run, iteration,
        route_ids=config.train_route_ids, checkpoint=checkpoint.path if checkpoint else None,
        overrides=config.collect_overrides, threads=config.torch_threads, **_batch_kwargs(ctx),
    )  # fmt: skip
    if not outcome.episodes:
        first = outcome.failures[0].error if outcome.failures else "no jobs"
        raise LoopError(f"every {mode.value} episode of iteration {iteration} failed; first error: {first}")
    return StepOutcome(
        COMPLETED,
        outcome.metrics(),
        {
            "takeovers_by_reason": outcome.takeovers_by_reason,
            "failures": [f.__dict__ for f in outcome.failures],
        },
    )


def _evaluate_step(
    ctx: _Context, iteration: int, candidate: CheckpointRef, phase_suffix: str = ""
) -> StepOutcome:
    eval_config = dataclasses.replace(
        ctx.config.eval,
        phase=ctx.config.eval.phase + phase_suffix,
        takeover_phase=ctx.config.eval.takeover_phase + phase_suffix,
    )
    result = evaluate_on_protocol(
        ctx.store, ctx.run, iteration, candidate.path, ctx.config, eval_config,
        map_jobs=ctx.hooks.map_jobs, progress=ctx.progress,
    )  # fmt: skip
    return StepOutcome(COMPLETED, result.metrics(), {"eval": result.to_json()}, candidate)


def evaluate_on_protocol(
    store: Store,
    run: str,
    iteration: int,
    checkpoint: str,
    config: IterationConfig,
    eval_config: EvalConfig,
    *,
    map_jobs: JobMapper | None = None,
    progress: bool = True,
) -> EvalResult:
    """`checkpoint` driven on `eval_config`'s held-out routes (the run's protocol, or it with other
    phases or seeds) with `config`'s backend and maps; episodes stored under `run`, `iteration`."""
    routes = load_route_set(eval_config.routes, list(eval_config.route_ids) or None)
    carla = None
    if config.backend == CARLA:
        carla = CarlaRun(str(single_route_file(eval_config.routes)), tuple(config.carla_overrides),
                         config.carla_managed)  # fmt: skip
    return evaluate_checkpoint(
        checkpoint, routes, eval_config.seeds, store, run, iteration, config=eval_config,
        route_set=eval_config.routes, maps_dirs=tuple(config.maps), backend=config.backend, carla=carla,
        map_jobs=map_jobs, progress=progress,
    )  # fmt: skip


def _train_step(result: TrainResult) -> StepOutcome:
    outputs = {"round": result.name, "round_id": result.round_id, "steps": result.steps,
               "n_samples": result.n_samples, "wall_s": result.wall_s}  # fmt: skip
    return StepOutcome(COMPLETED, dict(result.metrics), outputs, CheckpointRef.of(result))


def _same_protocol(result: EvalResult, config: IterationConfig) -> bool:
    """Whether `result` evaluated exactly the route x seeds (and passes) that `config` asks for."""
    ids = {r.id for r in load_route_set(config.eval.routes, list(config.eval.route_ids) or None)}
    wanted = {(i, int(s)) for i in ids for s in config.eval.seeds}
    done = {(e.route_id, e.seed) for e in result.episodes} | {
        (f.route_id, f.seed) for f in result.failures if f.phase == config.eval.phase
    }
    with_takeovers = bool(result.takeover_episodes) or any(
        f.phase == config.eval.takeover_phase for f in result.failures
    )
    return (
        result.route_set == route_set_name(config.eval.routes)
        and done == wanted
        and with_takeovers == config.eval.with_takeovers
    )


def _eval_of(record: StepRecord | None) -> EvalResult | None:
    if record is None or record.status != COMPLETED or "eval" not in record.outputs:
        return None
    return EvalResult.from_json(record.outputs["eval"])


def _start_iteration(ctx: _Context, iteration: int, base: CheckpointRef | None) -> int:
    """The iteration's row (created with the config on first call).

    LoopError when the run's protocol (ablation switch, evaluation) differs from an earlier iteration's.
    """
    wanted = _comparable(ctx.config)
    settings = config_dict(ctx.config)
    for number, stored in _iteration_configs(ctx.store, ctx.run):
        previous = stored.get("comparable")
        if previous is not None and previous != wanted:
            raise LoopError(
                f"run {ctx.run!r} iteration {number} used {previous}, now {wanted}: the ablation switch "
                "and the evaluation protocol must stay fixed within a run; start another --run name "
                "(with --from-run to share v0) for a different setting"
            )
        changed = changed_settings(stored.get("loop"), settings)
        if number == iteration and changed and ctx.steps.get(iteration, Step.PROMOTE) is None:
            # Steps already done used the stored settings; mixing is allowed (threads, paths) but
            # rarely meant when a recipe's flags were simply forgotten on the resume.
            log.warning(
                "run %r iteration %d started with other settings (%s); its remaining steps use the new "
                "ones. `takeover iterate --run %s --resume` goes on with the stored settings",
                ctx.run, iteration, ", ".join(changed), ctx.run,
            )  # fmt: skip
    if base is not None:
        ctx.store.record_checkpoint(CheckpointRecord(base.path, base.sha256))
    return ctx.store.start_iteration(
        ctx.run,
        iteration,
        config={"comparable": wanted, "loop": settings},
        base_checkpoint_sha256=base.sha256 if base else None,
    )


def _iteration_configs(store: Store, run: str) -> list[tuple[int, dict[str, Any]]]:
    """(number, stored config) of each iteration row of `run`, in order."""
    with Session(store.engine) as session:
        rows = session.execute(
            select(Iteration.number, Iteration.config).where(Iteration.run == run).order_by(Iteration.number)
        ).all()
    return [(number, stored or {}) for number, stored in rows]


def changed_settings(old: Mapping[str, Any] | None, new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two stored loop configs (none when `old` is None).

    Keys only one side has come from a schema change between the versions that stored them, not from
    the user: they are not reported."""
    if old is None:
        return []
    changed = []
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def evaluation_phase_pairs() -> list[tuple[str, str]]:
    """The (leaderboard, takeover) storage phases an evaluation is written under, in the order
    `stored_evaluation` tries them: the protocol's, then a selected iteration's DAgger checkpoint's."""
    protocol = load_iteration_config().eval
    phase, takeover_phase = protocol.phase, protocol.takeover_phase
    return [(phase, takeover_phase), (phase + DAGGER_PHASE_SUFFIX, takeover_phase + DAGGER_PHASE_SUFFIX)]


def stored_iteration_config(store: Store, run: str, overrides: Sequence[str] = ()) -> IterationConfig | None:
    """The settings that run `run`'s latest iteration started with (recipe and flags included), with
    dotlist `overrides` relative to the `iterate` section on top; None when the run has none stored."""
    stored = [(n, config["loop"]) for n, config in _iteration_configs(store, run) if config.get("loop")]
    if not stored:
        return None
    number, settings = stored[-1]
    settings, dropped = known_settings(settings)
    if dropped:
        log.warning(
            "run %r iteration %d stored settings this version no longer has (%s); they are ignored",
            run, number, ", ".join(dropped),
        )  # fmt: skip
    try:
        merged = OmegaConf.merge(settings, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise LoopError(f"overrides of run {run!r}'s stored settings: {' '.join(str(exc).split())}") from None
    try:
        return config_from_dict(OmegaConf.to_container(merged))  # type: ignore[arg-type]
    except LoopError as exc:
        raise LoopError(
            f"run {run!r}'s stored settings (iteration {number}) do not fit this version: {exc}; fix the "
            "setting with --set, or go on without --resume, giving the recipe and flags again"
        ) from None


def known_settings(
    data: Mapping[str, Any], schema: type = IterationConfig, prefix: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """`data` without the keys `schema` does not have (stored by an older version), and their dotted
    names. Only the schema's dataclass sections are searched: free-form dicts are kept whole."""
    hints = get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        if key not in names:
            dropped.append(f"{prefix}{key}")
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            kept[key], inner = known_settings(value, hints[key], f"{prefix}{key}.")
            dropped += inner
        else:
            kept[key] = value
    return kept, dropped


def load_run_config(
    store: Store | None,
    run: str,
    overrides: Sequence[str] = (),
    recipe: str | None = None,
    *,
    resume: bool = False,
    new_run_ok: bool = False,
) -> IterationConfig:
    """conf/loop.yaml's `iterate` <- `recipe` <- dotlist `overrides`. With `resume`, the settings run
    `run` was started with replace the first two layers, so that it goes on as it started; a run with
    none stored is a LoopError (a mistyped name would otherwise bootstrap a new run), or with
    `new_run_ok` starts from the layers (a schedule that is set up once)."""
    if resume:
        if store is None:
            raise ValueError("resume reads the run's stored settings: pass the store")
        stored = stored_iteration_config(store, run, overrides)
        if stored is not None:
            if recipe:
                log.warning(
                    "run %r goes on with its stored settings; recipe %r is not applied again", run, recipe
                )
            return stored
        if not new_run_ok:
            raise LoopError(
                f"run {run!r} has no stored settings in {store.masked_url} to resume: check the name, or "
                "start it without resume (with its recipe and overrides)"
            )
    return load_iteration_config(list(overrides), recipe)


def incumbent_before(store: Store, run: str, iteration: int) -> tuple[CheckpointRef, int]:
    """The incumbent when iteration `iteration` starts and the iteration that promoted it.

    LoopError when an earlier iteration has not finished its promote step.
    """
    steps = StepLog(store, run)
    incumbent: tuple[CheckpointRef, int] | None = None
    for k in range(iteration):
        record = steps.get(k, Step.PROMOTE)
        if record is None or record.checkpoint is None:
            raise LoopError(
                f"iteration {k} of run {run!r} has not finished (no promote step); run it first: "
                f"takeover iterate --run {run} --iterations {max(k, 0)} resumes it"
            )
        if record.metrics.get("promoted", 0.0) >= 1.0 or incumbent is None:
            incumbent = (record.checkpoint, k)
    if incumbent is None:
        raise LoopError(f"run {run!r} has no v0 yet: run iteration 0 (the bootstrap) first")
    return incumbent


def next_iteration(store: Store, run: str) -> int:
    """The first iteration of `run` whose promote step has not completed (0 for a new run)."""
    steps = StepLog(store, run)
    k = 0
    while steps.get(k, Step.PROMOTE) is not None:
        k += 1
    return k


def _bootstrap(ctx: _Context) -> IterationResult:
    config = ctx.config
    train = _train_config(config)
    _start_iteration(ctx, 0, None)
    base = StepLog(ctx.store, config.base_run) if config.base_run else None
    if base is not None and base.get(0, Step.PROMOTE) is None:
        raise LoopError(
            f"run {config.base_run!r} (base_run) has no finished v0: run "
            f"`takeover iterate --run {config.base_run} --iterations 0` first"
        )

    def demos() -> StepOutcome:
        if base is not None:
            return StepOutcome(
                SKIPPED, outputs={"reason": f"the demonstrations of run {config.base_run} are used"}
            )
        return _collect_step(ctx, 0, EpisodeMode.EXPERT, config.demo_seeds, None)

    ctx.step(0, Step.COLLECT_DEMOS, demos, None)

    def bc() -> StepOutcome:
        if base is not None:
            v0 = base.get(0, Step.BC)
            assert v0 is not None and v0.checkpoint is not None
            return StepOutcome(COMPLETED, v0.metrics, {"from_run": config.base_run}, v0.checkpoint)
        from takeover.policy.config import load_policy_config

        with torch_threads(config.train_torch_threads):
            return _train_step(
                train_bc(ctx.store, ctx.run, train.bc, load_policy_config(config.policy_overrides))
            )

    v0 = ctx.step(0, Step.BC, bc, None).checkpoint
    assert v0 is not None

    def evaluate() -> StepOutcome:
        if base is not None:
            reused = _eval_of(base.get(0, Step.EVALUATE))
            if (
                reused is not None
                and reused.checkpoint_sha256 == v0.sha256
                and _same_protocol(reused, config)
            ):
                return StepOutcome(
                    COMPLETED, reused.metrics(), {"eval": reused.to_json(), "from_run": config.base_run}, v0
                )
        return _evaluate_step(ctx, 0, v0)

    evaluation = _eval_of(ctx.step(0, Step.EVALUATE, evaluate, v0.sha256))
    if config.counterfactuals:
        ctx.step(0, Step.COUNTERFACTUAL, lambda: _counterfactual_step(ctx, evaluation, None), v0.sha256)

    def promote() -> StepOutcome:
        assert evaluation is not None
        decision = promotion_decision(evaluation, None, config.promotion)
        _finish_iteration(ctx, 0, v0)
        return StepOutcome(COMPLETED, {"promoted": 1.0}, {"reason": decision.reason}, v0)

    ctx.step(0, Step.PROMOTE, promote, v0.sha256)
    return read_iteration(ctx.store, ctx.run, 0, ran=ctx.ran, resumed=ctx.resumed)


def _finish_iteration(ctx: _Context, iteration: int, promoted: CheckpointRef | None) -> None:
    iteration_id = ctx.store.start_iteration(ctx.run, iteration)
    ctx.store.finish_iteration(
        iteration_id, status=COMPLETED, promoted_checkpoint_sha256=promoted.sha256 if promoted else None
    )


def _improve(ctx: _Context, iteration: int) -> IterationResult:
    config = ctx.config
    train = _train_config(config)
    incumbent, incumbent_iteration = incumbent_before(ctx.store, ctx.run, iteration)
    _start_iteration(ctx, iteration, incumbent)

    collect = ctx.step(
        iteration,
        Step.COLLECT_TAKEOVERS,
        lambda: _collect_step(
            ctx, iteration, EpisodeMode.TAKEOVER, rollout_seeds(config, iteration), incumbent
        ),
        incumbent.sha256,
    )
    no_takeovers = collect.metrics.get("takeovers", 0.0) <= 0
    if config.collect_counterfactuals:
        ctx.step(
            iteration, Step.COLLECT_COUNTERFACTUAL,
            lambda: _collect_counterfactual_step(ctx, iteration, incumbent, no_takeovers), incumbent.sha256,
        )  # fmt: skip

    def dagger() -> StepOutcome:
        if no_takeovers:
            return StepOutcome(SKIPPED, outputs={"reason": "no takeovers collected: nothing new to imitate"})
        with torch_threads(config.train_torch_threads):
            return _train_step(dagger_round(ctx.store, ctx.run, iteration, incumbent.path, train.dagger))

    dagger_record = ctx.step(iteration, Step.DAGGER, dagger, incumbent.sha256)

    def dpo() -> StepOutcome:
        if not config.use_dpo:
            return StepOutcome(SKIPPED, outputs={"reason": "ablation: DAgger only (use_dpo false)"})
        if dagger_record.checkpoint is None:
            return StepOutcome(SKIPPED, outputs={"reason": "no DAgger checkpoint to start from"})
        try:
            with torch_threads(config.train_torch_threads):
                result = dpo_round(ctx.store, ctx.run, iteration, dagger_record.checkpoint.path, train.dpo)
        except DatasetError as exc:  # no usable preference pairs this time: DAgger's checkpoint stands
            log.warning("DPO round of iteration %d skipped: %s", iteration, exc)
            return StepOutcome(SKIPPED, outputs={"reason": str(exc)})
        return _train_step(result)

    dpo_record = ctx.step(
        iteration, Step.DPO, dpo, dagger_record.checkpoint.sha256 if dagger_record.checkpoint else None
    )
    trained = dpo_record.checkpoint or dagger_record.checkpoint
    dagger_eval: EvalResult | None = None
    if config.select_candidate:

        def evaluate_dagger() -> StepOutcome:
            if dagger_record.checkpoint is None or dpo_record.checkpoint is None:
                return StepOutcome(
                    SKIPPED, outputs={"reason": "no DPO checkpoint: nothing to select between"}
                )
            return _evaluate_step(ctx, iteration, dagger_record.checkpoint, DAGGER_PHASE_SUFFIX)

        dagger_eval = _eval_of(
            ctx.step(iteration, Step.EVALUATE_DAGGER, evaluate_dagger,
                     dagger_record.checkpoint.sha256 if dagger_record.checkpoint else None)
        )  # fmt: skip

    def evaluate() -> StepOutcome:
        if trained is None:
            return StepOutcome(SKIPPED, outputs={"reason": "no candidate: training was skipped"})
        return _evaluate_step(ctx, iteration, trained)

    trained_eval = _eval_of(ctx.step(iteration, Step.EVALUATE, evaluate, trained.sha256 if trained else None))
    selection = select_candidate(trained_eval, dagger_eval, config.promotion)
    candidate = dagger_record.checkpoint if selection.step == Step.EVALUATE_DAGGER else trained
    evaluation = dagger_eval if selection.step == Step.EVALUATE_DAGGER else trained_eval
    incumbent_eval = candidate_evaluation(StepLog(ctx.store, ctx.run).records(incumbent_iteration))
    necessary = None
    if config.counterfactuals:
        counterfactual = ctx.step(
            iteration, Step.COUNTERFACTUAL, lambda: _counterfactual_step(ctx, evaluation, incumbent_eval),
            candidate.sha256 if candidate else None,
        )  # fmt: skip
        necessary = necessary_rates(counterfactual)

    def promote() -> StepOutcome:
        if evaluation is None or candidate is None:
            reason = "no candidate was evaluated; the incumbent stays"
            promoted = False
        else:
            if incumbent_eval is None:
                raise LoopError(
                    f"the incumbent of run {ctx.run!r} (iteration {incumbent_iteration}) has no stored "
                    "evaluation to compare with"
                )
            decision = promotion_decision(evaluation, incumbent_eval, config.promotion, necessary)
            promoted, reason = decision.promoted, decision.reason
        if selection.reason:
            reason = f"{selection.reason}; {reason}"
        after = candidate if promoted and candidate is not None else incumbent
        _finish_iteration(ctx, iteration, candidate if promoted else None)
        outputs = {"reason": reason, "candidate_step": selection.step.value}
        return StepOutcome(COMPLETED, {"promoted": float(promoted)}, outputs, after)

    ctx.step(iteration, Step.PROMOTE, promote, candidate.sha256 if candidate else incumbent.sha256)
    return read_iteration(ctx.store, ctx.run, iteration, ran=ctx.ran, resumed=ctx.resumed)


@dataclass(frozen=True)
class Selection:
    """Which evaluation step holds the iteration's candidate, and why ("" when there was no choice)."""

    step: Step
    reason: str = ""


def select_candidate(
    trained: EvalResult | None, dagger: EvalResult | None, config: PromotionConfig
) -> Selection:
    """The candidate of an iteration that evaluated both DAgger's and DAgger + DPO's checkpoint.

    DPO's checkpoint is the method's output and stays the candidate unless DAgger's beats it by the
    promotion rule (more DS, or a DS tie with fewer disengagements/km): a tie keeps DPO's.
    """
    if trained is None or dagger is None:
        return Selection(Step.EVALUATE)
    decision = score_decision(dagger, trained, config)  # the promotion's guard then judges the one selected
    if decision.promoted:
        return Selection(Step.EVALUATE_DAGGER, f"DAgger's checkpoint beat DAgger + DPO's ({decision.reason})")
    ds_d, ds_t = dagger.driving_score, trained.driving_score
    return Selection(
        Step.EVALUATE, f"DAgger + DPO's checkpoint kept over DAgger's (DS {fmt(ds_t)} vs {fmt(ds_d)})"
    )


def _counterfactual_step(
    ctx: _Context, evaluation: EvalResult | None, incumbent: EvalResult | None
) -> StepOutcome:
    """Counterfactual verdicts of every takeover of the candidate's evaluation and the incumbent's (those
    stored already are read back); metrics: `counterfactual_metrics` of each, the incumbent's prefixed
    "incumbent_" (necessary_per_km, incumbent_necessary_per_km, ...), and the paired ratio of the two
    rates (`ratio_metrics`) at promotion.necessary_confidence (conf/paired.yaml's when that is off)."""
    if evaluation is None:
        return StepOutcome(SKIPPED, outputs={"reason": "no candidate was evaluated: nothing to replay"})
    settings = _counterfactual_config(ctx.config)
    metrics: dict[str, float] = {}
    outputs: dict[str, Any] = {}
    found: dict[str, Counterfactuals] = {}
    for prefix, result in (("", evaluation), ("incumbent_", incumbent)):
        if result is None:
            continue
        found[prefix] = analyse_on_protocol(
            ctx.store, result, ctx.config, ctx.config.eval.routes, settings, progress=ctx.progress
        )
        metrics |= {f"{prefix}{k}": float(v) for k, v in counterfactual_metrics(found[prefix]).items()}
        outputs[prefix + "counterfactuals"] = found[prefix].to_json()
    if len(found) == 2:
        confidence = ctx.config.promotion.necessary_confidence
        paired = load_paired_config([f"confidence={confidence}"] if confidence > 0 else [])
        metrics |= ratio_metrics(necessary_ratio(found["incumbent_"], found[""], paired))
    return StepOutcome(COMPLETED, metrics, outputs)


def _collect_counterfactual_step(
    ctx: _Context, iteration: int, incumbent: CheckpointRef, no_takeovers: bool
) -> StepOutcome:
    """Counterfactual verdicts of the iteration's collected takeovers (stored for the training rounds'
    verdict_weights); metrics: takeovers, necessary, false_alarms, diverged, replayed, necessary_per_km."""
    if no_takeovers:
        return StepOutcome(SKIPPED, outputs={"reason": "no takeovers collected: nothing to replay"})
    config = ctx.config
    episodes = collection_episodes(ctx.store, ctx.run, iteration, incumbent.sha256, config)
    takeovers, records, replayed = judge_episodes(
        ctx.store, episodes, incumbent.path,
        load_route_set(config.train_routes, list(config.train_route_ids) or None),
        _counterfactual_config(config), overrides=config.collect_overrides, maps_dirs=config.maps,
        progress=ctx.progress, what=f"{ctx.run}:{iteration} collection",
    )  # fmt: skip
    tally = tally_verdicts(records.values())
    km = sum(e.distance_m for e in episodes) / M_PER_KM
    metrics = {
        "takeovers": float(len(takeovers)),
        "necessary": float(tally.necessary),
        "false_alarms": float(tally.false_alarms),
        "diverged": float(tally.diverged),
        "replayed": float(replayed),
    }
    if km > 0:
        metrics["necessary_per_km"] = tally.necessary / km
    return StepOutcome(COMPLETED, metrics, {"outcomes": tally.outcomes})


def collection_episodes(
    store: Store, run: str, iteration: int, checkpoint_sha256: str, config: IterationConfig
) -> tuple[EpisodeScore, ...]:
    """The stored takeover rollouts of iteration `iteration` that the incumbent drove on the training routes."""
    found = stored_episodes(
        store, run, iteration, checkpoint_sha256, route_set_name(config.train_routes),
        [MODE_PHASE[EpisodeMode.TAKEOVER]], config.backend,
    )  # fmt: skip
    return tuple(found)


RATIO_KEY = "necessary_ratio"


def ratio_metrics(ratio: Interval | None) -> dict[str, float]:
    """The step log's form of the paired necessary-rate ratio (nothing when no pair defines it)."""
    if ratio is None:
        return {}
    return {
        RATIO_KEY: ratio.estimate, f"{RATIO_KEY}_low": ratio.low, f"{RATIO_KEY}_high": ratio.high,
        f"{RATIO_KEY}_confidence": ratio.confidence, f"{RATIO_KEY}_pairs": float(ratio.pairs),
        f"{RATIO_KEY}_unpaired": float(ratio.unpaired),
    }  # fmt: skip


def ratio_from_metrics(metrics: Mapping[str, float]) -> Interval | None:
    """`ratio_metrics` read back (None for a step logged without it)."""
    if RATIO_KEY not in metrics:
        return None
    m = metrics
    return Interval(
        m[RATIO_KEY], m[f"{RATIO_KEY}_low"], m[f"{RATIO_KEY}_high"], m[f"{RATIO_KEY}_confidence"],
        int(m[f"{RATIO_KEY}_pairs"]), int(m[f"{RATIO_KEY}_unpaired"]),
    )  # fmt: skip


def counterfactual_metrics(found: Counterfactuals) -> dict[str, float]:
    """What the step log keeps of one evaluation's counterfactuals (necessary_per_km only when measured)."""
    metrics = {
        "takeovers": float(len(found.takeovers)),
        "necessary": float(found.necessary),
        "diverged": float(found.diverged),
        "replayed": float(found.replayed),
    }
    if found.necessary_per_km is not None:
        metrics["necessary_per_km"] = found.necessary_per_km
    return metrics


def necessary_rates(record: StepRecord | None) -> NecessaryRates | None:
    """The candidate's and the incumbent's necessary disengagements/km from a counterfactual step."""
    if record is None or record.status != COMPLETED:
        return None
    return NecessaryRates(
        record.metrics.get("necessary_per_km"),
        record.metrics.get("incumbent_necessary_per_km"),
        ratio_from_metrics(record.metrics),
    )


def candidate_step(records: Mapping[Step, StepRecord]) -> Step:
    """The evaluation step whose checkpoint the iteration's promote step judged (evaluate by default,
    and for iterations logged before candidates were selected)."""
    promote = records.get(Step.PROMOTE)
    name = promote.outputs.get("candidate_step") if promote is not None else None
    return Step(name) if name in EVAL_STEPS else Step.EVALUATE


def candidate_evaluation(records: Mapping[Step, StepRecord]) -> EvalResult | None:
    """The stored evaluation of an iteration's candidate."""
    return _eval_of(records.get(candidate_step(records)))


def read_iteration(
    store: Store, run: str, iteration: int, *, ran: Sequence[str] = (), resumed: Sequence[str] = ()
) -> IterationResult:
    """A finished iteration rebuilt from its step log (LoopError when its promote step is not done)."""
    records = StepLog(store, run).records(iteration)
    promote = records.get(Step.PROMOTE)
    if promote is None or promote.checkpoint is None:
        raise LoopError(f"iteration {iteration} of run {run!r} has not finished (no promote step)")
    chosen = candidate_step(records)
    evaluate = records.get(chosen)
    rival = records.get(Step.EVALUATE_DAGGER if chosen == Step.EVALUATE else Step.EVALUATE)
    rival_eval = _eval_of(rival)
    collect = records.get(Step.COLLECT_DEMOS if iteration == 0 else Step.COLLECT_TAKEOVERS)
    training = {
        step.value: records[step].metrics
        for step in (Step.BC, Step.DAGGER, Step.DPO)
        if step in records and records[step].status == COMPLETED
    }
    with Session(store.engine) as session:
        stored = session.execute(
            select(Iteration.config).where(Iteration.run == run, Iteration.number == iteration)
        ).scalar_one_or_none()
    stored = stored or {}
    use_dpo = bool((stored.get("comparable") or {}).get("use_dpo", True))
    necessary = necessary_rates(records.get(Step.COUNTERFACTUAL))
    verdicts = records.get(Step.COLLECT_COUNTERFACTUAL)
    selects = bool((stored.get("loop") or {}).get("select_candidate", False))
    return IterationResult(
        run=run,
        iteration=iteration,
        incumbent_before=None if iteration == 0 or collect is None else collect.input_checkpoint,
        candidate=evaluate.checkpoint if evaluate is not None else None,
        evaluation=_eval_of(evaluate),
        rival=rival.checkpoint if rival is not None and rival_eval is not None else None,
        rival_evaluation=rival_eval,
        promoted=promote.metrics.get("promoted", 0.0) >= 1.0,
        reason=str(promote.outputs.get("reason", "")),
        incumbent_after=promote.checkpoint,
        collect=collect.metrics if collect is not None else {},
        training=training,
        steps_run=tuple(ran),
        steps_resumed=tuple(resumed),
        use_dpo=use_dpo,
        select_candidate=selects,
        necessary_per_km=necessary.candidate if necessary is not None else None,
        necessary_ratio=necessary.ratio if necessary is not None else None,
        collect_verdicts=verdicts.metrics if verdicts is not None and verdicts.status == COMPLETED else {},
    )


def read_loop(store: Store, run: str) -> LoopResult:
    """Every finished iteration of `run`, from the step log (LoopError when it has none)."""
    finished = next_iteration(store, run)
    if finished == 0:
        raise LoopError(f"run {run!r} has no finished iteration in {store.masked_url}")
    return LoopResult(run, tuple(read_iteration(store, run, k) for k in range(finished)))


def run_iteration(
    run: str,
    iteration: int,
    config: IterationConfig,
    store: Store,
    *,
    hooks: LoopHooks | None = None,
    progress: bool = True,
) -> IterationResult:
    """Iteration `iteration` of `run` (0 = the bootstrap), resuming at its first unfinished step."""
    if not run or any(c in run for c in "/\\"):
        raise LoopError(f"run name {run!r} must be a non-empty name without slashes")
    if iteration < 0:
        raise LoopError(f"iteration {iteration} must be >= 0 (0 is the bootstrap: demonstrations + BC)")
    validate_iteration_config(config)
    if config.base_run == run:
        raise LoopError(f"base_run {run!r} is the run itself; name another run (or leave it empty)")
    ctx = _Context(run, config, store, hooks or LoopHooks(), progress, StepLog(store, run))
    return _bootstrap(ctx) if iteration == 0 else _improve(ctx, iteration)


@dataclass(frozen=True)
class LoopResult:
    run: str
    iterations: tuple[IterationResult, ...]

    @property
    def v0(self) -> IterationResult:
        return self.iterations[0]

    @property
    def final(self) -> IterationResult:
        return self.iterations[-1]

    @property
    def method(self) -> str:
        """What the run trains, for labels: DAgger only, DAgger + DPO, or the better of the two."""
        if not self.final.use_dpo:
            return "DAgger only"
        return "DAgger + DPO, selected" if self.final.select_candidate else "DAgger + DPO"

    def evaluation_of(self, checkpoint: CheckpointRef) -> EvalResult | None:
        """The evaluation of the iteration whose candidate was `checkpoint`."""
        for result in self.iterations:
            if result.candidate is not None and result.candidate.sha256 == checkpoint.sha256:
                return result.evaluation
        return None


def run_loop(
    run: str,
    iterations: int,
    config: IterationConfig,
    store: Store,
    *,
    hooks: LoopHooks | None = None,
    progress: bool = True,
    on_iteration: Callable[[IterationResult], None] | None = None,
) -> LoopResult:
    """The bootstrap (when the run has no v0) and post-optimization iterations 1..`iterations`.

    Finished iterations are re-read from the step log, not run again.
    """
    if iterations < 0:
        raise LoopError(f"iterations={iterations} must be >= 0")
    results = []
    for k in range(iterations + 1):
        result = run_iteration(run, k, config, store, hooks=hooks, progress=progress)
        results.append(result)
        if on_iteration is not None:
            on_iteration(result)
    return LoopResult(run, tuple(results))


def last_wins(overrides: Sequence[str]) -> list[str]:
    """Dotlist overrides without the earlier copies of a repeated entry: the same settings (a later
    entry wins anyway), but a run resumed night after night with its flags does not grow the list."""
    kept: list[str] = []
    for override in reversed(overrides):
        if override not in kept:
            kept.append(override)
    return kept[::-1]


def configure(
    config: IterationConfig,
    *,
    train_routes: str | None = None,
    train_route_ids: Sequence[str] | None = None,
    eval_routes: str | None = None,
    eval_route_ids: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    use_dpo: bool | None = None,
    select_candidate: bool | None = None,
    base_run: str | None = None,
    backend: str | None = None,
    maps: Sequence[str] | None = None,
    train_overrides: Sequence[str] | None = None,
    carla_overrides: Sequence[str] | None = None,
    carla_managed: bool | None = None,
) -> IterationConfig:
    """A validated copy of `config` with the given settings replaced (None keeps a setting); `seeds`
    sets the demonstration, rollout and evaluation seeds, `train_overrides` are appended."""
    new = copy.deepcopy(config)
    if train_routes is not None:
        new.train_routes = train_routes
    if train_route_ids is not None:
        new.train_route_ids = [str(i) for i in train_route_ids]
    if eval_routes is not None:
        new.eval.routes = eval_routes
    if eval_route_ids is not None:
        new.eval.route_ids = [str(i) for i in eval_route_ids]
    if seeds is not None:
        new.demo_seeds = new.collect_seeds = [int(s) for s in seeds]
        new.eval.seeds = [int(s) for s in seeds]
    if use_dpo is not None:
        new.use_dpo = use_dpo
    if select_candidate is not None:
        new.select_candidate = select_candidate
    if base_run is not None:
        new.base_run = base_run
    if backend is not None:
        new.backend = backend
    if maps is not None:
        new.maps = [str(m) for m in maps]
    if train_overrides:
        new.train_overrides = last_wins([*new.train_overrides, *train_overrides])
    if carla_overrides is not None:
        new.carla_overrides = list(carla_overrides)
    if carla_managed is not None:
        new.carla_managed = carla_managed
    validate_iteration_config(new)
    return new


def config_from_dict(data: Mapping[str, Any]) -> IterationConfig:
    """An IterationConfig from a plain dict (e.g. a flow parameter), validated against the schema."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(IterationConfig), OmegaConf.create(dict(data)))
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise LoopError(f"loop config: {' '.join(str(exc).split())}") from None
    assert isinstance(config, IterationConfig)
    validate_iteration_config(config)
    return config


def analyse_run(
    store: Store,
    run: str,
    iteration: int,
    *,
    checkpoint: str | None = None,
    routes: str = "builtin:eval",
    config: CounterfactualConfig | None = None,
    progress: bool = True,
) -> Counterfactuals:
    """`analyse_evaluation` (takeover/counterfactual.py) of the evaluation stored for `run` / `iteration`
    on the route set `routes` (`checkpoint` names one when the iteration evaluated several), with the
    settings the run's evaluations drove with (its stored loop settings, else conf/loop.yaml)."""
    result = stored_evaluation(
        store, run, iteration, route_set_name(routes), evaluation_phase_pairs(), checkpoint
    )
    protocol = stored_iteration_config(store, run) or load_iteration_config()
    return analyse_on_protocol(store, result, protocol, routes, config, progress=progress)


def analyse_on_protocol(
    store: Store,
    result: EvalResult,
    protocol: IterationConfig,
    routes: str,
    config: CounterfactualConfig | None = None,
    *,
    progress: bool = True,
) -> Counterfactuals:
    """`analyse_evaluation` of `result`, evaluated on the route set `routes` with the episode settings
    and map folders of the loop settings `protocol` (the replays must drive as the evaluation did)."""
    return analyse_evaluation(
        store, result, load_route_set(routes), config, overrides=protocol.eval.overrides,
        maps_dirs=protocol.maps, progress=progress,
    )  # fmt: skip


__all__ = [
    "BOOTSTRAP_STEPS",
    "ITERATION_STEPS",
    "CheckpointRef",
    "CollectOutcome",
    "DemoConfig",
    "IterationConfig",
    "IterationResult",
    "LoopError",
    "LoopFileConfig",
    "LoopHooks",
    "LoopResult",
    "Step",
    "StepLog",
    "StepOutcome",
    "StepRecord",
    "analyse_on_protocol",
    "analyse_run",
    "changed_settings",
    "collect_episodes",
    "config_from_dict",
    "configure",
    "counterfactual_metrics",
    "incumbent_before",
    "last_wins",
    "load_iteration_config",
    "load_loop_file",
    "load_run_config",
    "necessary_rates",
    "next_iteration",
    "read_iteration",
    "read_loop",
    "recipe_names",
    "recipe_path",
    "run_iteration",
    "run_loop",
    "stored_iteration_config",
]
