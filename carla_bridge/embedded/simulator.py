"""`EmbeddedSimulator`: the vector-space closed-loop simulator implementing carla_bridge.simulator.Simulator."""

from __future__ import annotations

import dataclasses
import logging

import carla
import numpy as np

from carla_bridge.embedded.config import SimConfig, validate_sim_config
from carla_bridge.embedded.lane_graph import LaneGraph
from carla_bridge.embedded.scenarios import runner as scenario_runner
from carla_bridge.embedded.signals import signal_layout_for
from carla_bridge.embedded.snapshot_builder import build_snapshot
from carla_bridge.embedded.walkers import sidewalks_for
from carla_bridge.embedded.world import World
from carla_bridge.errors import RouteError, SimulatorError
from carla_bridge.route import Route
from carla_bridge.route_planner import plan_route
from carla_bridge.scoring.criteria import RouteCriteria
from carla_bridge.simulator import FIXED_DELTA_S
from carla_bridge.snapshot import Control, InfractionEvent, WorldSnapshot

log = logging.getLogger(__name__)

MIN_DENSE_POINTS = 2


class SimulatorNotResetError(SimulatorError, AttributeError):
    """Used before reset(). Also an AttributeError so that hasattr()/Protocol checks stay well-behaved."""


class EmbeddedSimulator:
    """Closed-loop simulator on carla.Map roads: bicycle-model ego, IDM traffic, lights, walkers, scenarios.

    `maps` is anything with `load(town) -> carla.Map` (carla_bridge.maps.MapLibrary).
    """

    dt: float = FIXED_DELTA_S

    def __init__(self, config: SimConfig | None = None, maps=None) -> None:
        self.config = validate_sim_config(config or SimConfig())
        if maps is None:
            try:
                from carla_bridge.maps import MapLibrary  # type: ignore[import-not-found]
            except ImportError as exc:
                raise SimulatorError(
                    "EmbeddedSimulator needs a map library: pass maps=MapLibrary(...) (carla_bridge.maps)"
                ) from exc
            maps = MapLibrary()
        self.maps = maps
        self._cmap: carla.Map | None = None
        self._world: World | None = None
        self._scenarios: scenario_runner.ScenarioRunner | None = None
        self._criteria = None
        self._events: list[InfractionEvent] = []
        self._last: WorldSnapshot | None = None

    # ------------------------------------------------------------------ protocol
    @property
    def map(self) -> carla.Map:
        if self._cmap is None:
            raise SimulatorNotResetError("no map loaded yet: call reset(route, seed) first")
        return self._cmap

    @property
    def world(self) -> World:
        """The internal world (scenario API, tests, tools)."""
        if self._world is None:
            raise SimulatorNotResetError("the simulator is not running: call reset(route, seed) first")
        return self._world

    @property
    def criteria(self) -> RouteCriteria | None:
        """The route's scoring criteria (None when `config.scoring` is off); `record()` at the end."""
        return self._criteria

    @property
    def done(self) -> bool:
        """True once the scoring criteria say the route has ended (always False without scoring)."""
        return bool(self._criteria is not None and self._criteria.done)

    def reset(self, route: Route, seed: int) -> WorldSnapshot:
        cfg = self.config
        cmap = self.maps.load(route.town)
        self._cmap = cmap
        if route.dense is None:
            route.dense = plan_route(route, cmap)
        if len(route.dense) < MIN_DENSE_POINTS:
            raise RouteError(route.id, "dense route has fewer than two points; check the route keypoints")
        graph = LaneGraph.for_map(cmap, cfg.lane_graph)
        layout = signal_layout_for(cmap, graph, cfg.signals)
        sidewalks = sidewalks_for(cmap, graph.spacing_m) if cfg.walkers.enabled else _no_sidewalks()
        world = World(cfg, cmap, graph, layout, sidewalks, route, seed, self.dt)
        self._world = world
        self._events = []
        self._scenarios = scenario_runner.ScenarioRunner(world, route.scenarios, cfg.scenarios)
        world.manage_traffic(initial=True)
        world.manage_walkers(initial=True)
        world._update_route_progress()
        self._criteria = RouteCriteria(route, cmap) if cfg.scoring else None
        return self._finish(build_snapshot(world, self._scenarios.infos()))

    def step(self, control: Control) -> WorldSnapshot:
        world = self.world
        if not isinstance(control, Control):
            raise SimulatorError(
                f"step() needs a carla_bridge.snapshot.Control, got {type(control).__name__}"
            )
        world.tick(_clipped(control))
        assert self._scenarios is not None
        self._scenarios.tick()
        return self._finish(build_snapshot(world, self._scenarios.infos()))

    def infractions(self) -> list[InfractionEvent]:
        return list(self._events)

    def close(self) -> None:
        self._world = None
        self._scenarios = None
        self._criteria = None

    # ------------------------------------------------------------------ helpers
    def _finish(self, snap: WorldSnapshot) -> WorldSnapshot:
        if self._criteria is not None:
            events = self._criteria.update(snap)
            if events:
                self._events.extend(events)
                snap = dataclasses.replace(snap, events=tuple(events))
        self._last = snap
        return snap


def _clipped(c: Control) -> Control:
    """Control.clipped() without numpy (this runs every tick)."""
    if 0.0 <= c.throttle <= 1.0 and -1.0 <= c.steer <= 1.0 and 0.0 <= c.brake <= 1.0:
        return c
    return Control(
        throttle=min(max(float(c.throttle), 0.0), 1.0),
        steer=min(max(float(c.steer), -1.0), 1.0),
        brake=min(max(float(c.brake), 0.0), 1.0),
        hand_brake=c.hand_brake,
        reverse=c.reverse,
    )


def _no_sidewalks():
    from carla_bridge.embedded.walkers import SidewalkNetwork

    return SidewalkNetwork(
        np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
        np.zeros(0), np.zeros(1, np.int64), np.zeros(0, np.int64),
    )  # fmt: skip


__all__ = ["EmbeddedSimulator"]
