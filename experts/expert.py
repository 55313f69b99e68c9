"""The PDM-Lite-style privileged expert: reads a WorldSnapshot and the map, returns control and plan.

One tick:
1. follow the ego along the prepared path (never backwards) and project nearby actors on it;
2. lateral plan (experts.obstacles): offsets around blocked lanes, aside for emergency vehicles;
3. allowed speed (speed limit fraction, curves, junctions) and IDM against every hazard measured
   along the planned path: in-path actors, red/yellow lights, stop signs, where to wait;
4. forecast check: the ego rolled forward with its bicycle model and controller against vehicle and
   walker forecasts; on a predicted overlap the mildest of a few braking levels that avoids it
   (or a stop at the junction entry, or a full brake) replaces the IDM result;
5. heading PID to the aim point, speed tracking to the target; the plan (waypoints every 0.5 s with
   speeds, the reason that limits the speed, the hazard forecast) is returned with the control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import carla
import numpy as np

from carla_bridge.geometry import boxes_overlap
from carla_bridge.route import Route
from carla_bridge.simulator import FIXED_DELTA_S
from carla_bridge.snapshot import ActorKind, Control, TrafficLightState, WorldSnapshot
from experts.config import ExpertConfig, IDMHazardParams, load_expert_config
from experts.controllers import LateralPID, LongitudinalController, aim_distance
from experts.errors import ExpertError
from experts.forecast import (
    distances_from_speeds,
    forecast_along_route,
    forecast_vehicles,
    forecast_walkers,
    resample_by_distance,
    rollout_ego_on_path,
    slip_angle,
    speed_profiles,
)
from experts.idm import closing_acceleration, comfort_decel_for_speed, idm_acceleration, required_decel
from experts.obstacles import EgoOnRoute, LateralPlan, ObstaclePlanner, lane_change_blocker
from experts.route_prep import (
    PreparedRoute,
    RouteTracker,
    SpeedCap,
    allowed_speed_profile,
    cosine_ramp,
    prepare_route,
)
from experts.scene import RouteFrameActors, project_actors
from experts.tracking import ActorHistory, ActorKinematics

BEHIND_WINDOW_M = 30.0  # actors this far behind the ego (along the path) are still projected
MAX_PROJECT_LATERAL_M = 12.0  # and within this of the path
EGO_PROJECT_WINDOW = 30  # path points around the tracked index used to project the ego precisely
PLAN_MARGIN_M = 20.0  # extra path beyond the plan's reach
ACCEL_EPS_MPS2 = 1e-6  # accelerations closer than this are the same decision


class Reason(StrEnum):
    """What limits the expert's speed on this tick."""

    CRUISE = "cruise"
    SPEED_LIMIT = "speed_limit"
    CURVE = "curve"
    JUNCTION = "junction"
    LEADING_VEHICLE = "leading_vehicle"
    RED_LIGHT = "red_light"
    STOP_SIGN = "stop_sign"
    PEDESTRIAN = "pedestrian"
    BICYCLE = "bicycle"
    OBSTACLE = "obstacle"
    FORECAST_COLLISION = "forecast_collision"
    EMERGENCY_VEHICLE = "emergency_vehicle"
    OVERTAKE_WAIT = "overtake_wait"
    LANE_CHANGE = "lane_change"  # waiting for the target lane of the route's lane change to clear


_CAP_REASON = {
    SpeedCap.BASE: Reason.CRUISE,
    SpeedCap.SPEED_LIMIT: Reason.SPEED_LIMIT,
    SpeedCap.CURVE: Reason.CURVE,
    SpeedCap.JUNCTION: Reason.JUNCTION,
}


@dataclass(frozen=True)
class HazardForecast:
    """The forecast check of one tick."""

    actor_id: int  # actor of the first predicted overlap, -1 when none
    time_to_collision_s: float  # time of that overlap under the nominal plan (inf when none)
    ego_forecast: np.ndarray  # (T, 3) x, y, yaw of the nominal ego forecast at dt, 2 dt, ...
    dt_s: float
    brake_decel_mps2: float  # deceleration chosen to avoid it (0 when none)


@dataclass(frozen=True)
class ExpertPlan:
    control: Control
    waypoints: np.ndarray  # (N, 2) world x, y every `dt_s` from now (first at dt_s)
    target_speeds: np.ndarray  # (N,) planned speed at each waypoint, m/s
    target_speed: float  # what the longitudinal controller tracks now, m/s
    reason: Reason
    reason_actor_id: int  # actor behind the reason (-1 for lights, limits, ...)
    hazard: HazardForecast
    lateral_offset_m: float  # planned offset from the route at the ego (right positive)
    dt_s: float = 0.5


@dataclass
class _Hazards:
    """IDM rows gathered on one tick."""

    gap: list[float]
    v_lead: list[float]
    s0: list[float]
    headway: list[float]
    reason: list[Reason]
    actor: list[int]
    is_line: list[bool]

    @staticmethod
    def empty() -> _Hazards:
        return _Hazards([], [], [], [], [], [], [])

    def add(
        self,
        gap: float,
        v_lead: float,
        p: IDMHazardParams,
        reason: Reason,
        actor: int = -1,
        line: bool = False,
    ) -> None:
        self.gap.append(gap)
        self.v_lead.append(v_lead)
        self.s0.append(p.min_gap_m)
        self.headway.append(p.headway_s)
        self.reason.append(reason)
        self.actor.append(actor)
        self.is_line.append(line)


class PDMLiteExpert:
    """Agent protocol (carla_bridge.agent.Agent): reset(route, cmap), run_step(snapshot) -> Control."""

    name = "expert"

    def __init__(self, config: ExpertConfig | None = None) -> None:
        self.cfg = config or load_expert_config()
        self.dt = FIXED_DELTA_S
        self.lateral = LateralPID(self.cfg.lateral)
        self.longitudinal = LongitudinalController(self.cfg.longitudinal, self.dt)
        self.obstacles = ObstaclePlanner(self.cfg.obstacles, self.cfg.hazards)
        self.history = ActorHistory(self.cfg.forecast.standing_speed_mps)
        self.route: PreparedRoute | None = None
        self.tracker: RouteTracker | None = None
        self.last_plan: ExpertPlan | None = None  # the latest plan (videos and tools overlay it)
        self._allowed = np.zeros(0)
        self._allowed_cause = np.zeros(0, np.int8)
        self._reset_state()

    def _reset_state(self) -> None:
        self.last_plan = None
        self._stop_lines: dict[tuple[str, int, int], float | None] = {}
        self._served_stop: dict[int, float] = {}  # stop sign id -> s of its line when served
        self._yellow_go: dict[int, bool] = {}  # light id -> decision taken at the onset of yellow
        self._standstill_s = 0.0
        self._lane_change_wait_s = 0.0
        self._last_reason = Reason.CRUISE
        self._last_actor = -1

    # ------------------------------------------------------------------ Agent protocol
    def reset(self, route: Route, cmap: carla.Map) -> None:
        self.route = prepare_route(route, cmap, self.cfg.route, self.cfg.speed)
        self.tracker = RouteTracker(self.route, self.cfg.route)
        self._allowed, self._allowed_cause = allowed_speed_profile(self.route, self.cfg.speed)
        self.lateral.reset()
        self.longitudinal.reset()
        self.obstacles.reset()
        self.history.reset()
        self._reset_state()

    def run_step(self, snapshot: WorldSnapshot) -> Control:
        return self.plan(snapshot).control

    # ------------------------------------------------------------------ one tick
    def plan(self, snapshot: WorldSnapshot) -> ExpertPlan:
        if self.route is None or self.tracker is None:
            raise ExpertError(
                "the expert has no route: call PDMLiteExpert.reset(route, cmap) before plan()/run_step()"
            )
        cfg, route = self.cfg, self.route
        ego = snapshot.ego
        x, y, yaw = ego.pose.x, ego.pose.y, ego.pose.yaw
        v = max(float(ego.speed), 0.0)
        hl, hw = float(ego.extent[0]), float(ego.extent[1])

        hint = (
            float(route.dense_s[min(snapshot.route.index, len(route.dense_s) - 1)])
            if len(route.dense_s)
            else None
        )
        idx = self.tracker.update(x, y, hint)
        s_arr, d_arr, _ = route.project(
            np.array([[x, y]]), idx - EGO_PROJECT_WINDOW, idx + EGO_PROJECT_WINDOW, 1
        )
        s_e, d_e = float(s_arr[0]), float(d_arr[0])
        ego_r = EgoOnRoute(s_e, d_e, v, hl, hw)

        kin = self.history.update(snapshot.actors, snapshot.time_s)
        actors = snapshot.actors
        rows = np.zeros(0, np.int64)
        if len(actors):
            d2 = (actors.xyz[:, 0] - x) ** 2 + (actors.xyz[:, 1] - y) ** 2
            reach = max(cfg.hazards.lookahead_m, cfg.obstacles.lookahead_m, cfg.forecast.radius_m)
            rows = np.flatnonzero(d2 < reach**2)
        i0 = route.index_at(s_e - BEHIND_WINDOW_M)
        i1 = route.index_at(s_e + max(cfg.hazards.lookahead_m, cfg.obstacles.lookahead_m))
        frame, rows = project_actors(
            route, actors, rows, kin.standing_s, i0, i1, MAX_PROJECT_LATERAL_M, cfg.hazards.max_level_gap_m
        )

        cruise = float(self._allowed[idx])
        lat = self.obstacles.plan(route, frame, ego_r, cruise, self._deadlocked(frame))

        # Planned path window: route + lateral offsets, blended from where the ego actually is.
        reach_m = (
            max(cfg.hazards.lookahead_m, cfg.speed.max_speed_mps * cfg.plan_dt_s * cfg.plan_points)
            + PLAN_MARGIN_M
        )
        w0 = route.index_at(s_e - 2.0)
        w1 = route.index_at(s_e + reach_m) + 1
        s_win = route.s0_m + np.arange(w0, w1) * route.spacing_m
        offset = lat.offset(s_win)
        o_e = float(np.interp(s_e, s_win, offset))
        planned_offset = o_e
        offset = offset + (d_e - o_e) * (1.0 - cosine_ramp((s_win - s_e) / cfg.obstacles.blend_length_m))
        path_xy = route.xy[w0:w1] + offset[:, None] * route.normal(np.arange(w0, w1))

        # Allowed speed and its cause.
        v0, reason0 = cruise, _CAP_REASON[SpeedCap(int(self._allowed_cause[idx]))]
        if lat.speed_cap_mps < v0:
            v0 = lat.speed_cap_mps
            reason0 = Reason.OBSTACLE

        hz = _Hazards.empty()
        in_path = self._in_path_hazards(frame, ego_r, lat, s_win, offset, hz)
        self._light_hazards(snapshot, ego_r, hz)
        self._stop_sign_hazards(snapshot, ego_r, hz)
        # Patience: after waiting long for a gap, accept one that asks the follower to brake a little.
        hzc = cfg.hazards
        patience = min(self._lane_change_wait_s / hzc.lane_change_patience_s, 1.0)
        closing_time = hzc.lane_change_closing_time_s + patience * (
            hzc.lane_change_closing_time_min_s - hzc.lane_change_closing_time_s
        )
        lc_s, lc_actor = lane_change_blocker(
            route,
            frame,
            ego_r,
            ego_r.half_width + cfg.obstacles.clearance_m,
            hzc.lane_change_check_m,
            hzc.lane_change_commit_m,
            closing_time,
            hzc.lane_change_queue_speed_mps,
        )
        if math.isfinite(lc_s):
            hz.add(lc_s - ego_r.s_front, 0.0, cfg.idm.junction_yield, Reason.LANE_CHANGE, lc_actor, line=True)
        if math.isfinite(lat.wait_s):
            reason = Reason.OVERTAKE_WAIT if lat.wait_reason == "overtake_wait" else Reason.OBSTACLE
            p = IDMHazardParams(lat.wait_gap_m, cfg.idm.obstacle.headway_s)
            hz.add(lat.wait_s - ego_r.s_front, 0.0, p, reason, lat.wait_actor)

        a, reason, reason_actor = self._idm(v, v0, hz, reason0)
        a_rolled = a  # what the plan's IDM roll-out reproduces; later decisions cap the plan
        if lat.yielding_to >= 0 and reason in (Reason.CRUISE, Reason.SPEED_LIMIT, Reason.CURVE):
            reason, reason_actor = Reason.EMERGENCY_VEHICLE, lat.yielding_to
        if v < cfg.idm.line_snap_speed_mps:
            # At walking pace just short of a line to stop at: stand, do not creep onto it.
            for k, line in enumerate(hz.is_line):
                if line and hz.gap[k] < hz.s0[k] + cfg.idm.line_snap_gap_m:
                    a = min(a, -cfg.idm.comfort_decel_slow_mps2)
                    reason, reason_actor = hz.reason[k], hz.actor[k]
                    break

        a, forecast, f_reason, f_actor = self._forecast_check(
            snapshot, kin, frame, rows, in_path, ego_r, lat, path_xy, s_win, a, v0
        )
        if f_reason is not None:
            reason, reason_actor = f_reason, f_actor

        # Standstill bookkeeping for the creep rule, waiting time for the lane-change patience.
        self._standstill_s = self._standstill_s + self.dt if v < cfg.forecast.standing_speed_mps else 0.0
        self._lane_change_wait_s = self._lane_change_wait_s + self.dt if reason == Reason.LANE_CHANGE else 0.0
        self._last_reason, self._last_actor = reason, reason_actor

        target = max(0.0, v + a * cfg.speed.idm_speed_horizon_s)
        if a <= -cfg.longitudinal.max_decel_mps2 + 1e-6:
            target = 0.0
        aim = aim_distance(v, cfg.lateral)
        j = min(max(int((s_e + aim - s_win[0]) / route.spacing_m), 0), len(path_xy) - 1)
        steer = self.lateral.step(x, y, yaw, float(path_xy[j, 0]), float(path_xy[j, 1]))
        throttle, brake, _ = self.longitudinal.step(v, target, a)
        control = Control(throttle=throttle, steer=steer, brake=brake)

        # A decision the IDM roll-out cannot see (the forecast check, the line snap, creeping) also
        # shapes the plan: otherwise a waiting expert plans to drive off (a false stuck takeover, and a
        # DAgger label that says "go" where the expert stands).
        cap = a if a < a_rolled - ACCEL_EPS_MPS2 else None
        waypoints, speeds = self._plan_waypoints(v, v0, a, hz, s_e, s_win, path_xy, cap, target)
        self.last_plan = ExpertPlan(
            control=control,
            waypoints=waypoints,
            target_speeds=speeds,
            target_speed=target,
            reason=reason,
            reason_actor_id=reason_actor,
            hazard=forecast,
            lateral_offset_m=planned_offset,
            dt_s=cfg.plan_dt_s,
        )
        return self.last_plan

    def _deadlocked(self, frame: RouteFrameActors) -> frozenset[int]:
        """The actor the ego has been waiting for, when it has been standing just as long (a mutual
        wait, typically each yielding to the other in a junction)."""
        wait = self.cfg.obstacles.deadlock_wait_s
        if self._standstill_s < wait or self._last_actor < 0 or not len(frame):
            return frozenset()
        k = np.flatnonzero(frame.id == self._last_actor)
        if len(k) and frame.standing_s[k[0]] >= wait:
            return frozenset({self._last_actor})
        return frozenset()

    # ------------------------------------------------------------------ hazards for the IDM
    def _in_path_hazards(
        self,
        frame: RouteFrameActors,
        ego: EgoOnRoute,
        lat: LateralPlan,
        s_win: np.ndarray,
        offset: np.ndarray,
        hz: _Hazards,
    ) -> np.ndarray:
        """Actors inside the planned corridor ahead: follow or stop behind them. Returns their mask."""
        cfg = self.cfg
        if not len(frame):
            return np.zeros(0, bool)
        o = np.interp(frame.s, s_win, offset)
        # Oncoming traffic passing close by (an invading turn, a narrow street) is not a leader to stop
        # for; the forecast check still catches one whose path meets the ego's.
        oncoming = frame.is_vehicle_like() & (frame.v_along < -cfg.obstacles.oncoming_min_speed_mps)
        half = ego.half_width + np.where(
            oncoming, cfg.hazards.oncoming_corridor_margin_m, cfg.hazards.corridor_margin_m
        )
        inside = (
            frame.lateral_overlap(o, half)
            & (frame.s > ego.s)
            & (frame.s_near < ego.s_front + cfg.hazards.lookahead_m)
        )
        if lat.passing_ids:
            inside &= ~np.isin(frame.id, list(lat.passing_ids))
        obst = self.obstacles.obstacle_mask(self.route, frame, float(self._allowed[self.tracker.index]))
        for k in np.flatnonzero(inside):
            kind = int(frame.kind[k])
            gap = float(frame.s_near[k]) - ego.s_front
            v_lead = max(float(frame.v_along[k]), 0.0)
            if kind == ActorKind.WALKER:
                hz.add(gap, v_lead, cfg.idm.pedestrian, Reason.PEDESTRIAN, int(frame.id[k]))
            elif kind == ActorKind.BICYCLE:
                hz.add(gap, v_lead, cfg.idm.bicycle, Reason.BICYCLE, int(frame.id[k]))
            elif obst[k]:
                hz.add(gap, v_lead, cfg.idm.obstacle, Reason.OBSTACLE, int(frame.id[k]))
            elif v_lead < cfg.forecast.standing_speed_mps and self._may_block(frame, k):
                # A standing vehicle away from junctions may turn out to be stuck: keep room to pass it.
                p = IDMHazardParams(
                    max(cfg.idm.leading_vehicle.min_gap_m, cfg.obstacles.wait_gap_m),
                    cfg.idm.leading_vehicle.headway_s,
                )
                hz.add(gap, v_lead, p, Reason.LEADING_VEHICLE, int(frame.id[k]))
            else:
                hz.add(gap, v_lead, cfg.idm.leading_vehicle, Reason.LEADING_VEHICLE, int(frame.id[k]))
        return inside

    def _may_block(self, frame: RouteFrameActors, k: int) -> bool:
        """No junction on the route within the queue margin ahead of actor k (so it is not queueing)."""
        margin = self.cfg.obstacles.queue_junction_margin_m
        for entry, exit_ in self.route.junctions:
            if entry - margin <= frame.s_far[k] and frame.s_near[k] <= exit_:
                return False
        return True

    def _stop_line_s(self, kind: str, owner: int, k: int, line) -> float | None:
        key = (kind, owner, k)
        if key not in self._stop_lines:
            self._stop_lines[key] = self.route.locate_stop_line(line.x, line.y, line.yaw, self.cfg.route)
        return self._stop_lines[key]

    def _light_hazards(self, snapshot: WorldSnapshot, ego: EgoOnRoute, hz: _Hazards) -> None:
        cfg = self.cfg
        for light in snapshot.traffic_lights:
            if light.state not in (TrafficLightState.RED, TrafficLightState.YELLOW):
                self._yellow_go.pop(light.id, None)
                continue
            for k, line in enumerate(light.stop_lines):
                s_line = self._stop_line_s("light", light.id, k, line)
                if s_line is None:
                    continue
                gap = s_line - ego.s_front
                if gap < -cfg.hazards.stop_line_passed_m or gap > cfg.hazards.lookahead_m:
                    continue
                need = required_decel(ego.v, gap - cfg.idm.red_light.min_gap_m)
                if light.state == TrafficLightState.YELLOW:
                    if light.id not in self._yellow_go:
                        self._yellow_go[light.id] = need > cfg.hazards.yellow_max_decel_mps2
                    if self._yellow_go[light.id]:
                        continue
                elif need > cfg.hazards.red_min_decel_override_mps2 and gap < ego.v * ego.v / (
                    2 * cfg.longitudinal.brake_decel_mps2
                ):
                    continue  # cannot stop before the line any more
                hz.add(gap, 0.0, cfg.idm.red_light, Reason.RED_LIGHT, -1, line=True)

    def _stop_sign_hazards(self, snapshot: WorldSnapshot, ego: EgoOnRoute, hz: _Hazards) -> None:
        cfg = self.cfg.hazards
        for sign in snapshot.stop_signs:
            for k, line in enumerate(sign.stop_lines):
                s_line = self._stop_line_s("stop", sign.id, k, line)
                if s_line is None:
                    continue
                gap = s_line - ego.s_front
                served = self._served_stop.get(sign.id)
                if served is not None:
                    if ego.s_front > served + cfg.stop_sign_clear_after_m:
                        del self._served_stop[sign.id]
                    continue
                if gap < -cfg.stop_line_passed_m or gap > cfg.lookahead_m:
                    continue
                if ego.v < cfg.stop_sign_stop_speed_mps and gap < cfg.stop_sign_stop_zone_m:
                    self._served_stop[sign.id] = s_line
                    continue
                hz.add(gap, 0.0, self.cfg.idm.stop_sign, Reason.STOP_SIGN, -1, line=True)

    def _idm(self, v: float, v0: float, hz: _Hazards, reason0: Reason) -> tuple[float, Reason, int]:
        """Smallest IDM acceleration over the hazards (free road when none) and what sets it."""
        idm = self.cfg.idm
        b = comfort_decel_for_speed(
            v, idm.comfort_decel_fast_mps2, idm.comfort_decel_slow_mps2, idm.decel_switch_speed_mps
        )
        free = float(idm_acceleration(v, v0, math.inf, 0.0, 0.0, 0.0, idm.max_accel_mps2, b, idm.exponent))
        if not hz.gap:
            return free, reason0, -1
        gap, v_lead, s0 = np.array(hz.gap), np.array(hz.v_lead), np.array(hz.s0)
        acc = idm_acceleration(
            v, v0, gap, v_lead, s0, np.array(hz.headway), idm.max_accel_mps2, b, idm.exponent
        )
        acc = np.minimum(acc, closing_acceleration(v, gap, v_lead, s0, idm.closing_engage_decel_mps2))
        k = int(np.argmin(acc))
        if acc[k] < free - self.cfg.hazards.reason_margin_mps2:
            return float(acc[k]), hz.reason[k], hz.actor[k]
        return float(acc[k]), reason0, -1

    # ------------------------------------------------------------------ forecast check
    def _forecast_check(
        self,
        snapshot: WorldSnapshot,
        kin: ActorKinematics,
        frame: RouteFrameActors,
        rows: np.ndarray,
        in_path: np.ndarray,
        ego: EgoOnRoute,
        lat: LateralPlan,
        path_xy: np.ndarray,
        s_win: np.ndarray,
        a_nom: float,
        v0: float,
    ) -> tuple[float, HazardForecast, Reason | None, int]:
        cfg = self.cfg
        fc = cfg.forecast
        route = self.route
        v = ego.v
        horizon = self._horizon(ego, lat)
        steps = max(round(horizon / fc.dt_s), 1)

        # Candidate speed profiles: the plan, then braking levels milder than nothing-but-full.
        decels = [d for d in fc.graded_decels_mps2 if -d < a_nom] + [cfg.longitudinal.brake_decel_mps2]
        accels = np.array([a_nom, *[-d for d in decels]])
        stop_at = np.array(
            [v0 if a_nom >= 0.0 else max(0.0, v + a_nom * cfg.speed.idm_speed_horizon_s)]
            + [0.0] * len(decels)
        )
        speeds = speed_profiles(v, accels, stop_at, fc.dt_s, steps)
        dist = distances_from_speeds(v, speeds, fc.dt_s)
        ego_pose = snapshot.ego.pose
        poses, travelled = rollout_ego_on_path(
            ego_pose.x,
            ego_pose.y,
            ego_pose.yaw,
            path_xy,
            float(s_win[0]),
            route.spacing_m,
            ego.s,
            speeds[0],
            fc.dt_s,
            cfg.lateral,
            cfg.bicycle,
        )
        ego_fc = resample_by_distance(poses, travelled, dist)  # (K, T, 3)
        none = HazardForecast(-1, math.inf, ego_fc[0], fc.dt_s, 0.0)
        if dist[0, -1] < 1e-3:
            return a_nom, none, None, -1

        sel = self._forecast_actors(snapshot, frame, rows, in_path, ego, horizon)
        if not len(sel):
            return a_nom, none, None, -1
        lane_change = lat.lane_change_active or self._near_lane_change(ego)
        actor_fc = self._actor_forecasts(snapshot, kin, frame, sel, steps, horizon)
        hits = self._overlaps(snapshot, sel, actor_fc, ego_fc, steps, lane_change, True)
        nominal = hits[0]  # (N, T)
        if not nominal.any():
            return a_nom, none, None, -1
        t_idx = int(np.argmax(nominal.any(axis=0)))
        n_idx = int(np.argmax(nominal[:, t_idx]))
        actor_row = int(sel[n_idx])
        actor_id = int(snapshot.actors.id[actor_row])
        kind = int(snapshot.actors.kind[actor_row])
        ttc = (t_idx + 1) * fc.dt_s
        reason = (
            Reason.PEDESTRIAN
            if kind == ActorKind.WALKER
            else Reason.BICYCLE
            if kind == ActorKind.BICYCLE
            else Reason.FORECAST_COLLISION
        )

        # Creep: a long wait on an actor that is itself standing, re-checked with true-size boxes.
        if (
            self._standstill_s > fc.creep_after_s
            and abs(float(snapshot.actors.speed[actor_row])) < fc.standing_speed_mps
            and self._last_reason == reason
        ):
            creep = np.minimum(speeds[:1], cfg.speed.creep_speed_mps)
            creep_d = distances_from_speeds(v, creep, fc.dt_s)
            creep_fc = resample_by_distance(poses, travelled, creep_d)
            if not self._overlaps(snapshot, sel, actor_fc, creep_fc, steps, False, False)[0].any():
                a_creep = min(a_nom, (cfg.speed.creep_speed_mps - v) / cfg.speed.idm_speed_horizon_s)
                return a_creep, HazardForecast(actor_id, ttc, ego_fc[0], fc.dt_s, 0.0), reason, actor_id

        # Conflict inside a junction the ego has not entered: stop at its entry instead.
        junction = route.next_junction(ego.s)
        if junction is not None and kind == ActorKind.VEHICLE:
            entry = junction[0]
            gap = entry - ego.s_front
            s_conflict = ego.s + float(dist[0, t_idx]) + ego.half_length
            p = cfg.idm.junction_yield
            if (
                gap > -0.5
                and s_conflict > entry
                and required_decel(v, gap - p.min_gap_m) <= max(fc.graded_decels_mps2)
            ):
                idm = cfg.idm
                b = comfort_decel_for_speed(
                    v, idm.comfort_decel_fast_mps2, idm.comfort_decel_slow_mps2, idm.decel_switch_speed_mps
                )
                a_line = float(
                    idm_acceleration(
                        v, v0, gap, 0.0, p.min_gap_m, p.headway_s, idm.max_accel_mps2, b, idm.exponent
                    )
                )
                if gap < p.min_gap_m + cfg.idm.line_snap_gap_m and v < cfg.idm.line_snap_speed_mps:
                    a_line = -cfg.longitudinal.max_decel_mps2
                return (
                    min(a_nom, a_line),
                    HazardForecast(actor_id, ttc, ego_fc[0], fc.dt_s, max(-a_line, 0.0)),
                    reason,
                    actor_id,
                )

        free = ~hits[1:].any(axis=(1, 2))
        if free.any():
            k = int(np.argmax(free))
            a = min(a_nom, float(accels[k + 1]))
        elif self._escape_clear(snapshot, sel, actor_fc, path_xy, s_win, ego, v0, a_nom, steps, lane_change):
            # Inside a junction no braking avoids it (a crossing car would hit the ego where it stops):
            # clear the conflict zone instead.
            a = cfg.longitudinal.max_accel_mps2
        else:
            a = -cfg.longitudinal.max_decel_mps2
        return a, HazardForecast(actor_id, ttc, ego_fc[0], fc.dt_s, max(-a, 0.0)), reason, actor_id

    def _escape_clear(
        self,
        snapshot: WorldSnapshot,
        sel: np.ndarray,
        actor_fc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        path_xy: np.ndarray,
        s_win: np.ndarray,
        ego: EgoOnRoute,
        v0: float,
        a_nom: float,
        steps: int,
        lane_change: bool,
    ) -> bool:
        """In a junction, with nothing ahead the IDM brakes hard for: does driving on at full
        acceleration avoid every predicted overlap?"""
        cfg = self.cfg
        fc = cfg.forecast
        junction = self.route.next_junction(ego.s)
        if junction is None or not (junction[0] <= ego.s_front and ego.s - ego.half_length <= junction[1]):
            return False
        if a_nom < -cfg.idm.comfort_decel_slow_mps2:
            return False  # something the IDM follows is in the way: driving on is no escape
        go = speed_profiles(
            ego.v, np.array([cfg.longitudinal.max_accel_mps2]), np.array([max(v0, ego.v)]), fc.dt_s, steps
        )
        pose = snapshot.ego.pose
        poses, travelled = rollout_ego_on_path(
            pose.x, pose.y, pose.yaw, path_xy, float(s_win[0]), self.route.spacing_m, ego.s, go[0], fc.dt_s,
            cfg.lateral, cfg.bicycle,
        )  # fmt: skip
        go_fc = resample_by_distance(poses, travelled, distances_from_speeds(ego.v, go, fc.dt_s))
        return not self._overlaps(snapshot, sel, actor_fc, go_fc, steps, lane_change, True)[0].any()

    def _horizon(self, ego: EgoOnRoute, lat: LateralPlan) -> float:
        fc = self.cfg.forecast
        junction = self.route.next_junction(ego.s)
        if junction is not None and junction[0] - ego.s_front < fc.junction_approach_m:
            return fc.junction_horizon_s
        if lat.lane_change_active or self._near_lane_change(ego):
            return fc.lane_change_horizon_s
        return fc.horizon_s

    def _near_lane_change(self, ego: EgoOnRoute) -> bool:
        fc = self.cfg.forecast
        lc = self.route.lane_changes
        if not len(lc):
            return False
        v_kmh = ego.v * 3.6
        ahead = max(fc.lane_change_ahead_min_m, (v_kmh / 10.0) ** 2 / 2.0 + 10.0)
        rel = lc - ego.s
        return bool(((rel > -fc.lane_change_behind_m) & (rel < ahead)).any())

    def _forecast_actors(
        self,
        snapshot: WorldSnapshot,
        frame: RouteFrameActors,
        rows: np.ndarray,
        in_path: np.ndarray,
        ego: EgoOnRoute,
        horizon: float,
    ) -> np.ndarray:
        """Rows of actors that can reach the ego within the horizon, minus those the IDM follows and
        those trailing in the ego's own lane."""
        actors = snapshot.actors
        if not len(rows):
            return rows
        p = snapshot.ego.pose
        dist = np.hypot(actors.xyz[rows, 0] - p.x, actors.xyz[rows, 1] - p.y)
        reach = (
            (ego.v + np.abs(actors.speed[rows]) + 2.0) * horizon
            + ego.half_length
            + actors.extent[rows, 0]
            + 2.0
        )
        keep = dist < np.minimum(reach, self.cfg.forecast.radius_m)
        skip = set()
        if len(frame):
            half = ego.half_width + self.cfg.hazards.corridor_margin_m
            trailing = frame.lateral_overlap(ego.d, half) & (frame.s < ego.s) & (frame.v_along > 0.0)
            followed = in_path & (frame.v_along > -self.cfg.obstacles.oncoming_min_speed_mps)
            skip = set(frame.row[trailing | followed].tolist())
        if skip:
            keep &= ~np.isin(rows, list(skip))
        return rows[keep]

    def _actor_forecasts(
        self,
        snapshot: WorldSnapshot,
        kin: ActorKinematics,
        frame: RouteFrameActors,
        sel: np.ndarray,
        steps: int,
        horizon: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Poses (N, T) x, y, yaw of the actors `sel`, and (N,) which of them keep to their lane.

        Vehicles parallel to the route away from junctions keep to their lane (forecast_along_route);
        other vehicles hold curvature and acceleration (kinematic bicycle); walkers keep their velocity;
        everything else stands.
        """
        fc, model = self.cfg.forecast, self.cfg.bicycle
        actors = snapshot.actors
        kind = actors.kind[sel]
        n = len(sel)
        x = np.empty((n, steps))
        y = np.empty((n, steps))
        yaw = np.empty((n, steps))
        lane_kept = np.zeros(n, bool)

        veh = (kind == ActorKind.VEHICLE) | (kind == ActorKind.BICYCLE)
        if veh.any():
            r = sel[veh]
            speed = np.abs(actors.speed[r])
            known = kin.known[r]
            ctrl = actors.control[r]
            has_ctrl = ~np.isnan(ctrl[:, 0])
            beta = np.where(has_ctrl & ~known, slip_angle(np.nan_to_num(ctrl[:, 1]), model), 0.0)
            curv = np.where(known, kin.yaw_rate[r] / np.maximum(speed, 1.0), np.sin(beta) / model.rear_axle_m)
            acc_ctrl = (
                np.nan_to_num(ctrl[:, 0]) * fc.vehicle_throttle_accel_mps2
                - np.nan_to_num(ctrl[:, 2]) * fc.vehicle_brake_decel_mps2
            )
            acc = np.where(known, kin.accel[r], np.where(has_ctrl, acc_ctrl, 0.0))
            acc = np.clip(acc, -fc.vehicle_brake_decel_mps2, fc.vehicle_max_accel_mps2)
            tr = forecast_vehicles(
                actors.xyz[r, 0], actors.xyz[r, 1], actors.yaw[r], speed, curv, beta, acc, fc.dt_s, steps
            )
            vx, vy, vyaw = tr.x, tr.y, tr.yaw
            par = self._parallel_rows(frame, r, speed, horizon)
            if par is not None:
                k, f = par
                route = self.route
                tp = forecast_along_route(
                    route.xy,
                    route.yaw,
                    route.s0_m,
                    route.spacing_m,
                    frame.s[f],
                    frame.d[f],
                    frame.rel_yaw[f],
                    speed[k],
                    acc[k],
                    np.where(np.abs(frame.rel_yaw[f]) > np.pi / 2, -1.0, 1.0),
                    frame.v_across[f],
                    fc.parallel_max_shift_m,
                    fc.dt_s,
                    steps,
                )
                vx[k], vy[k], vyaw[k] = tp.x, tp.y, tp.yaw
                kept = np.zeros(len(r), bool)
                kept[k] = True
                lane_kept[veh] = kept
            x[veh], y[veh], yaw[veh] = vx, vy, vyaw
        walk = kind == ActorKind.WALKER
        if walk.any():
            r = sel[walk]
            tr = forecast_walkers(
                actors.xyz[r, 0],
                actors.xyz[r, 1],
                actors.yaw[r],
                actors.velocity[r],
                fc.walker_min_speed_mps,
                fc.dt_s,
                steps,
            )
            x[walk], y[walk], yaw[walk] = tr.x, tr.y, tr.yaw
        stat = ~(veh | walk)
        if stat.any():
            r = sel[stat]
            x[stat] = actors.xyz[r, 0:1]
            y[stat] = actors.xyz[r, 1:2]
            yaw[stat] = actors.yaw[r, None]
        return x, y, yaw, lane_kept

    def _parallel_rows(
        self, frame: RouteFrameActors, rows: np.ndarray, speed: np.ndarray, horizon: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(positions in `rows`, frame indices) of vehicles driving parallel to the route, away from junctions."""
        fc = self.cfg.forecast
        if not len(frame) or not len(rows):
            return None
        pos = {int(r): i for i, r in enumerate(frame.row.tolist())}
        k = np.array([i for i, r in enumerate(rows.tolist()) if int(r) in pos], np.int64)
        if not len(k):
            return None
        f = np.array([pos[int(rows[i])] for i in k], np.int64)
        rel = np.abs(frame.rel_yaw[f])
        aligned = (np.minimum(rel, np.pi - rel) < np.radians(fc.parallel_max_yaw_deg)) & (
            np.abs(frame.d[f]) < fc.parallel_max_lateral_m
        )
        # the stretch each one covers over the horizon: ahead of it along the route, or back for oncoming
        reach = speed[k] * horizon + fc.parallel_junction_margin_m
        oncoming = np.abs(frame.rel_yaw[f]) > np.pi / 2
        lo = frame.s[f] - np.where(oncoming, reach, fc.parallel_junction_margin_m)
        hi = frame.s[f] + np.where(oncoming, fc.parallel_junction_margin_m, reach)
        route = self.route
        ok = aligned & (lo > route.s0_m) & (hi < route.s0_m + (len(route) - 1) * route.spacing_m)
        for entry, exit_ in route.junctions:
            ok &= (hi < entry) | (lo > exit_)
        if not ok.any():
            return None
        return k[ok], f[ok]

    def _overlaps(
        self,
        snapshot: WorldSnapshot,
        sel: np.ndarray,
        actor_fc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        ego_fc: np.ndarray,
        steps: int,
        near_lane_change: bool,
        scaled: bool,
    ) -> np.ndarray:
        """Overlap (K, N, T) of K ego forecasts with the forecasts of actors `sel` (boxes scaled for safety)."""
        fc = self.cfg.forecast
        actors = snapshot.actors
        kind = actors.kind[sel]
        x, y, yaw, lane_kept = actor_fc
        hl = np.repeat(actors.extent[sel, 0:1], steps, axis=1)
        hw = np.repeat(actors.extent[sel, 1:2], steps, axis=1)
        if scaled:
            t_frac = np.arange(1, steps + 1) / steps
            # Only moving vehicles get the uncertainty margins: a standing one stays where it is.
            veh = ((kind == ActorKind.VEHICLE) | (kind == ActorKind.BICYCLE)) & (
                np.abs(actors.speed[sel]) >= fc.standing_speed_mps
            )
            hl[veh] *= fc.vehicle_scale_long_lane_change if near_lane_change else fc.vehicle_scale_long
            # Lateral uncertainty grows over the horizon, except for vehicles known to keep their lane.
            hw[veh & ~lane_kept] *= 1.0 + fc.vehicle_width_growth * t_frac[None, :]
            walk = kind == ActorKind.WALKER
            hl[walk] = np.maximum(hl[walk], fc.walker_min_half_extent_m)
            hw[walk] = np.maximum(hw[walk], fc.walker_min_half_extent_m)
        ext = snapshot.ego.extent
        fast = scaled and snapshot.ego.speed > fc.ego_scale_speed_mps
        ehl = ext[0] * (fc.ego_scale_long if fast else 1.0)
        ehw = ext[1] * (fc.ego_scale_lat if fast else 1.0)
        ex, ey, eyaw = ego_fc[:, None, :, 0], ego_fc[:, None, :, 1], ego_fc[:, None, :, 2]
        return boxes_overlap(ex, ey, eyaw, ehl, ehw, x[None], y[None], yaw[None], hl[None], hw[None])

    # ------------------------------------------------------------------ plan output
    def _plan_waypoints(
        self,
        v: float,
        v0: float,
        a: float,
        hz: _Hazards,
        s_e: float,
        s_win: np.ndarray,
        path_xy: np.ndarray,
        accel_cap: float | None,
        cap_speed: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Waypoints every plan_dt_s: the IDM rolled forward against the hazards (each moving at its
        speed along the route), never faster than the tick's chosen acceleration allows.

        `accel_cap` (m/s^2) is a decision the roll-out cannot reproduce (a forecast conflict, a stop
        line, creeping): the whole plan then keeps to it, braking to a stop when it is negative (the
        forecast check's own braking profiles), else speeding up to no more than `cap_speed`."""
        cfg = self.cfg
        idm = cfg.idm
        sub = 5  # integration sub-steps per plan step
        dt = cfg.plan_dt_s / sub
        gaps = np.array(hz.gap) if hz.gap else None
        v_lead = np.array(hz.v_lead) if hz.gap else None
        s0 = np.array(hz.s0) if hz.gap else None
        hw = np.array(hz.headway) if hz.gap else None
        vel, dist = v, 0.0
        speeds = np.empty(cfg.plan_points)
        dists = np.empty(cfg.plan_points)
        cap_first = max(0.0, v + a * cfg.plan_dt_s) if a < 0.0 else math.inf
        for k in range(cfg.plan_points):
            for _ in range(sub):
                b = comfort_decel_for_speed(
                    vel, idm.comfort_decel_fast_mps2, idm.comfort_decel_slow_mps2, idm.decel_switch_speed_mps
                )
                if gaps is None:
                    acc = float(
                        idm_acceleration(
                            vel, v0, math.inf, 0.0, 0.0, 0.0, idm.max_accel_mps2, b, idm.exponent
                        )
                    )
                else:
                    acc = float(
                        np.min(
                            np.minimum(
                                idm_acceleration(
                                    vel, v0, gaps, v_lead, s0, hw, idm.max_accel_mps2, b, idm.exponent
                                ),
                                closing_acceleration(vel, gaps, v_lead, s0, idm.closing_engage_decel_mps2),
                            )
                        )
                    )
                acc = max(acc, -cfg.longitudinal.max_decel_mps2)
                if accel_cap is not None:
                    acc = min(acc, accel_cap)
                new_v = max(vel + acc * dt, 0.0)
                if accel_cap is not None and accel_cap >= 0.0:
                    new_v = min(new_v, max(cap_speed, vel))
                step = 0.5 * (vel + new_v) * dt
                dist += step
                if gaps is not None:
                    gaps = gaps - step + v_lead * dt
                vel = new_v
            if k == 0 and vel > cap_first:
                dist -= (vel - cap_first) * cfg.plan_dt_s * 0.5
                vel = cap_first
            speeds[k] = vel
            dists[k] = dist
        idx = np.clip(((s_e + dists) - s_win[0]) / self.route.spacing_m, 0, len(path_xy) - 1)
        lo = np.floor(idx).astype(int)
        hi = np.minimum(lo + 1, len(path_xy) - 1)
        w = (idx - lo)[:, None]
        return path_xy[lo] * (1 - w) + path_xy[hi] * w, speeds
