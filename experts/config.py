"""Structured config of the privileged expert: every threshold has a name, a type, a unit and a default.

`conf/expert.yaml` mirrors these defaults; load with
``carla_bridge.config.load_config(ExpertConfig, "expert", overrides)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RoutePrepConfig:
    resample_spacing_m: float = 0.1  # uniform spacing of the prepared path (index = s / spacing)
    pad_before_m: float = 60.0  # extension before the first dense point, along the lane leading in
    lead_in_step_m: float = 2.0  # step of that lane walk (straight where the map has no lane)
    pad_after_m: float = 40.0  # straight extension after the last point, so aim points always exist
    snap_max_distance_m: float = 1.0  # dense points farther than this from a lane centre stay as they are
    snap_max_yaw_deg: float = 30.0  # and so do points whose nearest lane points elsewhere
    lane_change_jump_m: float = 1.0  # lateral jump between consecutive dense points that marks a lane change
    lane_change_duration_s: float = 3.5  # smoothed lane change lasts this long at the local cruise speed
    lane_change_min_length_m: float = 15.0
    lane_change_max_length_m: float = 40.0
    default_lane_width_m: float = 3.5  # where the map cannot tell
    curvature_window_m: float = 2.0  # half window of the heading difference used for curvature
    track_search_ahead_m: float = 4.0  # route index search window per tick (never goes back)
    stop_line_match_distance_m: float = 2.5  # a stop line this close to the path belongs to the route
    stop_line_match_yaw_deg: float = 45.0


@dataclass
class SpeedConfig:
    speed_limit_fraction: float = 0.72  # base target = fraction x speed limit (traffic drives ~70 %)
    max_speed_mps: float = 22.0  # absolute cap (79 km/h)
    junction_speed_mps: float = 17.8  # cap when a junction is within `junction_cap_distance_m` (64 km/h)
    junction_cap_distance_m: float = 30.0
    max_lateral_accel_mps2: float = 2.2  # curve speed: v <= sqrt(a_lat / curvature)
    curve_decel_mps2: float = 2.0  # deceleration assumed to reach a slower curve speed ahead
    creep_speed_mps: float = 2.0  # after a long standstill on an uncertain forecast, move this slowly
    idm_speed_horizon_s: float = 0.5  # target speed = v + a_idm * horizon (the tracker's time constant)


@dataclass
class IDMHazardParams:
    min_gap_m: float = 4.0  # s0
    headway_s: float = 0.25  # T


@dataclass
class IDMConfig:
    max_accel_mps2: float = 2.0  # a: comfortable acceleration (comfort bound 2.4 m/s2)
    comfort_decel_fast_mps2: float = 3.0  # b above `decel_switch_speed_mps`
    comfort_decel_slow_mps2: float = 4.0  # b below it: stop firmly in town traffic
    decel_switch_speed_mps: float = 6.0
    exponent: float = 4.0  # delta
    closing_engage_decel_mps2: float = 2.0  # from this required deceleration on, brake to stop exactly at s0
    leading_vehicle: IDMHazardParams = field(default_factory=lambda: IDMHazardParams(4.0, 1.5))
    bicycle: IDMHazardParams = field(default_factory=lambda: IDMHazardParams(4.0, 0.5))
    pedestrian: IDMHazardParams = field(default_factory=lambda: IDMHazardParams(4.0, 0.5))
    obstacle: IDMHazardParams = field(default_factory=lambda: IDMHazardParams(3.0, 0.2))
    red_light: IDMHazardParams = field(default_factory=lambda: IDMHazardParams(1.5, 0.1))
    stop_sign: IDMHazardParams = field(default_factory=lambda: IDMHazardParams(1.0, 0.1))
    junction_yield: IDMHazardParams = field(default_factory=lambda: IDMHazardParams(1.0, 0.1))
    line_snap_gap_m: float = 0.6  # within s0 + this of a stop line at walking pace: stop outright
    line_snap_speed_mps: float = 1.0


@dataclass
class HazardConfig:
    lookahead_m: float = 80.0  # leading hazards are searched this far along the path
    max_level_gap_m: float = 3.0  # actors this much above/below the route are on a bridge or underpass
    corridor_margin_m: float = 0.35  # lateral margin beyond the ego half width
    oncoming_corridor_margin_m: float = 0.1  # ... for oncoming moving vehicles: they pass, not lead
    yellow_max_decel_mps2: float = 4.0  # stop at yellow only when it needs at most this deceleration
    red_min_decel_override_mps2: float = 9.0  # unreachable red (needs more than this): drive through
    stop_line_passed_m: float = 1.5  # a stop line the ego front has passed by more than this is behind it
    reason_margin_mps2: float = 0.05  # a hazard is the reason when it lowers the acceleration by more
    stop_sign_stop_speed_mps: float = 0.1  # a stop counts below this speed
    stop_sign_stop_zone_m: float = 4.0  # ... with the front bumper within this of the line
    stop_sign_clear_after_m: float = 10.0  # a served stop sign stays served until this far past
    lane_change_check_m: float = 30.0  # the target lane of a route lane change is checked this far ahead
    lane_change_commit_m: float = 2.0  # a lane change the ego front is this far into is not stopped
    # A vehicle behind in the target lane needs a gap of 6 m + closing speed x this time ...
    lane_change_closing_time_s: float = 2.0
    lane_change_closing_time_min_s: float = 0.8  # ... shrinking to this after waiting
    lane_change_patience_s: float = 15.0  # ... this long for a gap
    lane_change_queue_speed_mps: float = (
        2.5  # target-lane vehicles slower than this form a queue to nose into
    )
    emergency_detect_distance_m: float = 60.0  # emergency vehicles behind within this are yielded to
    emergency_pass_margin_m: float = 8.0  # keep aside until it is this far ahead of the ego front
    emergency_ramp_m: float = 20.0  # lateral ramp of the step aside
    emergency_hold_m: float = 10.0  # the shifted stretch reaches this far ahead of the ego while yielding
    emergency_same_direction_only: bool = True  # step aside into same-direction lanes only


@dataclass
class ForecastConfig:
    dt_s: float = 0.1  # forecast time step
    horizon_s: float = 2.0  # default horizon
    lane_change_horizon_s: float = 1.1  # shorter near a lane change (many false alarms otherwise)
    junction_horizon_s: float = 3.5  # waiting at or crossing a junction: cover the crossing time
    junction_approach_m: float = 12.0  # ego front within this of a junction entry counts as at it
    lane_change_behind_m: float = 15.0
    lane_change_ahead_min_m: float = 20.0
    radius_m: float = 50.0  # actors farther than this from the ego are ignored
    ego_scale_long: float = 1.3  # ego box scale above `ego_scale_speed_mps`
    ego_scale_lat: float = 1.2
    ego_scale_speed_mps: float = 5.0
    vehicle_scale_long: float = 1.2
    vehicle_scale_long_lane_change: float = 2.0
    vehicle_width_growth: float = 0.15  # relative extra width at the end of the horizon
    walker_min_speed_mps: float = 0.5
    walker_min_half_extent_m: float = 0.6
    vehicle_max_accel_mps2: float = 1.5  # held-throttle forecasts never accelerate faster than this
    vehicle_brake_decel_mps2: float = 8.0
    vehicle_throttle_accel_mps2: float = 3.5
    parallel_max_yaw_deg: float = (
        20.0  # vehicles this close to (anti)parallel with the route keep to their lane
    )
    parallel_max_lateral_m: float = 8.0  # ... when within this of the route
    parallel_junction_margin_m: float = 10.0  # ... and no junction lies within reach (+ this) along the route
    parallel_max_shift_m: float = 3.5  # their lateral drift over the horizon is capped at one lane
    graded_decels_mps2: list[float] = field(default_factory=lambda: [2.5, 4.0, 6.0])
    creep_after_s: float = 6.0  # stopped this long on a forecast hazard: re-check with unscaled boxes
    standing_speed_mps: float = 0.3  # actors slower than this count as standing


@dataclass
class ObstacleConfig:
    lookahead_m: float = 70.0  # obstacles are planned around this far ahead
    overtake_speed_mps: float = 13.9  # speed cap while in the oncoming lane (50 km/h)
    cluster_gap_m: float = 20.0  # obstacles closer than this along the route form one blocked stretch
    clearance_m: float = 0.5  # lateral clearance between the ego and an obstacle when passing
    margin_before_m: float = 2.0  # full offset reached with the ego front this far before the obstacle
    margin_after_m: float = 3.0  # and held until the ego rear is this far past the last one
    ramp_time_s: float = 3.0  # lateral ramp length = speed x ramp time, clipped below
    ramp_min_m: float = 10.0
    ramp_max_m: float = 35.0
    commit_lateral_fraction: float = 0.5  # past this share of the shift the overtake is committed
    clearance_time_margin_s: float = 1.5  # oncoming traffic must arrive this much after the ego leaves
    # Distance added to the pass: the ego must reach the end of its ramp back (centre in its lane) plus
    # this before oncoming traffic arrives there. PDM-Lite adds ego length + 10 m; the ramp end is
    # already conservative (the ego leaves the oncoming lane half-way down the ramp).
    clearance_extra_m: float = 0.0
    oncoming_min_speed_mps: float = 0.5  # oncoming vehicles slower than this are standing obstacles
    standing_speed_mps: float = 0.3  # vehicles slower than this may be obstacles
    slow_bicycle_ratio: float = 0.6  # bicycles slower than this x our cruise speed are overtaken
    max_in_lane_shift_m: float = 0.9  # nudge inside the lane up to this without a lane change
    deadlock_wait_s: float = 5.0  # ego and the actor it waits for both standing this long: pass it
    blend_length_m: float = 8.0  # blend from the ego's actual offset into the planned offset
    standing_time_s: float = (
        10.0  # vehicles standing this long (no junction ahead) are obstacles, not traffic
    )
    queue_junction_margin_m: float = 30.0  # ... a junction this close ahead of them means they queue
    wait_gap_m: float = 11.0  # bumper gap kept behind an obstacle (or a standing queue that may be one)
    min_turn_radius_m: float = 6.0  # a shift must fit two arcs of this radius before the obstacle
    pass_accel_mps2: float = 2.0  # acceleration assumed for the pass time
    invading_lookahead_m: float = 50.0  # oncoming vehicles cutting into the lane this close are dodged
    invading_max_yaw_deg: float = 30.0  # ... when they face the ego within this angle


@dataclass
class LateralConfig:
    aim_gain_s_per_kmh: float = 0.0976  # aim distance = gain x v_kmh + offset (research)
    aim_offset_m: float = 0.19
    aim_min_m: float = 2.4
    aim_max_m: float = 10.5
    kp: float = 3.118
    kd: float = 1.378
    ki: float = 0.641
    integral_window: int = 6  # ticks averaged by the integral term
    error_scale_deg: float = 90.0  # heading error is divided by this


@dataclass
class LongitudinalConfig:
    # Feed-forward model of the ego (the embedded simulator's; the integral term absorbs the rest):
    # a = throttle a_t (1 - v / v_fade) - brake b - rolling - drag v^2
    throttle_accel_mps2: float = 3.5  # a_t, full-throttle acceleration at standstill
    throttle_fade_speed_mps: float = 35.0  # v_fade, where throttle stops accelerating
    brake_decel_mps2: float = 8.0  # b, deceleration of full brake
    rolling_resistance_mps2: float = 0.15
    drag_per_m: float = 3.0e-4  # 1/m
    track_time_constant_s: float = 0.5  # commanded accel = (v_target - v) / this
    ki: float = 0.15  # integral gain (1/s) on the speed error, bounded below
    integral_limit_mps: float = 1.0
    max_accel_mps2: float = 2.2  # commanded acceleration bounds
    max_decel_mps2: float = 8.0
    max_jerk_up_mps3: float = 3.0  # rate limit of the commanded acceleration when it rises
    max_jerk_down_mps3: float = 7.0  # ... and when it falls (braking builds fast), unless emergency
    emergency_decel_mps2: float = 5.0  # demands above this skip the jerk limit
    stop_speed_mps: float = 0.2  # below this with a zero target: hold the brake
    hold_brake: float = 0.6  # brake held while standing
    max_throttle: float = 0.85


@dataclass
class EgoModelConfig:
    """Kinematic bicycle (World-on-Rails parameters) used to forecast the ego and other vehicles."""

    wheel_per_steer_rad: float = 0.3685  # wheel angle = this x steer
    front_axle_m: float = -0.0908  # l_f (fitted; negative as in the fit)
    rear_axle_m: float = 1.4178  # l_r


@dataclass
class ExpertConfig:
    route: RoutePrepConfig = field(default_factory=RoutePrepConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    idm: IDMConfig = field(default_factory=IDMConfig)
    hazards: HazardConfig = field(default_factory=HazardConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    obstacles: ObstacleConfig = field(default_factory=ObstacleConfig)
    lateral: LateralConfig = field(default_factory=LateralConfig)
    longitudinal: LongitudinalConfig = field(default_factory=LongitudinalConfig)
    bicycle: EgoModelConfig = field(default_factory=EgoModelConfig)
    plan_points: int = 8  # waypoints of the plan
    plan_dt_s: float = 0.5  # their spacing in time


def load_expert_config(overrides: list[str] | None = None) -> ExpertConfig:
    """ExpertConfig from the schema, conf/expert.yaml and dotlist overrides ("idm.max_accel_mps2=1.5")."""
    from carla_bridge.config import load_config

    return load_config(ExpertConfig, "expert", overrides)
