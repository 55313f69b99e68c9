"""One `WorldSnapshot` from CARLA actors: the ego, the other participants, lights, stop signs, route progress.

`SnapshotBuilder.build` takes the world's actors as they are (carla.ActorList, or any iterable of
actor-like objects, see carla_client.actors) and sorts them in one pass: the hero, traffic lights,
stop signs, and everything else for the ActorTable. Route progress is tracked like the embedded
simulator's: the dense index only moves forward, searched `route_window_points` ahead of the last.
"""

from __future__ import annotations

from collections.abc import Iterable

import carla
import numpy as np

from carla_bridge.carla_client.actors import actor_table, ego_state, is_hero
from carla_bridge.carla_client.config import SnapshotConfig
from carla_bridge.carla_client.signals import STOP_SIGN_TYPE_ID, TRAFFIC_LIGHT_TYPE_ID, SignalIndex
from carla_bridge.errors import SimulatorError
from carla_bridge.route import DenseRoute
from carla_bridge.route_planner import locate_on_route
from carla_bridge.snapshot import (
    Control,
    EgoState,
    InfractionEvent,
    RouteProgress,
    ScenarioInfo,
    WorldSnapshot,
)


class RouteTracker:
    """Monotone progress of the ego along a dense route."""

    def __init__(self, dense: DenseRoute, window_points: int) -> None:
        if len(dense) < 2:
            raise SimulatorError("the dense route has fewer than two points: plan the route first")
        self.dense = dense
        self.window_points = window_points
        self.index = 0

    def update(self, x: float, y: float) -> RouteProgress:
        index, distance = locate_on_route(self.dense, (x, y), self.index, self.window_points)
        self.index = max(self.index, index)
        return RouteProgress(
            index=self.index,
            completed_m=float(self.dense.s[self.index]),
            total_m=float(self.dense.s[-1]),
            distance_to_route=distance,
            command=int(self.dense.commands[self.index]),
        )


class SnapshotBuilder:
    """Builds the snapshots of one route run on one map."""

    def __init__(self, cmap: carla.Map, town: str, dense: DenseRoute, config: SnapshotConfig) -> None:
        self.town = town
        self.config = config
        self.signals = SignalIndex(cmap, config)
        self.tracker = RouteTracker(dense, config.route_window_points)

    def build(
        self,
        frame: int,
        time_s: float,
        actors: Iterable,
        control: Control | None = None,
        *,
        ego: EgoState | None = None,
        scenarios: tuple[ScenarioInfo, ...] = (),
        events: tuple[InfractionEvent, ...] = (),
    ) -> WorldSnapshot:
        """The snapshot of one tick. The ego is the actor with role_name 'hero' unless `ego` is given."""
        hero = None
        lights, signs, others = [], [], []
        for actor in actors:
            type_id = str(actor.type_id)
            if type_id == TRAFFIC_LIGHT_TYPE_ID:
                lights.append(actor)
            elif type_id == STOP_SIGN_TYPE_ID:
                signs.append(actor)
            elif hero is None and is_hero(actor):
                hero = actor
            else:
                others.append(actor)
        if ego is None:
            if hero is None:
                raise SimulatorError(
                    "no actor with role_name 'hero' in the world: the ego was destroyed or never spawned"
                )
            ego = ego_state(hero, control)
        ego_xy = np.array([ego.pose.x, ego.pose.y])
        return WorldSnapshot(
            frame=int(frame),
            time_s=float(time_s),
            town=self.town,
            ego=ego,
            actors=actor_table(others, self.config, ego_xy, exclude_id=-1 if hero is None else int(hero.id)),
            traffic_lights=self.signals.traffic_lights(lights, ego_xy),
            stop_signs=self.signals.stop_signs(signs, ego_xy),
            route=self.tracker.update(ego.pose.x, ego.pose.y),
            scenarios=scenarios,
            events=events,
        )
