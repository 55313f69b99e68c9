"""Scenario-owned actors off the lane graph: path followers with a speed profile, and static props.

Each actor stands still until given a path; on a path it tracks arc length s with a target speed
(constant or a function of the time since the path was set) under acceleration limits:

    v' = v + clip(v_target - v, -decel dt, accel dt);   s' = s + v' dt;   pose = polyline(s')

At the end of its path the actor stops (or is removed when `remove_at_end`). There are few such
actors per episode, so this runs as a small per-actor loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from carla_bridge.snapshot import ActorKind, ActorRole

SpeedProfile = float | Callable[[float], float]  # m/s, or f(seconds since the path started) -> m/s


@dataclass
class ScriptedActor:
    id: int
    kind: ActorKind
    role: ActorRole
    type_id: str
    extent: tuple[float, float, float]
    x: float
    y: float
    z: float
    yaw: float
    speed: float = 0.0
    accel: float = 0.0
    path_xy: np.ndarray | None = None  # (M, 2)
    path_s: np.ndarray | None = None  # (M,)
    path_z: np.ndarray | None = None
    s: float = 0.0
    target: SpeedProfile = 0.0
    max_accel_mps2: float = 3.0
    max_decel_mps2: float = 8.0
    path_t0: float = 0.0
    remove_at_end: bool = False
    finished: bool = False  # reached the end of its path
    attrs: dict[str, float] = field(default_factory=dict)


class ScriptedActors:
    def __init__(self) -> None:
        self.actors: list[ScriptedActor] = []

    def __len__(self) -> int:
        return len(self.actors)

    def get(self, actor_id: int) -> ScriptedActor | None:
        for a in self.actors:
            if a.id == actor_id:
                return a
        return None

    def add(self, actor: ScriptedActor) -> None:
        self.actors.append(actor)

    def remove(self, actor_id: int) -> bool:
        n = len(self.actors)
        self.actors = [a for a in self.actors if a.id != actor_id]
        return len(self.actors) != n

    def set_path(
        self,
        actor_id: int,
        path_xy: np.ndarray,
        speed: SpeedProfile,
        time_s: float,
        path_z: np.ndarray | None = None,
        max_accel_mps2: float | None = None,
        max_decel_mps2: float | None = None,
        remove_at_end: bool = False,
    ) -> None:
        a = self.get(actor_id)
        if a is None:
            raise KeyError(f"no scripted actor {actor_id}")
        p = np.asarray(path_xy, np.float64).reshape(-1, 2)
        if p.shape[0] < 2:
            raise ValueError("a path needs at least two points")
        seg = np.hypot(*np.diff(p, axis=0).T)
        a.path_xy = p
        a.path_s = np.concatenate([[0.0], np.cumsum(seg)])
        a.path_z = None if path_z is None else np.asarray(path_z, np.float64)
        a.s = 0.0
        a.target = speed
        a.path_t0 = time_s
        a.finished = False
        a.remove_at_end = remove_at_end
        if max_accel_mps2 is not None:
            a.max_accel_mps2 = max_accel_mps2
        if max_decel_mps2 is not None:
            a.max_decel_mps2 = max_decel_mps2
        self._place(a)

    def step(self, dt: float, time_s: float) -> list[int]:
        """Advance every actor on a path; returns ids that reached their end with remove_at_end."""
        gone: list[int] = []
        for a in self.actors:
            if a.path_xy is None or a.finished:
                a.accel = (0.0 - a.speed) / dt if a.speed else 0.0
                a.speed = 0.0
                continue
            t = a.target(time_s - a.path_t0) if callable(a.target) else float(a.target)
            dv = min(max(t - a.speed, -a.max_decel_mps2 * dt), a.max_accel_mps2 * dt)
            v = max(a.speed + dv, 0.0)
            a.accel = (v - a.speed) / dt
            a.speed = v
            a.s += v * dt
            if a.s >= float(a.path_s[-1]):
                a.s = float(a.path_s[-1])
                a.finished = True
                a.speed = 0.0
                if a.remove_at_end:
                    gone.append(a.id)
            self._place(a)
        return gone

    @staticmethod
    def _place(a: ScriptedActor) -> None:
        s_arr = a.path_s
        k = int(np.clip(np.searchsorted(s_arr, a.s, side="right") - 1, 0, len(s_arr) - 2))
        f = (a.s - s_arr[k]) / max(s_arr[k + 1] - s_arr[k], 1e-9)
        p0, p1 = a.path_xy[k], a.path_xy[k + 1]
        a.x = float(p0[0] + (p1[0] - p0[0]) * f)
        a.y = float(p0[1] + (p1[1] - p0[1]) * f)
        a.yaw = math.atan2(float(p1[1] - p0[1]), float(p1[0] - p0[0]))
        if a.path_z is not None:
            a.z = float(a.path_z[k] + (a.path_z[k + 1] - a.path_z[k]) * f)

    def arrays(self) -> dict[str, np.ndarray]:
        """Struct-of-arrays view for the snapshot and for the traffic obstacles."""
        acts = self.actors
        n = len(acts)
        out = {
            "id": np.fromiter((a.id for a in acts), np.int64, n),
            "kind": np.fromiter((int(a.kind) for a in acts), np.int8, n),
            "role": np.fromiter((int(a.role) for a in acts), np.int8, n),
            "xyz": np.asarray([(a.x, a.y, a.z) for a in acts], np.float64).reshape(n, 3),
            "yaw": np.fromiter((a.yaw for a in acts), np.float64, n),
            "speed": np.fromiter((a.speed for a in acts), np.float64, n),
            "extent": np.asarray([a.extent for a in acts], np.float64).reshape(n, 3),
        }
        out["velocity"] = np.column_stack([np.cos(out["yaw"]), np.sin(out["yaw"])]) * out["speed"][:, None]
        ctrl = np.full((n, 3), np.nan, np.float32)
        for i, a in enumerate(acts):
            if a.kind in (ActorKind.VEHICLE, ActorKind.BICYCLE):
                ctrl[i] = (max(a.accel, 0.0) / 3.5, 0.0, max(-a.accel, 0.0) / 8.0)
        out["control"] = np.clip(ctrl, 0.0, 1.0)
        out["type_id"] = tuple(a.type_id for a in acts)
        return out
