"""`CarlaConfig`: the structured config of the real CARLA path (schema of conf/carla.yaml).

Sections: `client` (connection), `world` (synchronous 20 Hz settings), `ego`, `traffic` (Traffic
Manager background vehicles and walkers), `sensors`, `snapshot` (what a WorldSnapshot keeps),
`server` (launching CarlaUE4.sh, one per GPU), `leaderboard` (Bench2Drive's evaluator) and `agent`
(the leaderboard agent entry point). Every number lives here once with its unit in the field name.
Load with ``load_carla_config(overrides)``; the leaderboard agent reads ``agent`` merged with the
YAML file the evaluator passes as ``--agent-config`` (``load_agent_config(path)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.simulator import FIXED_DELTA_S


class CarlaConfigError(TakeoverError):
    """conf/carla.yaml or an agent config file holds a value that cannot work."""


@dataclass
class ClientConfig:
    host: str = "127.0.0.1"
    port: int = 2000  # CARLA RPC port (the server also uses port+1 for streaming)
    timeout_s: float = 20.0  # per RPC call; a tick taking longer means the server hangs or crashed
    load_world_timeout_s: float = 180.0  # loading a town is slow on a cold server
    probe_timeout_s: float = 2.0  # TCP probe before the first RPC: tells "nothing listens" apart quickly
    worker_threads: int = 0  # client worker threads, 0 = as many as cores


@dataclass
class WorldConfig:
    fixed_delta_s: float = FIXED_DELTA_S  # synchronous step, s (20 Hz like the leaderboard)
    synchronous: bool = True
    no_rendering: bool = False  # true saves GPU time when no camera is attached
    reload_same_town: bool = True  # reload even when the town is loaded: no actors left from a crash
    settle_ticks: int = 10  # ticks after spawning before the first snapshot (vehicles drop to the ground)
    max_substep_delta_s: float = 0.01  # physics sub-stepping, s (CARLA default)
    max_substeps: int = 10


@dataclass
class EgoConfig:
    blueprint: str = "vehicle.lincoln.mkz_2020"  # the leaderboard's ego
    role_name: str = "hero"
    spawn_height_m: float = 0.5  # the leaderboard lifts the start pose by this much


@dataclass
class TrafficConfig:
    tm_port: int = 8000  # Traffic Manager port (one per server)
    vehicles: int = 30  # background vehicles spawned near the route
    walkers: int = 0  # walkers with AI controllers
    spawn_radius_m: float = 200.0  # spawn points farther than this from every route point are skipped
    min_distance_to_ego_m: float = 15.0  # keep the ego's start free
    fallback_spawn_spacing_m: float = 20.0  # a town without spawn points: lane points this far apart
    vehicle_filter: str = "vehicle.*"
    four_wheels_only: bool = True  # no bikes / motorbikes in background traffic
    distance_to_leading_m: float = 2.5  # Traffic Manager global distance to the leading vehicle
    speed_difference_pct: float = 30.0  # TM: drive this much below the speed limit (>0) or above (<0)
    hybrid_physics: bool = False
    hybrid_physics_radius_m: float = 70.0
    walker_filter: str = "walker.pedestrian.*"
    walker_max_speed_mps: float = 1.4


@dataclass
class CameraConfig:
    id: str = "rgb_front"
    x_m: float = 0.8
    y_m: float = 0.0
    z_m: float = 1.6
    roll_deg: float = 0.0
    pitch_deg: float = 0.0
    yaw_deg: float = 0.0
    width_px: int = 900
    height_px: int = 256
    fov_deg: float = 100.0


@dataclass
class SensorsConfig:
    collision: bool = True
    lane_invasion: bool = True
    cameras: list[CameraConfig] = field(default_factory=list)


@dataclass
class SnapshotConfig:
    signal_radius_m: float = 60.0  # traffic lights / stop signs whose stop lines are this near are kept
    actor_radius_m: float = 120.0  # other actors farther than this from the ego are left out
    route_window_points: int = 50  # dense points ahead searched when locating the ego on the route
    stop_line_search_m: float = 30.0  # how far a stop waypoint is followed to find its junction
    trigger_sample_step_m: float = 1.0  # spacing of the points sampled across a trigger volume
    trigger_extent_fraction: float = 0.9  # only this share of the volume's width (not the next lane)
    stop_waypoint_step_m: float = 0.5  # step when advancing a trigger waypoint to the junction entry
    # role_name attribute -> ActorRole name; anything else is background traffic.
    roles: dict[str, str] = field(
        default_factory=lambda: {
            "scenario": "SCENARIO",
            "scenario no lights": "SCENARIO",
            "background": "BACKGROUND",
            "parked": "PARKED",
        }
    )
    emergency_type_ids: list[str] = field(
        default_factory=lambda: [
            "vehicle.dodge.charger_police",
            "vehicle.dodge.charger_police_2020",
            "vehicle.ford.ambulance",
            "vehicle.carlamotors.firetruck",
        ]
    )


@dataclass
class ServerConfig:
    carla_root: str = ""  # empty: $CARLA_ROOT
    executable: str = "CarlaUE4.sh"  # relative to carla_root, or absolute
    args: list[str] = field(default_factory=lambda: ["-RenderOffScreen", "-nosound"])
    port_flag: str = "-carla-rpc-port={port}"
    gpu_flag: str = "-graphicsadapter={gpu}"  # empty: select the GPU by CUDA_VISIBLE_DEVICES only
    gpus: list[int] = field(default_factory=lambda: [0])  # one server per entry
    # Servers run by someone else (docker compose): the host of each, in gpus order; empty = the pool's host.
    external_hosts: list[str] = field(default_factory=list)
    base_port: int = 2000
    base_tm_port: int = 8000
    port_stride: int = 10  # server i: rpc base_port + i*stride (+1 streaming, +2 secondary), tm likewise
    startup_timeout_s: float = 180.0
    ready_poll_s: float = 1.0
    ready_rpc_check: bool = True  # after the port opens, also wait for get_server_version to answer
    stop_timeout_s: float = 20.0  # SIGTERM, then SIGKILL after this long
    max_tries: int = 3  # runs of one route before giving up (a crash restarts the server)
    restart_backoff_s: float = 5.0
    log_dir: str = "runs/carla_logs"


@dataclass
class LeaderboardConfig:
    bench2drive_root: str = ""  # empty: $BENCH2DRIVE_ROOT
    evaluator: str = "leaderboard/leaderboard/leaderboard_evaluator.py"  # relative to bench2drive_root
    pythonpath: list[str] = field(default_factory=lambda: ["leaderboard", "scenario_runner"])
    carla_pythonapi: list[str] = field(
        default_factory=lambda: [
            "PythonAPI/carla",
            "PythonAPI/carla/dist/carla-0.9.15-py3.7-linux-x86_64.egg",
        ]
    )  # relative to carla_root
    python: str = ""  # interpreter of the evaluator; empty: this one
    track: str = "SENSORS"
    repetitions: int = 1
    client_timeout_s: float = 600.0  # the evaluator's --timeout
    run_timeout_s: float = 10800.0  # wall-clock limit of one evaluator run
    debug: int = 0
    extra_args: list[str] = field(default_factory=list)
    out_dir: str = "runs/leaderboard"


@dataclass
class AgentStoreConfig:
    db_url: str = ""  # empty: $TAKEOVER_DB_URL, else conf/storage.yaml
    clip_root: str = ""  # empty: $TAKEOVER_CLIP_ROOT, else conf/storage.yaml


@dataclass
class AgentConfig:
    """The leaderboard agent (carla_bridge/leaderboard_agent.py), also the schema of --agent-config files."""

    mode: str = (
        "takeover"  # takeover.episode mode: takeover (DAgger rollouts) | policy (eval) | expert (demos)
    )
    policy: str = ""  # policy:PATH.pt (a takeover.policy checkpoint); modes takeover and policy need one
    ego_source: str = "privileged"  # privileged: hero actor; sensors: GNSS + IMU compass + speedometer
    run: str = "carla"  # experiment name of the stored episodes
    iteration: int = -1  # -1: none
    phase: str = ""  # empty: the mode's (rollout, eval, expert)
    route_set: str = "bench2drive"
    route_id: str = ""  # empty: found from the evaluator's --routes file by the plan's start
    repetition: int = 0
    backend: str = "carla"
    seed: int = 0
    record: bool = True  # write the episode and its takeovers
    episode_outbox: str = ""  # set: leave the episode there for the launcher to ingest; empty: ingest here
    metric_info_dir: str = ""  # Bench2Drive metric_info.json root; empty: $SAVE_PATH, else not written
    speed_sensor_hz: float = 20.0
    gnss_sensor_tick_s: float = 0.01
    imu_sensor_tick_s: float = 0.05
    episode_overrides: list[str] = field(default_factory=list)  # dotlist for conf/episode.yaml
    store: AgentStoreConfig = field(default_factory=AgentStoreConfig)
    cameras: list[CameraConfig] = field(default_factory=list)


@dataclass
class CarlaConfig:
    client: ClientConfig = field(default_factory=ClientConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    ego: EgoConfig = field(default_factory=EgoConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    sensors: SensorsConfig = field(default_factory=SensorsConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    leaderboard: LeaderboardConfig = field(default_factory=LeaderboardConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)


EGO_SOURCES = ("privileged", "sensors")
OVERRIDES_ENV = "TAKEOVER_CARLA_OVERRIDES"


def validate_carla_config(config: CarlaConfig) -> CarlaConfig:
    """The config itself when usable; CarlaConfigError naming the field and the fix otherwise."""
    positive = {
        "client.timeout_s": config.client.timeout_s,
        "client.load_world_timeout_s": config.client.load_world_timeout_s,
        "client.probe_timeout_s": config.client.probe_timeout_s,
        "world.fixed_delta_s": config.world.fixed_delta_s,
        "server.startup_timeout_s": config.server.startup_timeout_s,
        "server.ready_poll_s": config.server.ready_poll_s,
        "server.max_tries": config.server.max_tries,
        "server.port_stride": config.server.port_stride,
        "leaderboard.run_timeout_s": config.leaderboard.run_timeout_s,
        "snapshot.trigger_sample_step_m": config.snapshot.trigger_sample_step_m,
        "snapshot.stop_waypoint_step_m": config.snapshot.stop_waypoint_step_m,
    }
    for name, value in positive.items():
        if not value > 0:
            raise CarlaConfigError(f"{name}={value} must be positive; fix conf/carla.yaml")
    if config.server.port_stride < 3:
        raise CarlaConfigError(
            f"server.port_stride={config.server.port_stride} is below 3: CARLA uses ports P, P+1 and P+2, "
            "so servers would share ports; set it to 3 or more in conf/carla.yaml"
        )
    if not config.server.gpus:
        raise CarlaConfigError("server.gpus is empty: list at least one GPU index in conf/carla.yaml")
    hosts = config.server.external_hosts
    if hosts and len(hosts) != len(config.server.gpus):
        raise CarlaConfigError(
            f"server.external_hosts names {len(hosts)} host(s) for {len(config.server.gpus)} server(s) "
            "(server.gpus): give one host per server"
        )
    validate_agent_config(config.agent)
    return config


def validate_agent_config(agent: AgentConfig) -> AgentConfig:
    if agent.ego_source not in EGO_SOURCES:
        raise CarlaConfigError(
            f"agent.ego_source={agent.ego_source!r} is unknown: use one of {', '.join(EGO_SOURCES)}"
        )
    return agent


def load_carla_config(overrides: list[str] | None = None) -> CarlaConfig:
    """CarlaConfig defaults <- conf/carla.yaml <- $TAKEOVER_CARLA_OVERRIDES <- dotlist overrides.

    The environment variable holds space-separated dotlist items (``server.gpus=[0,1] client.port=2010``):
    how a container (docker/compose.yaml) configures the worker without editing files.
    """
    from_env = os.environ.get(OVERRIDES_ENV, "").split()
    try:
        config = load_config(CarlaConfig, "carla", [*from_env, *(overrides or [])])
    except OmegaConfBaseException as exc:
        raise CarlaConfigError(f"conf/carla.yaml or an override is invalid: {exc}") from None
    return validate_carla_config(config)


def load_agent_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AgentConfig:
    """`agent` of conf/carla.yaml <- the YAML file at `path` (the evaluator's --agent-config) <- overrides."""
    base = OmegaConf.structured(load_carla_config().agent)
    try:
        if path:
            file = Path(path)
            if not file.is_file():
                raise CarlaConfigError(
                    f"agent config {file} does not exist: pass --agent-config with a YAML file of "
                    "AgentConfig fields (carla_bridge/carla_client/config.py)"
                )
            base = OmegaConf.merge(base, OmegaConf.load(file))
        if overrides:
            base = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        agent = OmegaConf.to_object(base)
    except OmegaConfBaseException as exc:
        raise CarlaConfigError(f"agent config {path} is invalid: {exc}") from None
    assert isinstance(agent, AgentConfig)
    return validate_agent_config(agent)


def write_agent_config(agent: AgentConfig, path: str | Path) -> Path:
    """The agent config as YAML at `path` (what --agent-config reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(agent)), encoding="utf-8")
    return path
