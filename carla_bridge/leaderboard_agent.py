"""Bench2Drive / CARLA leaderboard 2.0 agent entry point: the policy with the shadow expert and monitor.

Run it with Bench2Drive's evaluator::

    python leaderboard/leaderboard/leaderboard_evaluator.py --agent=<repo>/carla_bridge/leaderboard_agent.py \\
        --agent-config=agent.yaml --routes=... --port=2000 --traffic-manager-port=8000 ...

(`carla_bridge.carla_client.leaderboard.run_leaderboard_route` builds that command). The evaluator
calls, per route: ``TakeoverAgent(host, port, debug)``, ``set_global_plan(gps_route, world_route)``,
``setup(agent_config_path)``, ``sensors()``, then ``run_step(input_data, timestamp)`` every tick
(20 Hz) and ``destroy()`` at the end.

Per tick the agent builds a WorldSnapshot: the ego from the sensors (GNSS, IMU compass and
gyroscope, speedometer; `ego_source: sensors`) or from the hero actor (`privileged`), everything
else from the privileged world (CarlaDataProvider: actors, lights, stop signs), and route progress
on the global plan. The agent scores the route itself (carla_bridge.scoring.RouteCriteria: the
evaluator keeps its own verdict to itself) and hands the snapshot, with the tick's infractions, to a
`takeover.episode.EpisodeStepper` (the same per-tick step as the embedded episodes: expert plan,
policy act, monitor update, clips) on the evaluator's thread, and returns the chosen control as a
carla.VehicleControl. The evaluator, not the route's scoring, decides when the route ends: destroy()
finishes the episode. It also keeps Bench2Drive's per-step metric info (metric_info.json, read by
its efficiency / smoothness tools).

At destroy() the episode (takeovers and clips) is stored (`record: true`): into the outbox for the
launcher to ingest after the evaluator's verdict (`episode_outbox`), or straight into the store.
Nothing is stored when a tick failed or the world no longer answers (a crash): no half episode.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import carla
import numpy as np

if not __package__:  # the evaluator imports this file by path, as a top-level module
    _REPO_ROOT = str(Path(__file__).resolve().parents[1])
    if _REPO_ROOT not in sys.path:
        sys.path.append(_REPO_ROOT)

from carla_bridge.carla_client.config import AgentConfig, load_agent_config
from carla_bridge.carla_client.episode_outbox import EpisodeBundle, store_episode, write_bundle
from carla_bridge.carla_client.leaderboard_io import (
    decode_input_data,
    ego_from_sensors,
    route_from_global_plan,
)
from carla_bridge.carla_client.sensors import leaderboard_sensors
from carla_bridge.carla_client.snapshot_builder import RouteTracker
from carla_bridge.carla_client.world_sources import CarlaProviderSource, WorldSource
from carla_bridge.errors import TakeoverError
from carla_bridge.geo import geo_reference
from carla_bridge.route import Route
from carla_bridge.scoring.criteria import RouteCriteria
from carla_bridge.snapshot import Control, WorldSnapshot

if TYPE_CHECKING:
    from takeover.episode import EpisodeStepper

try:  # inside Bench2Drive's evaluator
    from leaderboard.autoagents.autonomous_agent import AutonomousAgent, Track

    SENSORS_TRACK: Any = Track.SENSORS
except ImportError:  # tests, the embedded harness
    AutonomousAgent = object  # type: ignore[assignment,misc]
    SENSORS_TRACK = "SENSORS"

log = logging.getLogger(__name__)

ENTRY_POINT = "TakeoverAgent"
SAVE_PATH_ENV = "SAVE_PATH"  # where Bench2Drive's agents write their per-route folders
METRIC_INFO_FILE = "metric_info.json"
ROUTE_MATCH_RADIUS_M = 10.0  # a route of the --routes file starts this close to the plan's start
ROUTES_FLAG = "--routes"


def get_entry_point() -> str:
    return ENTRY_POINT


def to_vehicle_control(control: Control) -> carla.VehicleControl:
    c = control.clipped()
    return carla.VehicleControl(
        throttle=c.throttle,
        steer=c.steer,
        brake=c.brake,
        hand_brake=c.hand_brake,
        reverse=c.reverse,
        manual_gear_shift=False,
    )


def routes_file_from_argv(argv: list[str]) -> Path | None:
    """The evaluator's --routes file from its command line (``--routes=F`` or ``--routes F``)."""
    for i, arg in enumerate(argv):
        if arg.startswith(ROUTES_FLAG + "="):
            return Path(arg.split("=", 1)[1])
        if arg == ROUTES_FLAG and i + 1 < len(argv):
            return Path(argv[i + 1])
    return None


def identify_route(routes: list[Route], start_xy: np.ndarray) -> Route | None:
    """The route whose first keypoint is nearest the plan's start (within ROUTE_MATCH_RADIUS_M)."""
    best, best_d = None, ROUTE_MATCH_RADIUS_M
    for route in routes:
        d = float(np.hypot(*(np.asarray(route.keypoints[0][:2]) - start_xy)))
        if d <= best_d:
            best, best_d = route, d
    return best


class TakeoverAgent(AutonomousAgent):  # type: ignore[misc,valid-type]
    """The leaderboard agent (see the module docstring)."""

    def __init__(
        self,
        carla_host: str = "127.0.0.1",
        carla_port: int = 2000,
        debug: bool = False,
        *,
        world_source: WorldSource | None = None,
    ) -> None:
        if AutonomousAgent is not object:
            super().__init__(carla_host, carla_port, debug)
        self.track = SENSORS_TRACK
        self.config: AgentConfig | None = None
        self.world_source = world_source
        self._gps_plan: list | None = None
        self._world_plan: list | None = None
        self._route: Route | None = None
        self._tracker: RouteTracker | None = None
        self._geo: tuple[float, float] = (0.0, 0.0)
        self._criteria: RouteCriteria | None = None
        self._stepper: EpisodeStepper | None = None
        self._checkpoint_path: str | None = None
        self._control = Control()
        self._frame = 0
        self._t0: float | None = None
        self._failed: BaseException | None = None
        self._metric_info: dict[str, dict[str, list[float]]] = {}
        self._scenario_types: tuple[str, ...] = ()
        self.stored: Any = None  # the episode id (store) or bundle path (outbox) after destroy()
        self.result: Any = None  # the episode's EpisodeResult after destroy()

    # ------------------------------------------------------------------ leaderboard interface
    def setup(self, path_to_conf_file: str | None) -> None:
        self.config = load_agent_config(path_to_conf_file or None)
        leaderboard_sensors(self.config)  # a sensor list the evaluator would refuse fails here, clearly

    def sensors(self) -> list[dict[str, Any]]:
        return leaderboard_sensors(self._cfg)

    def set_global_plan(self, global_plan_gps: list, global_plan_world_coord: list) -> None:
        """Keep the full 1 m plan (the base class keeps a down-sampled copy for sensor agents)."""
        self._gps_plan = list(global_plan_gps)
        self._world_plan = list(global_plan_world_coord)
        if AutonomousAgent is not object:
            super().set_global_plan(global_plan_gps, global_plan_world_coord)

    def run_step(self, input_data: Mapping[str, Any], timestamp: float) -> carla.VehicleControl:
        try:
            control = self._run_step(input_data, float(timestamp))
        except BaseException as exc:
            self._failed = exc
            raise
        return to_vehicle_control(control)

    def destroy(self) -> None:
        """End the episode; store it unless the route broke off (see the module docstring)."""
        try:
            self._finish()
        finally:
            self._write_metric_info()
            self._stepper = None
            self._criteria = None

    # ------------------------------------------------------------------ internals
    @property
    def _cfg(self) -> AgentConfig:
        if self.config is None:
            raise TakeoverError("TakeoverAgent.setup(agent_config) must be called before driving")
        return self.config

    def _start(self) -> None:
        cfg = self._cfg
        if self._world_plan is None:
            raise TakeoverError(
                "the evaluator gave no global plan: set_global_plan must come before run_step"
            )
        if self.world_source is None:
            self.world_source = CarlaProviderSource(_snapshot_config())
        source = self.world_source
        cmap = source.map()
        self._geo = geo_reference(cmap.to_opendrive())
        town = source.town()
        known = self._known_route(town)
        route_id = cfg.route_id or (known.id if known is not None else "unknown")
        route = route_from_global_plan(self._world_plan, cmap, route_id, town)
        if known is not None:
            route.scenarios = list(known.scenarios)
            route.weathers = list(known.weathers)
        self._route = route
        assert route.dense is not None
        self._tracker = RouteTracker(route.dense, _snapshot_config().route_window_points)
        stepper = self._episode_stepper(route, cmap)  # a bad agent config fails before the world starts
        criteria = RouteCriteria(route, cmap)
        source.start(route)
        self._stepper, self._criteria = stepper, criteria

    def _known_route(self, town: str) -> Route | None:
        """The route of the evaluator's --routes file this plan follows (for its id and scenarios)."""
        path = routes_file_from_argv(sys.argv)
        if path is None or not path.is_file() or not self._world_plan:
            return None
        from carla_bridge.route_xml import parse_routes

        try:
            routes = parse_routes(path)
        except TakeoverError as exc:
            log.warning("cannot read the evaluator's routes file %s: %s", path, exc)
            return None
        if self._cfg.route_id:
            return next((r for r in routes if r.id == self._cfg.route_id), None)
        first = self._world_plan[0][0].location
        return identify_route([r for r in routes if r.town.endswith(town)], np.array([first.x, first.y]))

    def _episode_stepper(self, route: Route, cmap: carla.Map) -> EpisodeStepper:
        """The route's EpisodeStepper with the configured policy, expert and monitor."""
        from carla_bridge.config import load_config
        from experts.config import ExpertConfig
        from experts.expert import PDMLiteExpert
        from takeover.episode import EpisodeStepper, EpisodeTags, load_episode_config
        from takeover.monitor import TakeoverMonitor, load_monitor_config

        cfg = self._cfg
        overrides = [f"mode={cfg.mode}", f"backend={cfg.backend}", "max_time_s=0", *cfg.episode_overrides]
        episode_config = load_episode_config(overrides)
        policy, feature_config, sha = self._load_policy()
        expert = PDMLiteExpert(load_config(ExpertConfig, "expert")) if cfg.mode != "policy" else None
        monitor = TakeoverMonitor(load_monitor_config()) if cfg.mode == "takeover" else None
        tags = EpisodeTags(
            run=cfg.run,
            route_set=cfg.route_set,
            iteration=None if cfg.iteration < 0 else cfg.iteration,
            checkpoint_sha256=sha,
            phase=cfg.phase or None,
            repetition=cfg.repetition,
        )
        return EpisodeStepper(
            route,
            cfg.seed,
            policy,
            expert,
            monitor,
            episode_config,
            tags=tags,
            feature_config=feature_config,
            cmap=cmap,
        )

    def _load_policy(self):
        cfg = self._cfg
        if cfg.mode == "expert":
            return None, None, None
        spec = cfg.policy
        path = spec.removeprefix("policy:")
        if not path or not (spec.startswith("policy:") or path.endswith(".pt")):
            raise TakeoverError(
                f"agent.mode={cfg.mode} needs a policy checkpoint: set agent.policy to policy:PATH.pt "
                f"(got {spec!r})"
            )
        from takeover.policy import HybridPolicy, file_sha256

        policy, _ = HybridPolicy.from_checkpoint(Path(path))
        self._checkpoint_path = str(Path(path).resolve())
        return policy, policy.config, file_sha256(path)

    def _run_step(self, input_data: Mapping[str, Any], timestamp: float) -> Control:
        cfg = self._cfg
        if self._stepper is None:
            self._start()
        assert self._tracker is not None and self.world_source is not None
        inputs = decode_input_data(input_data, [c.id for c in cfg.cameras])
        if self._t0 is None:
            self._t0 = timestamp
        time_s = timestamp - self._t0
        world = self.world_source.snapshot(self._frame, time_s, self._control)
        ego = world.ego
        if cfg.ego_source == "sensors":
            ego = ego_from_sensors(
                inputs,
                *self._geo,
                world.ego.extent,
                world.ego.type_id,
                self._control,
                fallback_yaw=ego.pose.yaw,
            )
        snapshot = type(world)(
            frame=self._frame,
            time_s=time_s,
            town=world.town,
            ego=ego,
            actors=world.actors,
            traffic_lights=world.traffic_lights,
            stop_signs=world.stop_signs,
            route=self._tracker.update(ego.pose.x, ego.pose.y),
            scenarios=world.scenarios,
            events=(),
            extras=dict(world.extras),
        )
        self._metric_info[str(self._frame)] = self.world_source.metric_info(snapshot)
        control = self._tick(snapshot)
        self._control = control
        self._frame += 1
        return control

    def _tick(self, snapshot: WorldSnapshot) -> Control:
        """Score the tick (its infractions go into the snapshot's events), then let the episode decide."""
        stepper, criteria = self._stepper, self._criteria
        assert stepper is not None and criteria is not None
        events = criteria.update(snapshot)
        if events:
            snapshot = dataclasses.replace(snapshot, events=(*snapshot.events, *events))
        if not stepper.started:
            stepper.start(snapshot)
        return stepper.tick(snapshot)

    def _finish(self) -> None:
        stepper, criteria = self._stepper, self._criteria
        if stepper is None or criteria is None:
            return
        if not stepper.started:
            log.warning("no episode to store: route %s ended before its first tick", self._route_id)
            return
        record = criteria.record(index=0, duration_system_s=stepper.elapsed_s)
        try:
            result = stepper.finish(record, criteria.events)
        except Exception as exc:
            if self._failed is None:
                raise
            # The failed tick's error already reached the evaluator; a tick that broke inside the
            # episode may leave it unfinishable, and nothing of it is stored anyway.
            log.warning("route %s: no episode after the failed tick: %s", self._route_id, exc)
            return
        self.result = result
        cfg = self._cfg
        source = self.world_source
        if self._failed is not None or source is None or not source.alive():
            why = (
                f"tick failed: {self._failed}" if self._failed is not None else "the world no longer answers"
            )
            log.warning("route %s broke off (%s): its episode is not stored", self._route_id, why)
            return
        if not cfg.record:
            return
        bundle = EpisodeBundle(
            episode=result.episode,
            takeovers=tuple(result.takeovers),
            clips=tuple(result.clips),
            agent_record=result.record,
            checkpoint_path=self._checkpoint_path,
        )
        if cfg.episode_outbox:
            self.stored = write_bundle(bundle, cfg.episode_outbox)
            return
        from carla_bridge.config import load_config
        from storage import Store
        from storage.config import StorageConfig

        storage_config = load_config(StorageConfig, "storage")
        with Store.from_config(
            storage_config, db_url=cfg.store.db_url or None, clip_root=cfg.store.clip_root or None
        ) as store:
            self.stored = store_episode(store, bundle)

    @property
    def _route_id(self) -> str:
        return self._route.id if self._route is not None else "?"

    def _write_metric_info(self) -> None:
        root = (self.config.metric_info_dir if self.config else "") or os.environ.get(SAVE_PATH_ENV, "")
        if not root or not self._metric_info:
            return
        repetition = self.config.repetition if self.config else 0
        folder = Path(root) / f"RouteScenario_{self._route_id}_rep{repetition}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{METRIC_INFO_FILE}.tmp"
        tmp.write_text(json.dumps(self._metric_info, indent=1), encoding="utf-8")
        os.replace(tmp, folder / METRIC_INFO_FILE)


def _snapshot_config():
    from carla_bridge.carla_client.config import load_carla_config

    return load_carla_config().snapshot


__all__ = ["ENTRY_POINT", "TakeoverAgent", "get_entry_point", "to_vehicle_control"]
