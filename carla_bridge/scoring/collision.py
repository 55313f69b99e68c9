"""CollisionTest: ego box against every actor box, one event per collision.

The leaderboard listens to a collision sensor; here a contact is an overlap of the ego's oriented box
with an actor's (separating axes, vectorised over the actor table, plus a z-range check). Each tick of
contact plays the role of one sensor callback and goes through the leaderboard's de-duplication:

- the actor hit last is ignored for `same_actor_memory_s` (5 s) after the counted collision;
- a contact while the ego is within `min_area_m` (3 m) of a remembered collision place is ignored
  (this also merges two actors hit at once into one event, as the leaderboard does);
- remembered places are forgotten once the ego is more than `max_area_m` (5 m) away.

Kinds follow the leaderboard's type_id rules: walkers -> pedestrian; vehicles *and bicycles*
(CARLA's ``vehicle.*`` blueprints) -> vehicle; static props -> layout. Hitting map geometry
(buildings, poles, walls) is not modelled: the snapshot has no such meshes. Leaving the road shows up
in outside-route-lanes instead.
"""

from __future__ import annotations

import numpy as np

from carla_bridge.geometry import boxes_may_overlap, oriented_boxes_overlap
from carla_bridge.scoring.config import CollisionConfig
from carla_bridge.scoring.events import ego_location, make_event
from carla_bridge.snapshot import ActorKind, InfractionEvent, InfractionKind, WorldSnapshot

COLLISION_KIND: dict[ActorKind, InfractionKind] = {
    ActorKind.WALKER: InfractionKind.COLLISION_PEDESTRIAN,
    ActorKind.VEHICLE: InfractionKind.COLLISION_VEHICLE,
    ActorKind.BICYCLE: InfractionKind.COLLISION_VEHICLE,
    ActorKind.STATIC: InfractionKind.COLLISION_STATIC,
}

# Blueprint-like names for actors whose table carries no type_id.
FALLBACK_TYPE_ID: dict[ActorKind, str] = {
    ActorKind.VEHICLE: "vehicle.unknown",
    ActorKind.WALKER: "walker.pedestrian.unknown",
    ActorKind.BICYCLE: "vehicle.bicycle.unknown",
    ActorKind.STATIC: "static.prop.unknown",
}


def touching_actors(snapshot: WorldSnapshot, max_vertical_gap_m: float) -> np.ndarray:
    """Indices of actors whose box overlaps the ego's: planar SAT overlap and z ranges within the gap.

    z test: |z_a - z_e| <= ez_a + ez_e + gap (boxes are centred on their poses).
    """
    actors = snapshot.actors
    if len(actors) == 0:
        return np.zeros(0, dtype=np.int64)
    ego = snapshot.ego
    center = np.array([ego.pose.x, ego.pose.y])
    half = np.asarray(ego.extent[:2], dtype=float)
    near = np.flatnonzero(boxes_may_overlap(center, half, actors.xyz[:, :2], actors.extent[:, :2]))
    if near.size == 0:
        return near
    planar = oriented_boxes_overlap(
        center, ego.pose.yaw, half, actors.xyz[near, :2], actors.yaw[near], actors.extent[near, :2]
    )
    vertical = (
        np.abs(actors.xyz[near, 2] - ego.pose.z)
        <= actors.extent[near, 2] + float(ego.extent[2]) + max_vertical_gap_m
    )
    return near[planar & vertical]


class CollisionCriterion:
    """Counts collisions with pedestrians, vehicles and static objects (leaderboard CollisionTest)."""

    def __init__(self, config: CollisionConfig) -> None:
        self._config = config
        self._places: list[np.ndarray] = []  # ego positions of counted collisions still "near"
        self._last_id: int | None = None
        self._last_time_s = 0.0

    def update(self, snapshot: WorldSnapshot) -> list[InfractionEvent]:
        cfg = self._config
        ego_xy = np.array([snapshot.ego.pose.x, snapshot.ego.pose.y])
        self._places = [p for p in self._places if np.linalg.norm(ego_xy - p) <= cfg.max_area_m]
        if self._last_id is not None and snapshot.time_s - self._last_time_s > cfg.same_actor_memory_s:
            self._last_id = None

        events: list[InfractionEvent] = []
        actors = snapshot.actors
        for i in touching_actors(snapshot, cfg.max_vertical_gap_m):
            actor_id = int(actors.id[i])
            if actor_id == self._last_id:
                continue
            if any(np.linalg.norm(ego_xy - p) <= cfg.min_area_m for p in self._places):
                continue
            kind = ActorKind(int(actors.kind[i]))
            type_id = actors.type_id[i] if actors.type_id else FALLBACK_TYPE_ID[kind]
            message = (
                f"Agent collided against object with type={type_id} and id={actor_id} "
                f"at {ego_location(snapshot)}"
            )
            events.append(make_event(COLLISION_KIND[kind], snapshot, message, actor_id=actor_id))
            self._places.append(ego_xy.copy())
            self._last_id = actor_id
            self._last_time_s = snapshot.time_s
        return events
