"""One route in closed loop with the policy, the shadow expert and the takeover monitor.

`EpisodeStepper` is the episode, one tick at a time (start, tick -> Control, finish -> EpisodeResult),
for whoever owns the loop: `run_episode` drives it over a Simulator; the Bench2Drive leaderboard agent
(carla_bridge/leaderboard_agent.py) drives it from the evaluator's run_step.

Every tick (20 Hz): the expert plans in shadow mode, the policy acts, the monitor decides who drives,
and the driver's control is applied. A ring buffer keeps the last `pre_window_s` of ticks so that
each takeover gets a clip: the pre-takeover window (the policy driving into trouble), the takeover
(the expert driving) and the hand-back plus `post_handback_s`. Both plans are stored for every frame.

Modes (`EpisodeConfig.mode`):
  takeover  the policy drives, the expert shadows it and takes over when the monitor says so (DAgger
            rollouts, phase "rollout");
  policy    the policy alone, no expert, no takeovers (closed-loop evaluation, phase "eval");
  expert    the expert drives all the time; every `demo_stride`-th tick is stored, in clips of at most
            `demo_clip_frames` frames (demonstrations, phase "expert").

The leaderboard record comes from the route's scoring (carla_bridge.scoring.RouteCriteria), which the
loop's owner keeps: in run_episode the simulator's own when it exposes one as `sim.criteria`, else one
the runner feeds with every snapshot.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import world_to_ego
from carla_bridge.scoring import RouteCriteria
from carla_bridge.scoring import RouteRecord as LeaderboardRecord
from carla_bridge.simulator import FIXED_DELTA_S
from carla_bridge.snapshot import Control, InfractionEvent
from storage.records import EXPERT_DISTANCE_KEY, ClipRecord, EpisodeRecord, TakeoverRecord
from storage.records import RouteRecord as StoredRoute
from takeover.clips import ClipLayout, ClipPhase, FeatureSource, TickRecord, build_clip_arrays
from takeover.monitor import TIME_EPS_S, Driver, MonitorDecision, TakeoverMonitor

if TYPE_CHECKING:
    import carla

    from carla_bridge.route import DenseRoute, Route
    from carla_bridge.simulator import Simulator
    from carla_bridge.snapshot import WorldSnapshot
    from experts.expert import ExpertPlan, PDMLiteExpert
    from takeover.policy.config import PolicyConfig
    from takeover.policy.protocol import PolicyPlan

CONFIG_NAME = "episode"
TAKEOVER_CLIP_KIND = "takeover"
DEMO_CLIP_KIND = "demo"
RUNNING_SCENARIO = "running"


class EpisodeMode(StrEnum):
    TAKEOVER = "takeover"
    POLICY = "policy"
    EXPERT = "expert"


# The storage `phase` of each mode's episodes.
MODE_PHASE: dict[EpisodeMode, str] = {
    EpisodeMode.TAKEOVER: "rollout",
    EpisodeMode.POLICY: "eval",
    EpisodeMode.EXPERT: "expert",
}


class EpisodeError(TakeoverError):
    """An episode cannot run as configured (missing policy/expert/monitor for the mode, bad config)."""


@dataclass
class EpisodeConfig:
    """How one closed-loop episode runs and what it keeps (schema of conf/episode.yaml)."""

    mode: str = "takeover"  # takeover | policy | expert (EpisodeMode)
    pre_window_s: float = 3.0  # simulated seconds kept before each takeover's trigger
    post_handback_s: float = 1.0  # ... and after its hand-back
    max_clip_s: float = 20.0  # a longer takeover is stored as consecutive clips of at most this
    demo_stride: int = 5  # demonstrations keep every this-many ticks (5 = 4 Hz)
    demo_clip_frames: int = 100  # frames per demonstration clip (100 x stride 5 = 25 s)
    max_time_s: float = 0.0  # stop after this much simulated time; 0 = when the route's scoring ends it
    clip_max_actors: int = 32  # actor slots per clip (the nearest over the clip)
    clip_actor_radius_m: float = 50.0  # actors farther than this from the ego on every frame are dropped
    clip_route_margin_m: float = 40.0  # route points kept around the clip's progress, m
    store_features: bool = True  # store the policy's inputs (feat_*) in clips
    backend: str = "embedded"  # recorded with the episode


def load_episode_config(overrides: list[str] | None = None) -> EpisodeConfig:
    """EpisodeConfig from its defaults, conf/episode.yaml and dotlist overrides, validated."""
    config = load_config(EpisodeConfig, CONFIG_NAME, overrides)
    validate_episode_config(config)
    return config


def validate_episode_config(config: EpisodeConfig) -> EpisodeMode:
    """The config's mode; EpisodeError on the first bad value."""
    try:
        mode = EpisodeMode(config.mode)
    except ValueError:
        raise EpisodeError(
            f"episode.mode={config.mode!r} is unknown; use one of {[m.value for m in EpisodeMode]}"
        ) from None
    for name in (
        "pre_window_s",
        "post_handback_s",
        "max_time_s",
        "clip_actor_radius_m",
        "clip_route_margin_m",
    ):
        if getattr(config, name) < 0:
            raise EpisodeError(f"episode.{name}={getattr(config, name)} must be >= 0")
    if config.max_clip_s <= config.pre_window_s:
        raise EpisodeError(
            f"episode.max_clip_s={config.max_clip_s} must exceed pre_window_s={config.pre_window_s}, "
            "so that a takeover clip holds more than its pre-takeover window"
        )
    for name in ("demo_stride", "demo_clip_frames"):
        if getattr(config, name) < 1:
            raise EpisodeError(f"episode.{name}={getattr(config, name)} must be >= 1")
    if config.clip_max_actors < 0:
        raise EpisodeError(f"episode.clip_max_actors={config.clip_max_actors} must be >= 0")
    if not config.backend:
        raise EpisodeError("episode.backend must name the simulator backend, e.g. embedded")
    return mode


@dataclass(frozen=True)
class EpisodeTags:
    """Who/why an episode ran: recorded with it in storage (its natural key)."""

    run: str = "default"  # experiment name
    route_set: str = "default"  # the route file / set the route came from
    iteration: int | None = None
    checkpoint_sha256: str | None = None  # the policy that drove (recorded in the store first)
    phase: str | None = None  # None: the mode's (rollout, eval, expert)
    repetition: int = 0


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: leaderboard record, storage records, and figures."""

    record: LeaderboardRecord  # the leaderboard's route record (scores, infractions, status)
    episode: EpisodeRecord  # what Store.ingest_episode takes, with ...
    takeovers: tuple[TakeoverRecord, ...]  # ... the takeovers, in order
    clips: tuple[ClipRecord, ...]  # ... and the clips
    distance_m: float  # driven by the ego
    expert_distance_m: float  # ... of which with the expert at the wheel
    n_ticks: int
    expert_ticks: int  # ticks the expert drove
    sim_time_s: float
    wall_time_s: float

    @property
    def takeovers_by_reason(self) -> dict[str, int]:
        return dict(Counter(t.reason for t in self.takeovers))

    @property
    def driving_score(self) -> float:
        return float(self.record.scores.score_composed)

    @property
    def realtime_factor(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.sim_time_s / self.wall_time_s if self.wall_time_s > 0 else math.inf


@dataclass
class _Takeover:
    """A takeover while its clip is being captured."""

    index: int
    trigger: TickRecord
    decision: MonitorDecision
    handback: TickRecord | None = None
    post_until: int | None = None  # last tick of the after-hand-back window
    frames: list[TickRecord] = field(default_factory=list)  # of the clip (chunk) being captured


class _Scoring:
    """The route's RouteCriteria: the simulator's own (`sim.criteria`) or one fed here."""

    def __init__(self, sim: Simulator, route: Route) -> None:
        own = getattr(sim, "criteria", None)
        self.external = isinstance(own, RouteCriteria)
        self.criteria: RouteCriteria = own if self.external else RouteCriteria(route, sim.map)

    def update(self, snapshot: WorldSnapshot) -> None:
        if not self.external:
            self.criteria.update(snapshot)


def _plan_rows(plan_xy_ego: np.ndarray, speeds: np.ndarray) -> np.ndarray:
    return np.column_stack([np.asarray(plan_xy_ego, float)[:, :2], np.asarray(speeds, float)])


def _running_scenario(snapshot: WorldSnapshot) -> str | None:
    for info in snapshot.scenarios:
        if info.status == RUNNING_SCENARIO:
            return info.type
    return None


class _EpisodeRun:
    """Clip bookkeeping of one episode: the ring buffer, open takeovers, finished clips, demo frames."""

    def __init__(
        self,
        route: Route,
        mode: EpisodeMode,
        config: EpisodeConfig,
        dt_s: float,
        layout: ClipLayout,
        features: FeatureSource | None,
    ) -> None:
        assert route.dense is not None
        self.dense: DenseRoute = route.dense
        self.mode = mode
        self.config = config
        self.layout = layout
        self.features = features
        self.pre_ticks = round(config.pre_window_s / dt_s)
        self.post_ticks = round(config.post_handback_s / dt_s)
        self.max_clip_ticks = max(round(config.max_clip_s / dt_s), self.pre_ticks + 1)
        self.ring: deque[TickRecord] = deque(maxlen=max(self.pre_ticks, 1))
        self.open: _Takeover | None = None
        self.takeovers: list[_Takeover] = []
        self.clips: list[ClipRecord] = []
        self.demo: list[TickRecord] = []
        self.expert_ticks = 0

    # -- takeover clips ------------------------------------------------------------------------
    def on_tick(self, rec: TickRecord, decision: MonitorDecision | None) -> None:
        if rec.driver is Driver.EXPERT:
            self.expert_ticks += 1
        if self.mode is EpisodeMode.EXPERT:
            if rec.tick % self.config.demo_stride == 0:
                self.demo.append(rec)
                if len(self.demo) >= self.config.demo_clip_frames:
                    self._flush_demo()
            return
        if self.mode is not EpisodeMode.TAKEOVER or decision is None:
            return
        if decision.triggered is not None:
            if self.open is not None:
                self._close()
            pre = list(self.ring)[-self.pre_ticks :] if self.pre_ticks else []
            tk = _Takeover(len(self.takeovers), rec, decision, frames=[*pre, rec])
            self.open = tk
            self.takeovers.append(tk)
        elif self.open is not None:
            tk = self.open
            tk.frames.append(rec)
            if decision.handed_back and tk.handback is None:
                tk.handback = rec
                tk.post_until = rec.tick + self.post_ticks
            if tk.post_until is not None and rec.tick >= tk.post_until:
                self._close()
            elif len(tk.frames) >= self.max_clip_ticks:
                self._flush_chunk(tk)
        self.ring.append(rec)

    def _phases(self, tk: _Takeover, frames: list[TickRecord]) -> np.ndarray:
        trigger = tk.trigger.tick
        back = tk.handback.tick if tk.handback is not None else None
        return np.array(
            [
                ClipPhase.PRE_TAKEOVER
                if f.tick < trigger
                else ClipPhase.AFTER_HANDBACK
                if back is not None and f.tick >= back
                else ClipPhase.TAKEOVER
                for f in frames
            ],
            np.int8,
        )

    def _clip(self, kind: str, frames: list[TickRecord], phases: np.ndarray, takeover: int | None) -> None:
        arrays = build_clip_arrays(frames, phases, self.dense, self.layout, self.features)
        self.clips.append(ClipRecord(kind, frames[0].tick, arrays, takeover))

    def _flush_chunk(self, tk: _Takeover) -> None:
        self._clip(TAKEOVER_CLIP_KIND, tk.frames, self._phases(tk, tk.frames), tk.index)
        tk.frames = []

    def _close(self) -> None:
        tk = self.open
        assert tk is not None
        if tk.frames:
            self._flush_chunk(tk)
        self.open = None

    def _flush_demo(self) -> None:
        if self.demo:
            phases = np.full(len(self.demo), ClipPhase.DEMONSTRATION, np.int8)
            self._clip(DEMO_CLIP_KIND, self.demo, phases, None)
            self.demo = []

    def finish(self) -> list[TakeoverRecord]:
        if self.open is not None:
            self._close()
        self._flush_demo()
        return [_takeover_record(tk) for tk in self.takeovers]


def _takeover_record(tk: _Takeover) -> TakeoverRecord:
    snap = tk.trigger.snapshot
    pose = snap.ego.pose
    policy: PolicyPlan | None = tk.trigger.policy_plan
    expert: ExpertPlan | None = tk.trigger.expert_plan
    assert tk.decision.triggered is not None
    return TakeoverRecord(
        frame=tk.trigger.tick,
        time_s=float(snap.time_s),
        x_m=float(pose.x),
        y_m=float(pose.y),
        speed_mps=float(snap.ego.speed),
        reason=tk.decision.triggered.value,
        severity=dict(tk.decision.severity),
        policy_plan=_plan_rows(policy.xy_ego, policy.speeds_mps) if policy is not None else (),
        expert_plan=_plan_rows(world_to_ego(expert.waypoints, pose), expert.target_speeds)
        if expert is not None
        else (),
        plan_frame="ego",
        yaw_rad=float(pose.yaw),
        scenario_type=_running_scenario(snap),
        handback_frame=tk.handback.tick if tk.handback is not None else None,
        handback_time_s=float(tk.handback.snapshot.time_s) if tk.handback is not None else None,
    )


def _plan_times(
    mode: EpisodeMode, feature_config: PolicyConfig | None, policy: Any, expert: PDMLiteExpert | None
) -> np.ndarray:
    """Waypoint times of the plans stored in clips: the policy's K waypoints."""
    if feature_config is not None:
        m = feature_config.model
        return m.waypoint_dt_s * np.arange(1, m.num_waypoints + 1)
    config = getattr(policy, "config", None)
    model = getattr(config, "model", None)
    if mode is not EpisodeMode.EXPERT and model is not None:
        return model.waypoint_dt_s * np.arange(1, model.num_waypoints + 1)
    if expert is not None:
        cfg = expert.cfg
        return cfg.plan_dt_s * np.arange(1, cfg.plan_points + 1)
    raise EpisodeError("cannot tell the plan times to store: pass feature_config (the policy's config)")


def _check_parts(
    mode: EpisodeMode, policy: Any | None, expert: PDMLiteExpert | None, monitor: TakeoverMonitor | None
) -> None:
    """EpisodeError when `mode` lacks the policy, expert or monitor it drives with."""
    if mode in (EpisodeMode.TAKEOVER, EpisodeMode.POLICY) and policy is None:
        raise EpisodeError(f"episode mode {mode.value!r} needs a policy; pass one (or use mode=expert)")
    if mode in (EpisodeMode.TAKEOVER, EpisodeMode.EXPERT) and expert is None:
        raise EpisodeError(f"episode mode {mode.value!r} needs an expert (experts.expert.PDMLiteExpert)")
    if mode is EpisodeMode.TAKEOVER and monitor is None:
        raise EpisodeError(
            "episode mode 'takeover' needs a TakeoverMonitor; use mode=policy to drive without"
        )


class EpisodeStepper:
    """One closed-loop episode, one tick at a time, for whoever owns the loop.

    `run_episode` owns the loop over a Simulator; the Bench2Drive leaderboard agent cannot (the
    evaluator calls its run_step every tick), so it drives the same stepper from run_step:

        stepper = EpisodeStepper(route, seed, policy, expert, monitor, config, cmap=cmap)
        stepper.start(first_snapshot)
        every tick: control = stepper.tick(snapshot)   # the first tick gets first_snapshot too
        result = stepper.finish(record, events)        # record: the route's leaderboard record

    `tick` is the whole per-tick step (see the module docstring): the shadow expert plans, the policy
    acts, the monitor decides who drives, and the tick enters the ring buffer and the clips. Scoring
    the route (and deciding when it ends) stays with the loop's owner, who passes the record and the
    infraction events to `finish`. The wall clock of the episode starts when the stepper is made.
    """

    def __init__(
        self,
        route: Route,
        seed: int,
        policy: Any | None,
        expert: PDMLiteExpert | None,
        monitor: TakeoverMonitor | None,
        config: EpisodeConfig,
        *,
        tags: EpisodeTags | None = None,
        feature_config: PolicyConfig | None = None,
        cmap: carla.Map | None = None,
        dt_s: float = FIXED_DELTA_S,
    ) -> None:
        """Check the config and the parts the mode needs (EpisodeError); nothing is reset yet.

        `policy` needs `reset(route, cmap, seed)` and `act(snapshot) -> (Control, PolicyPlan)` (the
        takeover.policy.Policy shape). Clip features come from `feature_config` (a PolicyConfig: its
        bev and features sections), else from the policy's own `feature_builder` when it has one, else
        clips carry no feat_* keys. `cmap` is the route's carla.Map (or give it to `start`); `dt_s` the
        simulator's fixed step, which turns the clip windows' seconds into ticks.
        """
        self.mode = validate_episode_config(config)
        _check_parts(self.mode, policy, expert, monitor)
        if not dt_s > 0:
            raise EpisodeError(f"the simulator step dt_s={dt_s} must be > 0 s")
        self.route = route
        self.seed = seed
        self.policy = policy
        self.expert = expert
        self.monitor = monitor
        self.config = config
        self.tags = tags or EpisodeTags()
        self.feature_config = feature_config
        self.cmap = cmap
        self.dt_s = float(dt_s)
        self._wall0 = time.perf_counter()
        self._started_at = datetime.now(UTC)
        self._run: _EpisodeRun | None = None
        self._finished = False
        self._t0 = 0.0
        self._first_frame = 0
        self._last: WorldSnapshot | None = None
        self._last_xy = np.zeros(2)
        self.n_ticks = 0
        self.distance_m = 0.0  # driven by the ego over the snapshots seen so far
        self.expert_distance_m = 0.0  # ... of which under the expert's control
        self._last_driver: Driver | None = None  # who decided the control now being applied

    @property
    def started(self) -> bool:
        return self._run is not None

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds since the stepper was made (the record's duration_system)."""
        return time.perf_counter() - self._wall0

    @property
    def uses_policy(self) -> bool:
        return self.mode is not EpisodeMode.EXPERT

    @property
    def uses_expert(self) -> bool:
        return self.mode is not EpisodeMode.POLICY

    def start(self, snapshot: WorldSnapshot, cmap: carla.Map | None = None) -> None:
        """Reset the policy, expert and monitor for the route; `snapshot` is the episode's first tick."""
        if self._run is not None:
            raise EpisodeError("this episode has already started; make a new EpisodeStepper per episode")
        route = self.route
        if route.dense is None:
            raise EpisodeError(f"route {route.id} has no dense interpolation; plan it before starting")
        cmap = cmap if cmap is not None else self.cmap
        if cmap is None:
            raise EpisodeError("EpisodeStepper.start needs the route's carla.Map: pass cmap=")
        self.cmap = cmap
        mode = self.mode
        if self.uses_policy:
            self.policy.reset(route, cmap, self.seed)
        if self.uses_expert:
            assert self.expert is not None
            self.expert.reset(route, cmap)
        if mode is EpisodeMode.TAKEOVER:
            assert self.monitor is not None
            self.monitor.reset(route, cmap)
        features: FeatureSource | None = None
        if self.config.store_features and mode is not EpisodeMode.POLICY:
            if self.feature_config is not None:
                from takeover.policy.features import FeatureBuilder

                fc = self.feature_config
                features = FeatureBuilder(fc.features, fc.bev, cmap, route.dense)
            elif self.uses_policy and hasattr(self.policy, "feature_builder"):
                features = self.policy.feature_builder
        layout = ClipLayout(  # policy-mode episodes store no clips
            plan_times_s=np.zeros(0)
            if mode is EpisodeMode.POLICY
            else _plan_times(mode, self.feature_config, self.policy, self.expert),
            max_actors=self.config.clip_max_actors,
            actor_radius_m=self.config.clip_actor_radius_m,
            route_margin_m=self.config.clip_route_margin_m,
        )
        self._run = _EpisodeRun(route, mode, self.config, self.dt_s, layout, features)
        self._t0 = float(snapshot.time_s)
        self._first_frame = int(snapshot.frame)
        self._last = snapshot
        self._last_xy = snapshot.ego.pose.xy

    def _advance(self, snapshot: WorldSnapshot) -> None:
        xy = snapshot.ego.pose.xy
        step_m = float(np.hypot(*(xy - self._last_xy)))
        self.distance_m += step_m
        # the way from the last snapshot to this one was driven by the control decided on the last tick
        if self._last_driver is Driver.EXPERT:
            self.expert_distance_m += step_m
        self._last_xy = xy
        self._last = snapshot

    def tick(self, snapshot: WorldSnapshot) -> Control:
        """Decide one tick: the control to apply (the expert's while it has taken over, else the policy's)."""
        run = self._run
        if run is None:
            raise EpisodeError("EpisodeStepper.tick before start(first snapshot)")
        if self._finished:
            raise EpisodeError("EpisodeStepper.tick after finish(); make a new stepper per episode")
        self._advance(snapshot)
        mode = self.mode
        expert = self.expert
        expert_plan = expert.plan(snapshot) if self.uses_expert and expert is not None else None
        policy_control: Control | None = None
        policy_plan = None
        if self.uses_policy:
            policy_control, policy_plan = self.policy.act(snapshot)
        decision: MonitorDecision | None = None
        if mode is EpisodeMode.TAKEOVER:
            assert self.monitor is not None and expert_plan is not None and policy_plan is not None
            decision = self.monitor.update(snapshot, policy_plan, expert_plan)
            driver = decision.driver
        else:
            driver = Driver.EXPERT if mode is EpisodeMode.EXPERT else Driver.POLICY
        if driver is Driver.EXPERT:
            assert expert_plan is not None
            control = expert_plan.control
        else:
            assert policy_control is not None
            control = policy_control
        run.on_tick(TickRecord(self.n_ticks, snapshot, driver, control, policy_plan, expert_plan), decision)
        self._last_driver = driver
        self.n_ticks += 1
        return control

    def finish(
        self,
        record: LeaderboardRecord,
        events: Sequence[InfractionEvent] = (),
        final: WorldSnapshot | None = None,
    ) -> EpisodeResult:
        """Close the open clips and return the episode's records.

        `record` is the route's leaderboard record and `events` its infractions (RouteCriteria.record()
        and .events); `final` the snapshot the route ended on when it was not ticked (the simulator's
        answer to the last control): its time and position count in the episode's duration and distance.
        """
        run = self._run
        if run is None:
            raise EpisodeError("EpisodeStepper.finish before start(first snapshot): nothing was driven")
        if self._finished:
            raise EpisodeError("EpisodeStepper.finish called twice")
        self._finished = True
        if final is not None:
            self._advance(final)
        takeovers = run.finish()
        wall = self.elapsed_s
        assert self._last is not None
        sim_time = float(self._last.time_s) - self._t0
        episode = _episode_record(
            self.route, self.seed, self.tags, self.mode, self.config, record, events, self.distance_m,
            self.expert_distance_m, sim_time, self.n_ticks, run.expert_ticks, self._first_frame, self._started_at,
        )  # fmt: skip
        return EpisodeResult(
            record=record,
            episode=episode,
            takeovers=tuple(takeovers),
            clips=tuple(run.clips),
            distance_m=self.distance_m,
            expert_distance_m=self.expert_distance_m,
            n_ticks=self.n_ticks,
            expert_ticks=run.expert_ticks,
            sim_time_s=sim_time,
            wall_time_s=wall,
        )


def run_episode(
    sim: Simulator,
    route: Route,
    seed: int,
    policy: Any | None,
    expert: PDMLiteExpert | None,
    monitor: TakeoverMonitor | None,
    config: EpisodeConfig,
    *,
    tags: EpisodeTags | None = None,
    feature_config: PolicyConfig | None = None,
    on_tick: Callable[[int, WorldSnapshot], None] | None = None,
    stop: Callable[[WorldSnapshot], bool] | None = None,
) -> EpisodeResult:
    """Drive `route` once (see the module docstring) and return its records.

    The loop over `sim` around an EpisodeStepper (its docstring says what `policy` and
    `feature_config` must be): reset, then tick and step until the route's scoring ends the route,
    `max_time_s` has passed or `stop(snapshot)` is true (a replay that has seen what it came for).
    `on_tick(tick, snapshot)` is called before each tick is decided (progress, instrumentation).
    """
    stepper = EpisodeStepper(
        route, seed, policy, expert, monitor, config, tags=tags, feature_config=feature_config, dt_s=sim.dt
    )
    snap = sim.reset(route, seed)
    stepper.start(snap, sim.map)
    scoring = _Scoring(sim, route)
    t0 = float(snap.time_s)
    final: WorldSnapshot | None = None  # the snapshot the loop stopped on, once stepped to
    while True:
        scoring.update(snap)
        if scoring.criteria.done or (
            config.max_time_s > 0 and snap.time_s - t0 >= config.max_time_s - TIME_EPS_S
        ):
            break
        if stop is not None and stop(snap):
            break
        if on_tick is not None:
            on_tick(stepper.n_ticks, snap)
        snap = final = sim.step(stepper.tick(snap))
    record = scoring.criteria.record(index=0, duration_system_s=stepper.elapsed_s)
    return stepper.finish(record, scoring.criteria.events, final)


def _episode_record(
    route: Route,
    seed: int,
    tags: EpisodeTags,
    mode: EpisodeMode,
    config: EpisodeConfig,
    record: LeaderboardRecord,
    events: Sequence[InfractionEvent],
    distance_m: float,
    expert_distance_m: float,
    sim_time_s: float,
    n_ticks: int,
    expert_ticks: int,
    first_frame: int,
    started: datetime,
) -> EpisodeRecord:
    assert route.dense is not None
    scores: dict[str, float] = {
        "expert_share": expert_ticks / n_ticks if n_ticks else 0.0,
        EXPERT_DISTANCE_KEY: float(expert_distance_m),
    }
    if record.efficiency is not None and math.isfinite(record.efficiency):
        scores["efficiency"] = float(record.efficiency)
    if record.comfort is not None and math.isfinite(record.comfort):
        scores["comfort"] = float(record.comfort)
    infractions = [
        {
            "kind": event.kind.name.lower(),
            "frame": int(event.frame) - first_frame,
            "time_s": float(event.time_s),
            "x_m": float(event.x),
            "y_m": float(event.y),
            "message": event.message,
            "actor_id": int(event.actor_id),
            "value": float(event.value),
        }
        for event in events
    ]
    return EpisodeRecord(
        run=tags.run,
        route=StoredRoute(
            route_id=route.id,
            town=route.town,
            route_set=tags.route_set,
            scenario_types=tuple(s.type for s in route.scenarios),
            length_m=float(route.dense.length_m),
        ),
        backend=config.backend,
        seed=int(seed),
        distance_m=float(distance_m),
        duration_s=float(sim_time_s),
        n_frames=int(n_ticks),
        status=record.status,
        iteration=tags.iteration,
        checkpoint_sha256=tags.checkpoint_sha256 if mode is not EpisodeMode.EXPERT else None,
        phase=tags.phase or MODE_PHASE[mode],
        repetition=tags.repetition,
        driving_score=float(record.scores.score_composed),
        route_completion=float(record.scores.score_route),
        infraction_penalty=float(record.scores.score_penalty),
        success=bool(record.success),
        scores=scores,
        infractions=infractions,
        started_at=started,
        finished_at=datetime.now(UTC),
    )


__all__ = [
    "DEMO_CLIP_KIND",
    "TAKEOVER_CLIP_KIND",
    "EpisodeConfig",
    "EpisodeError",
    "EpisodeMode",
    "EpisodeResult",
    "EpisodeStepper",
    "EpisodeTags",
    "load_episode_config",
    "run_episode",
    "validate_episode_config",
]
