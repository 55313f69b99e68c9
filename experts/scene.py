"""Actors expressed in the route frame: arc length along the path, lateral offset, extents and speeds.

Every behaviour (leading vehicle, obstacle clusters, oncoming traffic, emergency vehicles) reads this
one projection, computed once per tick for the actors near the ego.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carla_bridge.geometry import box_half_spans, wrap_angle
from carla_bridge.snapshot import ActorKind, ActorRole, ActorTable
from experts.route_prep import PreparedRoute


@dataclass(frozen=True)
class RouteFrameActors:
    """Rows are actors near the route; `row` indexes the tick's ActorTable."""

    row: np.ndarray  # (N,) int
    id: np.ndarray  # (N,) int64
    kind: np.ndarray  # (N,) int8 ActorKind
    role: np.ndarray  # (N,) int8 ActorRole
    s: np.ndarray  # (N,) arc length of the centre, m
    d: np.ndarray  # (N,) lateral offset of the centre, right positive, m
    half_along: np.ndarray  # (N,) half extent along the path, m
    half_across: np.ndarray  # (N,) half extent across the path, m
    rel_yaw: np.ndarray  # (N,) actor yaw - path yaw, wrapped, rad
    v_along: np.ndarray  # (N,) velocity along the path, m/s (negative = oncoming)
    v_across: np.ndarray  # (N,) velocity across the path, right positive, m/s
    speed: np.ndarray  # (N,) m/s
    standing_s: np.ndarray  # (N,) seconds standing still

    def __len__(self) -> int:
        return int(self.row.shape[0])

    @property
    def s_near(self) -> np.ndarray:
        return self.s - self.half_along

    @property
    def s_far(self) -> np.ndarray:
        return self.s + self.half_along

    @property
    def d_left(self) -> np.ndarray:
        return self.d - self.half_across

    @property
    def d_right(self) -> np.ndarray:
        return self.d + self.half_across

    def lateral_overlap(self, centre: np.ndarray | float, half_width: np.ndarray | float) -> np.ndarray:
        """True where the actor's lateral span meets the band centre +- half_width."""
        return (self.d_right > np.asarray(centre) - half_width) & (
            self.d_left < np.asarray(centre) + half_width
        )

    def is_vehicle_like(self) -> np.ndarray:
        return (self.kind == ActorKind.VEHICLE) | (self.kind == ActorKind.BICYCLE)

    def is_emergency(self) -> np.ndarray:
        return self.role == ActorRole.EMERGENCY


def project_actors(
    route: PreparedRoute,
    actors: ActorTable,
    rows: np.ndarray,
    standing_s: np.ndarray,
    i0: int,
    i1: int,
    max_lateral_m: float,
    max_level_gap_m: float,
) -> tuple[RouteFrameActors, np.ndarray]:
    """Project `rows` of `actors` onto path[i0:i1].

    Returns the route frame of those within `max_lateral_m` of the path, and `rows` without the
    actors on another level (bridges, underpasses: height off the path's by more than
    `max_level_gap_m`), which nothing should react to.
    """
    if len(rows):
        s, d, pyaw = route.project(actors.xyz[rows, :2], i0, i1)
        level = np.abs(actors.xyz[rows, 2] - route.z[route.indices_at(s)]) <= max_level_gap_m
    else:
        s = d = pyaw = np.zeros(0)
        level = np.zeros(0, bool)
    same_level_rows = rows[level]
    keep = (np.abs(d) < max_lateral_m) & level
    rows, s, d, pyaw = rows[keep], s[keep], d[keep], pyaw[keep]
    rel = wrap_angle(actors.yaw[rows] - pyaw)
    along, across = box_half_spans(actors.extent[rows, 0], actors.extent[rows, 1], rel)
    vel = actors.velocity[rows]
    c, sn = np.cos(pyaw), np.sin(pyaw)
    return RouteFrameActors(
        row=rows,
        id=actors.id[rows],
        kind=actors.kind[rows],
        role=actors.role[rows],
        s=s,
        d=d,
        half_along=along,
        half_across=across,
        rel_yaw=rel,
        v_along=vel[:, 0] * c + vel[:, 1] * sn,
        v_across=-vel[:, 0] * sn + vel[:, 1] * c,
        speed=np.abs(actors.speed[rows]),
        standing_s=standing_s[rows],
    ), same_level_rows
