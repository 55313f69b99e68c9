"""Privileged world views for the leaderboard agent: what its expert and monitor see besides the sensors.

Inside Bench2Drive's evaluator the world comes from scenario_runner's CarlaDataProvider (the same
handle privileged agents such as PDM-Lite use); when the embedded simulator drives the agent (tests,
dry runs without CARLA), from that simulator's own snapshots. Both give a WorldSnapshot per tick.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import carla

from carla_bridge.carla_client.config import SnapshotConfig
from carla_bridge.carla_client.errors import ServerCrashedError
from carla_bridge.carla_client.leaderboard_io import metric_info
from carla_bridge.carla_client.snapshot_builder import SnapshotBuilder
from carla_bridge.errors import SimulatorError
from carla_bridge.maps import canonical_town
from carla_bridge.route import Route
from carla_bridge.snapshot import Control, WorldSnapshot


class WorldSource(Protocol):
    def map(self) -> carla.Map: ...

    def town(self) -> str: ...

    def start(self, route: Route) -> None:
        """The route the agent follows (from the global plan), before the first snapshot."""
        ...

    def snapshot(self, frame: int, time_s: float, control: Control) -> WorldSnapshot: ...

    def metric_info(self, snapshot: WorldSnapshot) -> dict[str, list[float]]: ...

    def alive(self) -> bool:
        """The world still answers (False after a server crash: the episode must not be stored)."""
        ...


def _vector(v: Any) -> list[float]:
    return [float(v.x), float(v.y), float(v.z)]


class CarlaProviderSource:
    """The live CARLA world through scenario_runner's CarlaDataProvider (only inside the evaluator)."""

    def __init__(self, config: SnapshotConfig) -> None:
        try:
            from srunner.scenariomanager.carla_data_provider import CarlaDataProvider
        except ImportError as exc:
            raise SimulatorError(
                "scenario_runner is not importable: run the agent inside Bench2Drive's leaderboard_evaluator.py "
                "(PYTHONPATH with Bench2Drive's leaderboard and scenario_runner), or pass world_source="
            ) from exc
        self._provider = CarlaDataProvider
        self._config = config
        self._builder: SnapshotBuilder | None = None

    def map(self) -> carla.Map:
        return self._provider.get_map()

    def town(self) -> str:
        return canonical_town(self.map().name)

    def start(self, route: Route) -> None:
        assert route.dense is not None
        self._builder = SnapshotBuilder(self.map(), route.town, route.dense, self._config)

    def snapshot(self, frame: int, time_s: float, control: Control) -> WorldSnapshot:
        assert self._builder is not None, "start(route) first"
        try:
            actors = self._provider.get_world().get_actors()
            return self._builder.build(frame, time_s, actors, control)
        except RuntimeError as exc:
            raise ServerCrashedError(f"the CARLA world stopped answering at frame {frame}: {exc}") from None

    def metric_info(self, snapshot: WorldSnapshot) -> dict[str, list[float]]:
        hero = self._provider.get_hero_actor()
        if hero is None:
            return metric_info(snapshot.ego)
        t = hero.get_transform()
        r = t.rotation
        return {
            "acceleration": _vector(hero.get_acceleration()),
            "angular_velocity": _vector(hero.get_angular_velocity()),
            "forward_vector": _vector(t.get_forward_vector()),
            "right_vector": _vector(t.get_right_vector()),
            "location": _vector(t.location),
            "rotation": [float(r.roll), float(r.pitch), float(r.yaw)],
            "velocity": _vector(hero.get_velocity()),
        }

    def alive(self) -> bool:
        try:
            self._provider.get_world().get_snapshot()
        except (RuntimeError, AttributeError):
            return False
        return True


class EmbeddedSource:
    """Snapshots of an embedded simulator that the caller steps (carla_client.leaderboard_harness)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.latest: WorldSnapshot | None = None

    def map(self) -> carla.Map:
        return self.sim.map

    def town(self) -> str:
        if self.latest is None:
            raise SimulatorError("EmbeddedSource: no snapshot yet; set `latest` after reset")
        return self.latest.town

    def start(self, route: Route) -> None:
        return None

    def snapshot(self, frame: int, time_s: float, control: Control) -> WorldSnapshot:
        if self.latest is None:
            raise SimulatorError("EmbeddedSource: no snapshot yet; set `latest` after reset")
        return self.latest

    def metric_info(self, snapshot: WorldSnapshot) -> dict[str, list[float]]:
        return metric_info(snapshot.ego)

    def alive(self) -> bool:
        return self.latest is not None and math.isfinite(self.latest.time_s)
