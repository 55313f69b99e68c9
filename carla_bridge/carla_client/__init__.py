"""The real CARLA path: a Simulator on a live server, snapshots from CARLA actors, server pools, and
Bench2Drive's leaderboard evaluator running this project's agent (carla_bridge/leaderboard_agent.py).

Modules: `config` (CarlaConfig, conf/carla.yaml), `connection` (connect with timeouts), `actors`,
`signals`, `snapshot_builder` (CARLA actors -> WorldSnapshot, pure), `weather`, `sensors`,
`backend` (CarlaSimulator), `server` (CarlaServer, CarlaServerPool), `leaderboard` (evaluator runs),
`leaderboard_io` (input_data, global plan, ego from sensors), `episode_outbox` (agent -> store hand-over), `world_sources`,
`leaderboard_harness` (the embedded simulator driving the agent like the evaluator).

Nothing here needs a server at import time; only `CarlaSimulator.reset` and the pool talk to one.
"""

from carla_bridge.carla_client.backend import CarlaSimulator
from carla_bridge.carla_client.config import (
    AgentConfig,
    CarlaConfig,
    CarlaConfigError,
    load_agent_config,
    load_carla_config,
)
from carla_bridge.carla_client.errors import (
    LeaderboardRunError,
    RouteRetriesExhaustedError,
    ServerCrashedError,
    ServerStartError,
    ServerUnreachableError,
)
from carla_bridge.carla_client.leaderboard import (
    LeaderboardPaths,
    LeaderboardRouteResult,
    leaderboard_command,
    leaderboard_env,
    run_leaderboard_route,
    run_leaderboard_routes,
)
from carla_bridge.carla_client.server import CarlaServer, CarlaServerPool, ExternalServer, server_slots
from carla_bridge.carla_client.snapshot_builder import SnapshotBuilder

__all__ = [
    "AgentConfig",
    "CarlaConfig",
    "CarlaConfigError",
    "CarlaServer",
    "CarlaServerPool",
    "CarlaSimulator",
    "ExternalServer",
    "LeaderboardPaths",
    "LeaderboardRouteResult",
    "LeaderboardRunError",
    "RouteRetriesExhaustedError",
    "ServerCrashedError",
    "ServerStartError",
    "ServerUnreachableError",
    "SnapshotBuilder",
    "leaderboard_command",
    "leaderboard_env",
    "load_agent_config",
    "load_carla_config",
    "run_leaderboard_route",
    "run_leaderboard_routes",
    "server_slots",
]
