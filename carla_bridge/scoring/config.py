"""`ScoringConfig`: thresholds of the leaderboard criteria and of Bench2Drive's metrics (conf/scoring.yaml).

Every behavioural number of the scoring lives here once, with its unit in the field name. The
defaults mirror the CARLA leaderboard 2.0 atomic criteria and Bench2Drive (research/bench2drive.md);
the leaderboard's *format* constants (record keys, penalty coefficients, status strings) live in
`carla_bridge.scoring.leaderboard`. Load with ``load_config(ScoringConfig, "scoring", overrides)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carla_bridge.config import load_config
from carla_bridge.scoring.errors import ScoringConfigError


@dataclass
class CollisionConfig:
    """CollisionTest: a contact counts once; repeats near the same place or with the same actor do not."""

    min_area_m: float = 3.0  # a contact within this distance of a remembered collision is ignored
    max_area_m: float = 5.0  # remembered collision places are forgotten once the ego is this far away
    same_actor_memory_s: float = 5.0  # the last actor hit is ignored for this long
    max_vertical_gap_m: float = 0.5  # boxes whose z ranges are further apart do not touch (bridges)


@dataclass
class RedLightConfig:
    """RunningRedLightTest: the ego's tail crosses the stop line of a red light on its lane."""

    max_light_distance_m: float = 15.0  # stop lines further than this from the ego are not checked
    tail_near_fraction: float = 0.8  # tail segment starts this fraction of the half length behind the centre
    tail_far_margin_m: float = 1.0  # ... and ends this far behind the rear bumper
    stop_line_half_width_fraction: float = 0.4  # stop line spans +-this x lane width around its centre


@dataclass
class StopSignConfig:
    """RunningStopTest: inside a stop sign's zone the ego must once drop below a speed."""

    proximity_m: float = 4.0  # ego lane points checked this far ahead (and the zone's quick-reject radius)
    waypoint_step_m: float = 0.5  # spacing of those lane points
    stopped_speed_mps: float = 0.1  # below this the ego has stopped
    zone_length_m: float = 4.0  # the zone (CARLA's trigger volume) covers this much lane before the line
    zone_extent_factor: float = 1.2  # zone half extents x this (the leaderboard's box multiplier)


@dataclass
class OutsideLanesConfig:
    """OutsideRouteLanesTest: off the driving/parking lanes, or in a lane of the opposite direction."""

    allowed_out_distance_m: float = 0.5  # tolerance beyond half the lane width (mini shoulder)
    max_vehicle_angle_deg: float = 120.0  # lane direction further than this from the ego yaw = wrong way


@dataclass
class RouteEndConfig:
    """Criteria that end a route: completion, deviation, blocked, route timeout, Bench2Drive's tick cap."""

    completion_threshold_pct: float = 99.0  # route counts as reached above this completion ...
    completion_distance_m: float = 10.0  # ... and within this distance of the last route point
    deviation_distance_m: float = 30.0  # further than this from the route ends it (InRouteTest)
    deviation_window_points: int = 5  # dense points after the progress index searched (InRouteTest)
    blocked_speed_mps: float = 0.1  # below this the ego is standing still
    # Bench2Drive value (research/bench2drive.md); upstream leaderboard 2.0 route scenarios use 180 s.
    blocked_time_s: float = 60.0
    route_timeout_base_s: float = 300.0  # timeout = base + sum(ds / (fraction x speed limit))
    route_timeout_speed_fraction: float = 0.1
    default_speed_limit_mps: float = 8.333  # 30 km/h, CARLA's urban default where a route lacks limits
    max_ticks: int = 4000  # Bench2Drive stops every route after this many ticks (200 s at 20 Hz)


@dataclass
class EfficiencyConfig:
    """Ego speed vs the mean speed of surrounding background vehicles at checkpoints along the route."""

    checkpoints: int = 20  # checkpoints at completion k x 100 / checkpoints %, k = 1..checkpoints
    radius_m: float = 50.0  # background vehicles within this distance of the ego are "surrounding"
    max_ratio_pct: float = 1000.0  # ratios above this (near-standing traffic) are dropped
    min_traffic_speed_mps: float = 0.1  # traffic slower than this gives no ratio (division by ~0)


@dataclass
class ComfortConfig:
    """nuPlan-style comfort bounds on Savitzky-Golay filtered ego kinematics (Bench2Drive's smoothness)."""

    segment_ticks: int = 20  # a segment of this many ticks is comfortable or not
    savgol_window: int = 7  # filter window, samples (odd)
    savgol_order: int = 2  # filter polynomial order
    # Bench2Drive's tool differentiates with delta 0.1 s (research/bench2drive.md) although its logs are
    # 20 Hz; that halves jerks and yaw accelerations. Set 0.05 for physically exact derivatives.
    derivative_dt_s: float = 0.1
    min_lon_accel_mps2: float = -4.05
    max_lon_accel_mps2: float = 2.40
    max_abs_lat_accel_mps2: float = 4.89
    max_abs_jerk_mps3: float = 8.37
    max_abs_lon_jerk_mps3: float = 4.13
    max_abs_yaw_accel_radps2: float = 1.93
    max_abs_yaw_rate_radps: float = 0.95


@dataclass
class ScoringConfig:
    collision: CollisionConfig = field(default_factory=CollisionConfig)
    red_light: RedLightConfig = field(default_factory=RedLightConfig)
    stop_sign: StopSignConfig = field(default_factory=StopSignConfig)
    outside_lanes: OutsideLanesConfig = field(default_factory=OutsideLanesConfig)
    route_end: RouteEndConfig = field(default_factory=RouteEndConfig)
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    comfort: ComfortConfig = field(default_factory=ComfortConfig)


def validate_scoring_config(config: ScoringConfig) -> ScoringConfig:
    """The config itself when usable; ScoringConfigError naming the field and the fix otherwise."""
    comfort = config.comfort
    if comfort.savgol_window % 2 == 0 or comfort.savgol_window <= comfort.savgol_order:
        raise ScoringConfigError(
            f"comfort.savgol_window={comfort.savgol_window} must be odd and larger than "
            f"comfort.savgol_order={comfort.savgol_order}; fix conf/scoring.yaml"
        )
    if comfort.segment_ticks < comfort.savgol_window:
        raise ScoringConfigError(
            f"comfort.segment_ticks={comfort.segment_ticks} is shorter than comfort.savgol_window="
            f"{comfort.savgol_window}; raise segment_ticks in conf/scoring.yaml"
        )
    positive = {
        "comfort.derivative_dt_s": comfort.derivative_dt_s,
        "efficiency.checkpoints": config.efficiency.checkpoints,
        "route_end.route_timeout_speed_fraction": config.route_end.route_timeout_speed_fraction,
        "route_end.default_speed_limit_mps": config.route_end.default_speed_limit_mps,
        "route_end.max_ticks": config.route_end.max_ticks,
        "stop_sign.waypoint_step_m": config.stop_sign.waypoint_step_m,
        "stop_sign.zone_length_m": config.stop_sign.zone_length_m,
    }
    for name, value in positive.items():
        if not value > 0:
            raise ScoringConfigError(f"{name}={value} must be positive; fix conf/scoring.yaml")
    return config


def load_scoring_config(overrides: list[str] | None = None) -> ScoringConfig:
    """ScoringConfig defaults <- conf/scoring.yaml <- dotlist overrides (e.g. ``route_end.max_ticks=2000``)."""
    return validate_scoring_config(load_config(ScoringConfig, "scoring", overrides))
