"""Top-down BEV videos of driven routes (opencv mp4), rendered with the BEV rasteriser."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import carla
import cv2
import numpy as np

from carla_bridge.bev import BevConfig, BevRasterizer
from carla_bridge.config import load_config
from carla_bridge.geometry import world_to_ego
from carla_bridge.route import Route
from carla_bridge.snapshot import WorldSnapshot

VIDEO_FPS = 10  # every second tick of the 20 Hz simulation
TICKS_PER_FRAME = 2
HISTORY_TICKS = 100  # 5 s of ego trail


def plan_overlays(agent: object, snapshot: WorldSnapshot) -> dict[str, np.ndarray]:
    """Ego-frame waypoints of whatever plan the agent exposes (`last_plan.waypoints` world xy)."""
    plan = getattr(agent, "last_plan", None)
    waypoints = getattr(plan, "waypoints", None)
    if waypoints is None:
        waypoints = getattr(plan, "xy_world", None)
    if waypoints is None or len(waypoints) == 0:
        return {}
    return {getattr(agent, "name", "plan"): world_to_ego(np.asarray(waypoints)[:, :2], snapshot.ego.pose)}


class RouteVideo:
    """Collects snapshots of one route into an mp4; `add` every tick, `close` at the end."""

    def __init__(self, path: Path, cmap: carla.Map, route: Route, config: BevConfig | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bev = BevRasterizer(config or load_config(BevConfig, "bev"), cmap)
        self._route = route
        self._history: deque[tuple[float, float]] = deque(maxlen=HISTORY_TICKS)
        self._writer: cv2.VideoWriter | None = None
        self._tick = 0
        self.frames = 0

    def add(self, snapshot: WorldSnapshot, agent: object | None = None) -> None:
        self._history.append((snapshot.ego.pose.x, snapshot.ego.pose.y))
        self._tick += 1
        if (self._tick - 1) % TICKS_PER_FRAME:
            return
        raster = self._bev.rasterize(snapshot, self._route.dense, np.asarray(self._history))
        text = (
            f"route {self._route.id}  t={snapshot.time_s:5.1f}s  v={snapshot.ego.speed * 3.6:4.1f}km/h  "
            f"RC={snapshot.route.completion:5.1f}%"
        )
        rgb = self._bev.render_rgb(raster, plan_overlays(agent, snapshot) if agent else None, text)
        if self._writer is None:
            h, w = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (w, h))
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
