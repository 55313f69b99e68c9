"""`TakeoverMonitor`: decides, every tick, whether the shadow expert must take the wheel from the policy.

Gated DAgger (HG-DAgger / ThriftyDAgger, research/post_training.md): the policy drives while the
privileged expert plans in shadow mode; the monitor compares the two plans with the world and hands
control to the expert when one of these conditions holds (`TakeoverReason`, in priority order):

- predicted_collision: the policy's planned trajectory, swept with the ego box over time, overlaps
  the forecast of another actor (expert forecast models: kinematic bicycle for vehicles, constant
  velocity for walkers) sooner than `collision_ttc_s`, while the expert's plan, checked the same way,
  stays clear at least `collision_expert_margin_s` longer (a collision the expert cannot avoid either
  is no reason to hand it the wheel, and no lesson for the policy: the same test as the red_light
  rule's "while the expert's plan stops before that line");
- red_light: the policy's plan crosses the stop line of a red or yellow light within
  `red_light_max_time_s` while the expert's plan stops before that line;
- stop_sign: the same for the stop line of a stop sign (the expert's plan crosses it only once it
  has stopped there);
- off_route: the ego is farther than `off_route_distance_m` from the route (beyond what the expert's
  own plan deviates, e.g. to pass an obstacle), or its centre is more than `off_lane_margin_m` outside
  the nearest driving lane, for `off_route_min_s`;
- stuck: the ego stands still while the expert's plan wants to move for `stuck_time_s` (the inertia
  problem of cloned policies);
- plan_deviation: the average or final displacement between the two plans stays above
  `deviation_ade_m` / `deviation_fde_m` for `deviation_min_s` (not counted while the stuck
  condition holds: standing while the expert wants to go is the stuck rule's, with its patience).
  A deviation is reported as predicted_collision / red_light / stop_sign instead when the policy's
  plan runs into that hazard anywhere in its horizon (the expert reacts earlier than the immediate
  thresholds: the hazard is the cause, the deviation its symptom). Such a takeover's severity holds
  `deviation_explained: 1`, which tells it apart from the immediate rule (e.g. a predicted_collision
  whose TTC exceeds `collision_ttc_s`).

Hand-back has hysteresis (ThriftyDAgger): the expert keeps control for at least `min_expert_s`, and
until the policy's plan has agreed with the expert's (ADE and FDE below the hand-back thresholds, and
no takeover condition met) for `agree_s` without interruption. With `handback_expert_speed_mps` > 0,
agreement also needs the expert's plan to move (reach that speed): two plans that both stand still
agree trivially, and a policy handed the wheel while the expert waits out a hazard (an oncoming car
invading the lane, a crossing walker) drives off into it a second later, each swing a disengagement.

All geometry lives in pure functions below (numpy, CARLA's world frame, metres, seconds, radians).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import carla
import numpy as np

from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import boxes_overlap, distance_to_polyline
from carla_bridge.snapshot import ActorKind, StopLine, TrafficLightState
from experts.config import EgoModelConfig
from experts.forecast import forecast_vehicles, forecast_walkers, slip_angle

if TYPE_CHECKING:
    from carla_bridge.route import DenseRoute, Route
    from carla_bridge.snapshot import ActorTable, WorldSnapshot
    from experts.expert import ExpertPlan
    from takeover.policy.protocol import PolicyPlan

CONFIG_NAME = "monitor"
MIN_HEADING_STEP_M = 0.05  # plan steps shorter than this keep the previous heading (standing still)
TIME_EPS_S = 1e-9  # tolerance of comparisons between sums of 0.05 s ticks and configured durations
ROUTE_WINDOW_BEHIND_M = 10.0  # route stretch searched for the expert plan's distance: behind the ego ...
ROUTE_WINDOW_AHEAD_M = 80.0  # ... and ahead of it
STOPPING_LIGHTS = (TrafficLightState.RED, TrafficLightState.YELLOW)
DEVIATION_EXPLAINED = "deviation_explained"  # severity key: plan_deviation fired, reported as its hazard
# Forecast model of other vehicles: the expert's kinematic bicycle fit (research/pdm_lite.md).
ACTOR_BICYCLE = EgoModelConfig()
FloatOrArray = float | np.ndarray
BoolOrArray = bool | np.ndarray


class TakeoverReason(StrEnum):
    """Reason codes of a takeover, in priority order (the first met wins when several are)."""

    PREDICTED_COLLISION = "predicted_collision"
    RED_LIGHT = "red_light"
    STOP_SIGN = "stop_sign"
    OFF_ROUTE = "off_route"
    STUCK = "stuck"
    PLAN_DEVIATION = "plan_deviation"


class Driver(StrEnum):
    POLICY = "policy"
    EXPERT = "expert"


class MonitorError(TakeoverError):
    """The monitor is misconfigured or used before `reset(route, cmap)`."""


@dataclass
class MonitorConfig:
    """Every threshold of the takeover monitor (schema of conf/monitor.yaml)."""

    # Reason codes that may trigger a takeover (values of TakeoverReason); others are still measured.
    enabled_reasons: list[str] = field(default_factory=lambda: [r.value for r in TakeoverReason])
    # predicted_collision
    collision_ttc_s: float = 2.0  # trigger when the policy's plan overlaps an actor sooner than this
    # (overlaps are searched over the whole plan horizon: a later one explains a plan_deviation)
    collision_dt_s: float = 0.1  # time step of the swept-box check, s
    collision_radius_m: float = 60.0  # actors farther than this from the ego are not forecast (4 s at 15 m/s)
    collision_margin_long_m: float = 0.3  # added to the ego's half length in the check
    collision_margin_lat_m: float = 0.1  # added to the ego's half width in the check
    collision_ignore_behind: bool = True  # actors whose centre is behind the ego's rear are not checked
    # ... and only if the expert's plan overlaps no actor for at least this much longer, s
    collision_expert_margin_s: float = 0.5
    actor_throttle_accel_mps2: float = 3.5  # forecast acceleration of a vehicle at full throttle
    actor_brake_decel_mps2: float = 8.0  # forecast deceleration of a vehicle at full brake
    actor_max_accel_mps2: float = 1.5  # forecasts never accelerate faster than this
    walker_min_speed_mps: float = 0.0  # standing walkers forecast to start walking at this speed
    # red_light / stop_sign
    red_light_max_time_s: float = 4.0  # the policy's plan crosses a red/yellow stop line within this
    stop_sign_max_time_s: float = 4.0  # ... a stop sign's stop line within this
    stop_line_max_yaw_deg: float = (
        60.0  # a line controls the ego when its lane points within this of the motion
    )
    # off_route
    off_route_distance_m: float = 2.5  # ego distance to the route beyond the expert plan's own offset
    # The expert's plan blends from the ego's own offset back to its intent over this distance
    # (experts obstacles.blend_length_m); its offset from the route is read beyond it.
    expert_blend_m: float = 8.0
    off_lane_margin_m: float = 0.5  # ego centre this far outside the nearest driving lane's edge
    off_route_min_s: float = 0.25  # the condition must hold this long
    # stuck
    stuck_speed_mps: float = 0.3  # the ego counts as standing below this speed
    stuck_expert_speed_mps: float = 2.0  # ... while the expert's plan reaches at least this speed
    stuck_time_s: float = 3.0  # ... for this long
    # plan_deviation
    deviation_ade_m: float = 3.0  # average displacement between the plans above this ...
    deviation_fde_m: float = 6.0  # ... or final displacement above this ...
    deviation_min_s: float = 1.0  # ... for this long
    # hand-back (hysteresis)
    min_expert_s: float = 2.0  # the expert drives at least this long after a takeover
    agree_s: float = 1.0  # the plans must agree this long without interruption to hand back
    handback_ade_m: float = 1.5  # agreement: average displacement below this ...
    handback_fde_m: float = 3.0  # ... and final displacement below this
    handback_expert_speed_mps: float = 0.0  # ... while the expert plans to reach this speed (0: any)


def load_monitor_config(overrides: list[str] | None = None) -> MonitorConfig:
    """MonitorConfig from its defaults, conf/monitor.yaml and dotlist overrides, validated."""
    config = load_config(MonitorConfig, CONFIG_NAME, overrides)
    validate_monitor_config(config)
    return config


def validate_monitor_config(config: MonitorConfig) -> None:
    """Raise MonitorError naming the first bad value."""
    known = {r.value for r in TakeoverReason}
    unknown = [r for r in config.enabled_reasons if r not in known]
    if unknown:
        raise MonitorError(
            f"monitor.enabled_reasons has unknown reason(s) {unknown}; use some of {sorted(known)}"
        )
    positive = ("collision_dt_s", "collision_ttc_s", "collision_radius_m")
    for name in positive:
        if getattr(config, name) <= 0:
            raise MonitorError(f"monitor.{name}={getattr(config, name)} must be > 0")
    non_negative = (
        "collision_margin_long_m", "collision_margin_lat_m", "collision_expert_margin_s",
        "red_light_max_time_s", "stop_sign_max_time_s",
        "off_route_distance_m", "off_lane_margin_m", "off_route_min_s", "stuck_speed_mps",
        "stuck_expert_speed_mps", "stuck_time_s", "deviation_ade_m", "deviation_fde_m", "deviation_min_s",
        "min_expert_s", "agree_s", "handback_ade_m", "handback_fde_m", "handback_expert_speed_mps",
        "walker_min_speed_mps", "expert_blend_m",
    )  # fmt: skip
    for name in non_negative:
        if getattr(config, name) < 0:
            raise MonitorError(f"monitor.{name}={getattr(config, name)} must be >= 0")
    if config.handback_ade_m > config.deviation_ade_m or config.handback_fde_m > config.deviation_fde_m:
        raise MonitorError(
            "monitor hand-back thresholds must not exceed the plan_deviation ones (handback_ade_m <= "
            f"deviation_ade_m, handback_fde_m <= deviation_fde_m), got {config.handback_ade_m}/"
            f"{config.deviation_ade_m} and {config.handback_fde_m}/{config.deviation_fde_m}"
        )


@dataclass(frozen=True)
class MonitorDecision:
    """The monitor's verdict on one tick."""

    driver: Driver  # who drives this tick
    triggered: TakeoverReason | None  # set on the tick the expert takes over
    handed_back: bool  # True on the tick control returns to the policy
    reason: TakeoverReason | None  # why the expert drives (the running takeover's reason), else None
    active: tuple[TakeoverReason, ...]  # conditions met on this tick (persistence included), by priority
    severity: dict[str, float]  # finite figures of this tick: ttc_s, ade_m, fde_m, route_distance_m, ...


# ---------------------------------------------------------------------------------------- geometry
def plan_positions(
    times_s: np.ndarray, xy: np.ndarray, origin_xy: np.ndarray, query_s: np.ndarray
) -> np.ndarray:
    """Positions (Q, 2) of a plan at `query_s`, linear in time between its waypoints.

    The plan starts at `origin_xy` at t = 0; waypoint k is reached at times_s[k]. Queries past the last
    waypoint hold it: p(t) = p_k + (t - t_k) / (t_{k+1} - t_k) (p_{k+1} - p_k).
    """
    t = np.concatenate([[0.0], np.asarray(times_s, dtype=float)])
    pts = np.vstack([np.asarray(origin_xy, dtype=float)[None, :2], np.asarray(xy, dtype=float)[:, :2]])
    return np.stack([np.interp(query_s, t, pts[:, 0]), np.interp(query_s, t, pts[:, 1])], axis=-1)


def path_headings(xy: np.ndarray, yaw0: float, min_step_m: float = MIN_HEADING_STEP_M) -> np.ndarray:
    """Heading (T,) of motion along points (T, 2) that follow a start with heading yaw0.

    psi_k = atan2(y_k - y_{k-1}, x_k - x_{k-1}) over each step (the first from the start, p_0 = xy[0]
    itself gives psi_0 = yaw0); a step shorter than `min_step_m` keeps the previous heading.
    """
    n = len(xy)
    out = np.empty(n)
    if n == 0:
        return out
    d = np.diff(xy, axis=0)
    step = np.hypot(d[:, 0], d[:, 1])
    heading = np.arctan2(d[:, 1], d[:, 0])
    current = float(yaw0)
    out[0] = current
    for k in range(1, n):
        if step[k - 1] >= min_step_m:
            current = float(heading[k - 1])
        out[k] = current
    return out


def plan_displacement(a_xy: np.ndarray, b_xy: np.ndarray) -> tuple[float, float]:
    """(ADE, FDE) of two plans sampled at the same times: mean and last of |a_k - b_k|."""
    if len(a_xy) == 0:
        return 0.0, 0.0
    d = np.hypot(a_xy[:, 0] - b_xy[:, 0], a_xy[:, 1] - b_xy[:, 1])
    return float(d.mean()), float(d[-1])


def plans_agree(ade_m: FloatOrArray, fde_m: FloatOrArray, config: MonitorConfig) -> BoolOrArray:
    """The plans are close enough for a hand-back: ADE <= handback_ade_m and FDE <= handback_fde_m
    (floats, or arrays of ticks elementwise)."""
    return (ade_m <= config.handback_ade_m) & (fde_m <= config.handback_fde_m)


def plans_deviate(ade_m: FloatOrArray, fde_m: FloatOrArray, config: MonitorConfig) -> BoolOrArray:
    """The plans differ as plan_deviation counts: ADE > deviation_ade_m or FDE > deviation_fde_m
    (floats, or arrays of ticks elementwise)."""
    return (ade_m > config.deviation_ade_m) | (fde_m > config.deviation_fde_m)


def forecast_actor_boxes(
    actors: ActorTable, rows: np.ndarray, dt_s: float, steps: int, config: MonitorConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forecast centres and headings (N, T) of actors `rows` at t = 0, dt, ..., (steps - 1) dt.

    Vehicles and bicycles hold the curvature of their steer (kappa = sin(beta) / l_r with the bicycle
    slip angle beta) and the acceleration of their pedals (a = throttle a_t - brake b, capped), as the
    expert's forecast does for actors whose history is unknown; walkers keep their velocity; statics
    stay. t = 0 is the actors' current pose.
    """
    n = len(rows)
    x = np.repeat(actors.xyz[rows, 0:1], steps, axis=1)
    y = np.repeat(actors.xyz[rows, 1:2], steps, axis=1)
    yaw = np.repeat(actors.yaw[rows, None], steps, axis=1)
    if n == 0 or steps < 2:
        return x, y, yaw
    kind = actors.kind[rows]
    vehicle = (kind == ActorKind.VEHICLE) | (kind == ActorKind.BICYCLE)
    if vehicle.any():
        r = rows[vehicle]
        control = actors.control[r].astype(float)
        has = ~np.isnan(control[:, 0])
        steer = np.where(has, np.nan_to_num(control[:, 1]), 0.0)
        beta = np.asarray(slip_angle(steer, ACTOR_BICYCLE))
        curvature = np.sin(beta) / ACTOR_BICYCLE.rear_axle_m
        accel = np.where(
            has,
            np.nan_to_num(control[:, 0]) * config.actor_throttle_accel_mps2
            - np.nan_to_num(control[:, 2]) * config.actor_brake_decel_mps2,
            0.0,
        )
        accel = np.clip(accel, -config.actor_brake_decel_mps2, config.actor_max_accel_mps2)
        tr = forecast_vehicles(
            actors.xyz[r, 0], actors.xyz[r, 1], actors.yaw[r], np.abs(actors.speed[r]), curvature, beta, accel,
            dt_s, steps - 1,
        )  # fmt: skip
        x[vehicle, 1:], y[vehicle, 1:], yaw[vehicle, 1:] = tr.x, tr.y, tr.yaw
    walker = kind == ActorKind.WALKER
    if walker.any():
        r = rows[walker]
        tr = forecast_walkers(
            actors.xyz[r, 0], actors.xyz[r, 1], actors.yaw[r], actors.velocity[r], config.walker_min_speed_mps,
            dt_s, steps - 1,
        )  # fmt: skip
        x[walker, 1:], y[walker, 1:], yaw[walker, 1:] = tr.x, tr.y, tr.yaw
    return x, y, yaw


def first_overlap_time(
    times_s: np.ndarray,
    ego_xy: np.ndarray,
    ego_yaw: np.ndarray,
    ego_half: tuple[float, float],
    actor_x: np.ndarray,
    actor_y: np.ndarray,
    actor_yaw: np.ndarray,
    actor_half: np.ndarray,
) -> tuple[float, int]:
    """(earliest time at which the ego box overlaps an actor box, that actor's index); (inf, -1) if never.

    Ego boxes (T,) at `ego_xy`/`ego_yaw` with half extents ego_half = (l, w); actor boxes (N, T) with
    half extents actor_half (N, 2); overlap by separating axes (carla_bridge.geometry.boxes_overlap).
    """
    if actor_x.shape[0] == 0 or len(times_s) == 0:
        return math.inf, -1
    hit = boxes_overlap(
        ego_xy[None, :, 0], ego_xy[None, :, 1], ego_yaw[None, :], ego_half[0], ego_half[1],
        actor_x, actor_y, actor_yaw, actor_half[:, 0:1], actor_half[:, 1:2],
    )  # fmt: skip
    any_t = hit.any(axis=0)
    if not any_t.any():
        return math.inf, -1
    k = int(np.argmax(any_t))
    return float(times_s[k]), int(np.argmax(hit[:, k]))


def stop_line_crossing_time(
    times_s: np.ndarray, front_xy: np.ndarray, line: StopLine, max_yaw_rad: float
) -> float:
    """Time at which a path of front-bumper points crosses a stop line in its lane's direction, else inf.

    `front_xy` (T+1, 2) holds the front bumper now (t = 0) and at `times_s` (T,). The line is the
    segment c +- (w / 2) n, n = (-sin psi_l, cos psi_l), across the lane of direction psi_l. A step
    p_k -> p_{k+1} crosses it when both lie on opposite sides of the line (signed distance along
    u = (cos psi_l, sin psi_l) goes from < 0 to >= 0), the crossing point lies within the lane width,
    and the step's heading is within `max_yaw_rad` of psi_l; the time is interpolated linearly.
    """
    t = np.concatenate([[0.0], np.asarray(times_s, dtype=float)])
    ux, uy = math.cos(line.yaw), math.sin(line.yaw)
    dx = front_xy[:, 0] - line.x
    dy = front_xy[:, 1] - line.y
    along = dx * ux + dy * uy
    across = -dx * uy + dy * ux
    before, after = along[:-1], along[1:]
    crossing = (before < 0.0) & (after >= 0.0)
    if not crossing.any():
        return math.inf
    cos_max = math.cos(max_yaw_rad)
    for k in np.flatnonzero(crossing):
        w = float(-before[k] / (after[k] - before[k]))
        lateral = float(across[k] + w * (across[k + 1] - across[k]))
        step = front_xy[k + 1] - front_xy[k]
        length = math.hypot(float(step[0]), float(step[1]))
        if length <= 0.0 or abs(lateral) > 0.5 * line.width:
            continue
        if (float(step[0]) * ux + float(step[1]) * uy) / length < cos_max:
            continue
        return float(t[k] + w * (t[k + 1] - t[k]))
    return math.inf


def front_points(xy: np.ndarray, yaw: np.ndarray, half_length: float) -> np.ndarray:
    """Front-bumper points (T, 2) of boxes centred at xy (T, 2) heading yaw (T,): c + l (cos, sin)."""
    return xy + half_length * np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)


# ---------------------------------------------------------------------------------------- the monitor
@dataclass
class _Checks:
    """Raw conditions of one tick (before persistence) and their figures."""

    met: dict[TakeoverReason, bool]
    severity: dict[str, float]
    ade_m: float
    fde_m: float
    causes: tuple[TakeoverReason, ...]  # hazards anywhere in the policy's plan, by priority
    expert_max_speed_mps: float  # the fastest target speed of the expert's plan


class TakeoverMonitor:
    """`reset(route, cmap)` once per episode, then `update(snapshot, policy_plan, expert_plan)` per tick."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config if config is not None else load_monitor_config()
        validate_monitor_config(self.config)
        self._enabled = frozenset(TakeoverReason(r) for r in self.config.enabled_reasons)
        self._dense: DenseRoute | None = None
        self._cmap: carla.Map | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.driver = Driver.POLICY
        self.reason: TakeoverReason | None = None
        self._expert_since: float | None = None
        self._agree_since: float | None = None
        self._since: dict[TakeoverReason, float | None] = dict.fromkeys(TakeoverReason)

    def reset(self, route: Route, cmap: carla.Map) -> None:
        if route.dense is None or len(route.dense) == 0:
            raise MonitorError(f"route {route.id} has no dense interpolation; plan it before monitoring it")
        self._dense = route.dense
        self._cmap = cmap
        self._reset_state()

    # ------------------------------------------------------------------------------ per tick
    def update(
        self, snapshot: WorldSnapshot, policy_plan: PolicyPlan, expert_plan: ExpertPlan
    ) -> MonitorDecision:
        if self._dense is None or self._cmap is None:
            raise MonitorError("TakeoverMonitor.reset(route, cmap) must be called before update()")
        now = float(snapshot.time_s)
        checks = self._checks(snapshot, policy_plan, expert_plan)
        active = self._persist(checks.met, now, checks.severity)
        triggered: TakeoverReason | None = None
        handed_back = False
        if self.driver is Driver.POLICY:
            enabled = [r for r in active if r in self._enabled]
            if enabled:
                triggered = enabled[0]
                if triggered is TakeoverReason.PLAN_DEVIATION:
                    # A deviation the policy's plan explains (it runs into an actor, a red light or a stop
                    # sign, later than the immediate thresholds) is reported as that hazard.
                    explained = [r for r in checks.causes if r in self._enabled]
                    if explained:
                        triggered = explained[0]
                        checks.severity[DEVIATION_EXPLAINED] = 1.0
                self.driver, self.reason = Driver.EXPERT, triggered
                self._expert_since, self._agree_since = now, None
        else:
            cfg = self.config
            agree = (
                plans_agree(checks.ade_m, checks.fde_m, cfg)
                and not any(checks.met[r] for r in self._enabled)
                and checks.expert_max_speed_mps >= cfg.handback_expert_speed_mps
            )
            self._agree_since = (
                (self._agree_since if self._agree_since is not None else now) if agree else None
            )
            assert self._expert_since is not None
            if (
                self._agree_since is not None
                and now - self._expert_since >= cfg.min_expert_s - TIME_EPS_S
                and now - self._agree_since >= cfg.agree_s - TIME_EPS_S
            ):
                handed_back = True
                self.driver, self.reason = Driver.POLICY, None
                self._expert_since = self._agree_since = None
                self._since = dict.fromkeys(TakeoverReason)  # no stale streak re-triggers at once
        severity = {k: float(v) for k, v in checks.severity.items() if math.isfinite(v)}
        return MonitorDecision(self.driver, triggered, handed_back, self.reason, active, severity)

    def _persist(
        self, met: dict[TakeoverReason, bool], now: float, severity: dict[str, float]
    ) -> tuple[TakeoverReason, ...]:
        """Conditions that have held long enough: streak start times per reason, min durations per config."""
        cfg = self.config
        needed = {
            TakeoverReason.OFF_ROUTE: cfg.off_route_min_s,
            TakeoverReason.STUCK: cfg.stuck_time_s,
            TakeoverReason.PLAN_DEVIATION: cfg.deviation_min_s,
        }
        active = []
        for reason in TakeoverReason:
            if not met[reason]:
                self._since[reason] = None
                continue
            since = self._since[reason]
            if since is None:
                since = self._since[reason] = now
            held = now - since
            if reason is TakeoverReason.STUCK:
                severity["stuck_s"] = held
            if held >= needed.get(reason, 0.0) - TIME_EPS_S:
                active.append(reason)
        return tuple(active)

    def _checks(self, snapshot: WorldSnapshot, policy: PolicyPlan, expert: ExpertPlan) -> _Checks:
        cfg = self.config
        ego = snapshot.ego
        pose = ego.pose
        ego_xy = np.array([pose.x, pose.y])
        hl = float(ego.extent[0])

        # Both plans on the policy's time grid (the expert's resampled; horizon = the shorter one).
        p_times = np.asarray(policy.times_s, dtype=float)
        e_times = expert.dt_s * np.arange(1, len(expert.waypoints) + 1)
        common = p_times[p_times <= (e_times[-1] if len(e_times) else 0.0) + TIME_EPS_S]
        p_common = plan_positions(p_times, policy.xy_world, ego_xy, common)
        e_common = plan_positions(e_times, expert.waypoints, ego_xy, common)
        ade, fde = plan_displacement(p_common, e_common)
        severity: dict[str, float] = {"ade_m": ade, "fde_m": fde, "speed_mps": float(ego.speed)}

        met = dict.fromkeys(TakeoverReason, False)

        ttc, expert_plan_ttc = self._times_to_collision(
            snapshot, ((p_times, policy.xy_world), (e_times, expert.waypoints)), ego_xy
        )
        if math.isfinite(ttc):
            severity["ttc_s"] = ttc
        if math.isfinite(expert_plan_ttc):
            severity["expert_plan_ttc_s"] = expert_plan_ttc
        if math.isfinite(expert.hazard.time_to_collision_s):
            severity["expert_ttc_s"] = float(expert.hazard.time_to_collision_s)
        # A collision counts against the policy only where the expert's plan avoids it (or meets it later).
        avoidable = expert_plan_ttc > ttc + cfg.collision_expert_margin_s
        met[TakeoverReason.PREDICTED_COLLISION] = ttc < cfg.collision_ttc_s and avoidable

        # Front-bumper paths of both plans, starting at the ego's bumper now.
        p_path = np.vstack([ego_xy[None], np.asarray(policy.xy_world, dtype=float)[:, :2]])
        e_path = np.vstack([ego_xy[None], np.asarray(expert.waypoints, dtype=float)[:, :2]])
        p_front = front_points(p_path, path_headings(p_path, pose.yaw), hl)
        e_front = front_points(e_path, path_headings(e_path, pose.yaw), hl)
        max_yaw = math.radians(cfg.stop_line_max_yaw_deg)
        lines = [
            line
            for light in snapshot.traffic_lights
            if light.state in STOPPING_LIGHTS
            for line in light.stop_lines
        ]
        t_red = _first_run_line(lines, p_times, p_front, e_times, e_front, max_yaw)
        if math.isfinite(t_red):
            severity["red_light_cross_s"] = t_red
        met[TakeoverReason.RED_LIGHT] = t_red <= cfg.red_light_max_time_s
        signs = [line for sign in snapshot.stop_signs for line in sign.stop_lines]
        t_stop = _first_run_line(signs, p_times, p_front, e_times, e_front, max_yaw)
        if math.isfinite(t_stop):
            severity["stop_sign_cross_s"] = t_stop
        met[TakeoverReason.STOP_SIGN] = t_stop <= cfg.stop_sign_max_time_s

        route_d = float(snapshot.route.distance_to_route)
        allowance = self._expert_route_offset(snapshot, expert)
        outside = self._outside_lane_m(pose.x, pose.y, pose.z)
        severity["route_distance_m"] = route_d
        severity["outside_lane_m"] = outside
        met[TakeoverReason.OFF_ROUTE] = (
            route_d > cfg.off_route_distance_m + allowance or outside > cfg.off_lane_margin_m
        )

        expert_max = float(np.max(expert.target_speeds)) if len(expert.target_speeds) else 0.0
        met[TakeoverReason.STUCK] = (
            abs(float(ego.speed)) < cfg.stuck_speed_mps and expert_max >= cfg.stuck_expert_speed_mps
        )
        # Standing while the expert wants to go is the stuck rule's case, with its own patience: the
        # plans differ then by construction, so plan_deviation must not pre-empt it.
        met[TakeoverReason.PLAN_DEVIATION] = not met[TakeoverReason.STUCK] and plans_deviate(ade, fde, cfg)
        causes = tuple(
            reason
            for reason, time_s in (
                (TakeoverReason.PREDICTED_COLLISION, ttc if avoidable else math.inf),
                (TakeoverReason.RED_LIGHT, t_red),
                (TakeoverReason.STOP_SIGN, t_stop),
            )
            if math.isfinite(time_s)
        )
        return _Checks(met, severity, ade, fde, causes, expert_max)

    def _times_to_collision(
        self, snapshot: WorldSnapshot, plans: tuple[tuple[np.ndarray, np.ndarray], ...], ego_xy: np.ndarray
    ) -> tuple[float, ...]:
        """First overlap time of each plan (waypoint times, world xy) with the forecast actors, inf if none;
        the actors are forecast once, over the longest plan (at least `collision_ttc_s`)."""
        cfg = self.config
        actors = snapshot.actors
        never = tuple(math.inf for _ in plans)
        if not len(actors):
            return never
        pose = snapshot.ego.pose
        d = actors.xyz[:, :2] - ego_xy
        near = (d[:, 0] ** 2 + d[:, 1] ** 2) < cfg.collision_radius_m**2
        if cfg.collision_ignore_behind:
            forward = d[:, 0] * math.cos(pose.yaw) + d[:, 1] * math.sin(pose.yaw)
            near &= forward > -float(snapshot.ego.extent[0])
        rows = np.flatnonzero(near)
        if not len(rows):
            return never
        # Each plan is checked over its own horizon (at least collision_ttc_s, holding its last waypoint).
        horizons = [max(cfg.collision_ttc_s, float(np.max(t, initial=0.0))) for t, _ in plans]
        counts = [math.floor(h / cfg.collision_dt_s + TIME_EPS_S) + 1 for h in horizons]
        times = cfg.collision_dt_s * np.arange(max(counts))
        ax, ay, ayaw = forecast_actor_boxes(actors, rows, cfg.collision_dt_s, len(times), cfg)
        half = (
            float(snapshot.ego.extent[0]) + cfg.collision_margin_long_m,
            float(snapshot.ego.extent[1]) + cfg.collision_margin_lat_m,
        )
        out = []
        for (plan_times, plan_xy), n in zip(plans, counts, strict=True):
            path = plan_positions(plan_times, np.asarray(plan_xy, dtype=float), ego_xy, times[:n])
            yaw = path_headings(path, pose.yaw)
            ttc, _ = first_overlap_time(
                times[:n], path, yaw, half, ax[:, :n], ay[:, :n], ayaw[:, :n], actors.extent[rows, :2]
            )
            out.append(ttc)
        return tuple(out)

    def _expert_route_offset(self, snapshot: WorldSnapshot, expert: ExpertPlan) -> float:
        """How far from the route the expert means to drive (passing an obstacle, yielding), m: the
        largest route distance of its waypoints past `expert_blend_m` along the plan (else its last)."""
        dense = self._dense
        assert dense is not None
        points = np.asarray(expert.waypoints, dtype=float)[:, :2]
        if not len(points):
            return 0.0
        path = np.vstack([[snapshot.ego.pose.x, snapshot.ego.pose.y], points])
        along = np.cumsum(np.hypot(*np.diff(path, axis=0).T))
        beyond = along >= self.config.expert_blend_m
        points = points[beyond] if beyond.any() else points[-1:]
        i = int(np.clip(snapshot.route.index, 0, len(dense) - 1))
        s = dense.s
        lo = int(np.searchsorted(s, s[i] - ROUTE_WINDOW_BEHIND_M, side="left"))
        hi = int(np.searchsorted(s, s[i] + ROUTE_WINDOW_AHEAD_M, side="right"))
        window = dense.xyz[lo : max(hi, lo + 1), :2]
        return float(distance_to_polyline(points, window).max())

    def _outside_lane_m(self, x: float, y: float, z: float) -> float:
        """How far the point lies beyond the edge of the nearest driving lane (0 inside it), m."""
        assert self._cmap is not None
        wp = self._cmap.get_waypoint(
            carla.Location(x=x, y=y, z=z), project_to_road=True, lane_type=carla.LaneType.Driving
        )
        if wp is None:
            return math.inf
        loc = wp.transform.location
        return max(0.0, math.hypot(x - loc.x, y - loc.y) - 0.5 * float(wp.lane_width))


def _first_run_line(
    lines: list[StopLine],
    p_times: np.ndarray,
    p_front: np.ndarray,
    e_times: np.ndarray,
    e_front: np.ndarray,
    max_yaw: float,
) -> float:
    """Earliest time the policy's plan crosses one of `lines` that the expert's plan does not cross."""
    best = math.inf
    for line in lines:
        t_policy = stop_line_crossing_time(p_times, p_front, line, max_yaw)
        if t_policy < best and not math.isfinite(stop_line_crossing_time(e_times, e_front, line, max_yaw)):
            best = t_policy
    return best


__all__ = [
    "DEVIATION_EXPLAINED",
    "TIME_EPS_S",
    "Driver",
    "MonitorConfig",
    "MonitorDecision",
    "MonitorError",
    "TakeoverMonitor",
    "TakeoverReason",
    "first_overlap_time",
    "forecast_actor_boxes",
    "load_monitor_config",
    "plan_displacement",
    "plan_positions",
    "plans_agree",
    "plans_deviate",
    "stop_line_crossing_time",
]
