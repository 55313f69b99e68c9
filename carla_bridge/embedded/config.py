"""`SimConfig`: the structured config of the embedded simulator (schema of conf/sim.yaml).

Every tunable number of the simulator lives here once, with its unit in the field name or comment.
Load with ``load_config(SimConfig, "sim", overrides)`` (carla_bridge.config).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carla_bridge.errors import TakeoverError


@dataclass
class LaneGraphConfig:
    node_spacing_m: float = 1.0  # target distance between lane-graph nodes along a lane
    stop_horizon_m: float = 80.0  # per-node look-ahead for the next junction entry / stop line
    default_speed_limit_kmh: float = 30.0  # CARLA's urban default where no speed sign applies
    conflict_clearance_m: float = 1.6  # connecting lanes closer than this (centre lines) conflict
    grid_cell_m: float = 4.0  # spatial hash cell size for geometric look-ups


@dataclass
class VehicleParams:
    """Kinematic bicycle (World-on-Rails fit, research/pdm_lite.md) + first-order longitudinal model."""

    wheel_angle_per_steer_rad: float = 0.3685  # wheel angle = this x steer
    front_wheel_offset_m: float = -0.0908  # l_f of the World-on-Rails fit
    rear_wheel_offset_m: float = 1.4178  # l_r of the World-on-Rails fit
    max_steer_rate_per_s: float = 3.0  # |d steer / dt| limit, steer units (1 = full lock) per second
    max_accel_mps2: float = 3.5  # full-throttle acceleration at standstill
    max_speed_mps: float = 35.0  # full-throttle acceleration falls linearly to 0 at this speed
    max_brake_decel_mps2: float = 8.0  # full-brake deceleration
    hand_brake_decel_mps2: float = 5.0
    rolling_resistance_mps2: float = 0.15  # constant deceleration while moving
    drag_per_m: float = 3.0e-4  # aerodynamic deceleration = drag_per_m x v^2
    max_reverse_speed_mps: float = 5.0
    reverse_accel_mps2: float = 1.5  # full-throttle acceleration in reverse


@dataclass
class IDMConfig:
    """Intelligent driver model of background traffic."""

    max_accel_mps2: float = 2.0  # a
    comfort_decel_mps2: float = 3.0  # b
    max_decel_mps2: float = 9.0  # clamp of the IDM output (emergency braking)
    min_gap_m: float = 2.5  # s0 behind vehicles
    time_headway_s: float = 1.2  # T
    delta: float = 4.0  # free-road exponent
    stop_line_gap_m: float = 0.8  # s0 in front of a stop line (front bumper to line)
    stop_snap_m: float = 0.6  # closer than this to a stop target at crawling speed: stand still
    crawl_speed_mps: float = 0.5
    yellow_decel_limit_mps2: float = 5.0  # on yellow, stop only if this deceleration suffices
    min_safety_gap_m: float = 0.4  # hard clamp: a vehicle never closes below this gap in one tick


@dataclass
class TrafficConfig:
    enabled: bool = True
    backend: str = "auto"  # "auto" (numba kernel when installed), "numba", "numpy"
    count: int = 30  # background vehicles kept around the ego (used when density_per_100m <= 0)
    density_per_100m: float = 0.0  # > 0: vehicles per 100 m of driving lane within spawn_radius_m
    spawn_radius_m: float = 90.0  # vehicles are spawned within this distance of the ego
    despawn_radius_m: float = 110.0  # and removed beyond this one
    respawn_min_distance_m: float = 55.0  # re-spawns (after reset) happen beyond this distance
    ego_bubble_m: float = 18.0  # never spawn closer to the ego than this
    route_clearance_ahead_m: float = 40.0  # no spawn on the route nodes this far ahead of the ego
    route_clearance_lateral_m: float = 2.5  # "on the route" = within this of a dense route point
    spawn_min_spacing_m: float = 12.0  # min centre distance between a new vehicle and any other
    max_spawns_per_check: int = 4
    density_check_period_s: float = 0.5
    speed_fraction_of_limit: float = 0.7  # desired speed = limit x this x per-vehicle factor
    speed_factor_std: float = 0.08  # std of the per-vehicle factor (mean 1)
    speed_factor_range: tuple[float, float] = (0.8, 1.2)
    bicycle_max_speed_mps: float = 5.5
    lookahead_m: float = 50.0  # leader search distance along the lane
    lookahead_stride_nodes: int = 2  # sample the path every this many nodes (occupancy is padded)
    reservation_request_m: float = (
        12.0  # ask for a junction reservation this far (plus braking distance) before the entry
    )
    # A request denied for this long claims its junction lane: later requests that conflict with it and
    # can still stop comfortably are denied too, so cross traffic cannot starve it (fairness).
    reservation_patience_s: float = 4.0
    # "Don't block the box" holds a vehicle before a junction until its leader has cleared the junction
    # lane; scenario-owned vehicles (actor flows) also go when that leader drives at least this fast
    # (a scenario flow moves through as a queue, as in scenario_runner; background traffic keeps the rule).
    box_follow_speed_mps: float = 5.0
    reservation_claim_hold_s: float = 2.0  # a claim outlives the claimant's last denied request this long
    stop_sign_stop_radius_m: float = 3.5  # a stop counts when standing still this close to the line
    stopped_speed_mps: float = 0.1
    ego_yield_radius_m: float = 25.0  # ego closer than this to a junction blocks conflicting entries
    # Fractions of the catalogue categories (cars, vans, trucks, bicycles); normalised at use.
    category_weights: dict[str, float] = field(
        default_factory=lambda: {"car": 0.8, "van": 0.1, "truck": 0.05, "bicycle": 0.05}
    )


@dataclass
class WalkerConfig:
    enabled: bool = True
    count: int = 20  # walkers kept on sidewalks within spawn_radius_m of the ego
    speed_range_mps: tuple[float, float] = (1.0, 1.6)
    spawn_radius_m: float = 80.0
    despawn_radius_m: float = 100.0
    ego_bubble_m: float = 10.0


@dataclass
class SignalConfig:
    green_s: float = 10.0
    yellow_s: float = 3.0
    all_red_s: float = 2.0  # clearance between two green groups
    approach_group_tolerance_deg: float = 35.0  # approaches on the same axis (+-) share a green
    generate_missing_lights: bool = False  # add lights to 4-way junctions without light landmarks
    snapshot_radius_m: float = 80.0  # lights / stop signs further from the ego stay out of snapshots
    randomize_phase: bool = True  # start each junction at a random point of its cycle (seeded)


@dataclass
class ScenarioConfig:
    enabled: bool = True
    default_trigger_distance_m: float = 20.0  # ego within this of the trigger point starts a scenario
    default_timeout_s: float = 60.0  # running longer than this -> "timed_out"
    pending_skip_behind_m: float = 30.0  # trigger left this far behind on the route without firing


@dataclass
class SimConfig:
    seed_offset: int = 0  # added to every reset seed (to decorrelate studies without touching routes)
    scoring: bool = True  # run carla_bridge.scoring.criteria.RouteCriteria each tick
    ego_type_id: str = "vehicle.lincoln.mkz_2020"
    ego_extent_m: tuple[float, float, float] = (2.44, 1.06, 0.76)  # half extents
    route_window_m: float = 30.0  # route progress search window ahead of the last index
    crash_stops_ego: bool = True  # a collision stops the ego; it cannot drive through actors (World._contact)
    lane_graph: LaneGraphConfig = field(default_factory=LaneGraphConfig)
    vehicle: VehicleParams = field(default_factory=VehicleParams)
    idm: IDMConfig = field(default_factory=IDMConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    walkers: WalkerConfig = field(default_factory=WalkerConfig)
    signals: SignalConfig = field(default_factory=SignalConfig)
    scenarios: ScenarioConfig = field(default_factory=ScenarioConfig)


class SimConfigError(TakeoverError):
    """A value of the embedded simulator's config (conf/sim.yaml) is unusable."""


TRAFFIC_BACKENDS = ("auto", "numba", "numpy")


def validate_sim_config(cfg: SimConfig) -> SimConfig:
    """Check the values a run cannot work with; raise one SimConfigError naming the key and the fix."""

    def bad(key: str, value, fix: str) -> SimConfigError:
        return SimConfigError(f"conf/sim.yaml {key}={value!r} is invalid: {fix}")

    t = cfg.traffic
    if t.backend not in TRAFFIC_BACKENDS:
        raise bad("traffic.backend", t.backend, f"use one of {', '.join(TRAFFIC_BACKENDS)}")
    if t.count < 0:
        raise bad("traffic.count", t.count, "use 0 (no traffic) or a positive vehicle count")
    if t.density_per_100m < 0:
        raise bad("traffic.density_per_100m", t.density_per_100m, "use 0 (count mode) or a positive density")
    if not 0.0 < t.ego_bubble_m < t.spawn_radius_m < t.despawn_radius_m:
        raise bad(
            "traffic.ego_bubble_m/spawn_radius_m/despawn_radius_m",
            (t.ego_bubble_m, t.spawn_radius_m, t.despawn_radius_m),
            "they must increase: 0 < ego_bubble_m < spawn_radius_m < despawn_radius_m",
        )
    if t.lookahead_m <= 0 or t.lookahead_stride_nodes < 1:
        raise bad("traffic.lookahead_m/lookahead_stride_nodes", (t.lookahead_m, t.lookahead_stride_nodes),
                  "use a positive look-ahead and a stride >= 1")  # fmt: skip
    lo, hi = t.speed_factor_range
    if not 0.0 < lo <= hi:
        raise bad("traffic.speed_factor_range", t.speed_factor_range, "use (low, high) with 0 < low <= high")
    if cfg.lane_graph.node_spacing_m <= 0.1:
        raise bad(
            "lane_graph.node_spacing_m",
            cfg.lane_graph.node_spacing_m,
            "use a spacing above 0.1 m (1.0 is the default)",
        )
    idm = cfg.idm
    if min(idm.max_accel_mps2, idm.comfort_decel_mps2, idm.max_decel_mps2, idm.time_headway_s) <= 0:
        raise bad("idm", idm, "accelerations, decelerations and the time headway must be positive")
    s = cfg.signals
    if min(s.green_s, s.yellow_s) <= 0 or s.all_red_s < 0:
        raise bad("signals", (s.green_s, s.yellow_s, s.all_red_s), "green_s and yellow_s > 0, all_red_s >= 0")
    w = cfg.walkers
    if w.count < 0 or not 0.0 < w.speed_range_mps[0] <= w.speed_range_mps[1]:
        raise bad("walkers", (w.count, w.speed_range_mps), "count >= 0 and 0 < speed low <= speed high")
    if len(cfg.ego_extent_m) != 3 or min(cfg.ego_extent_m) <= 0:
        raise bad("ego_extent_m", cfg.ego_extent_m, "give three positive half extents (x, y, z) in metres")
    return cfg
