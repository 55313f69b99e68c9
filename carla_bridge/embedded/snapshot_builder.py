"""Build the simulator-neutral `WorldSnapshot` of one tick from the embedded `World` (no per-actor objects)."""

from __future__ import annotations

import numpy as np

from carla_bridge.embedded.world import World
from carla_bridge.snapshot import (
    ActorKind,
    ActorRole,
    ActorTable,
    EgoState,
    Pose,
    RouteProgress,
    ScenarioInfo,
    WorldSnapshot,
)

_WALKER = np.int8(int(ActorKind.WALKER))
_BACKGROUND = np.int8(int(ActorRole.BACKGROUND))


def actor_table(world: World) -> ActorTable:
    """Traffic, walkers and scenario-owned actors, in that order, as one struct of arrays."""
    t, w = world.traffic, world.walkers
    _nt, nw, ns = len(t), len(w), len(world.scripted)
    parts_id = [t.id]
    parts = {
        "kind": [t.kind],
        "role": [t.role],
        "xyz": [t.xyz],
        "yaw": [t.yaw],
        "velocity": [t.velocity],
        "speed": [t.v],
        "extent": [t.extent],
        "control": [t.control],
    }
    type_ids = list(t.type_id)
    if nw:
        parts_id.append(w.id)
        parts["kind"].append(np.full(nw, _WALKER))
        parts["role"].append(np.full(nw, _BACKGROUND))
        parts["xyz"].append(w.xyz)
        parts["yaw"].append(w.yaw)
        parts["velocity"].append(w.velocity)
        parts["speed"].append(w.speed)
        parts["extent"].append(np.tile(np.asarray([0.25, 0.25, 0.90]), (nw, 1)))
        parts["control"].append(np.full((nw, 3), np.nan, np.float32))
        type_ids += w.type_id
    if ns:
        s = world.scripted.arrays()
        parts_id.append(s["id"])
        for k in parts:
            parts[k].append(s[k])
        type_ids += list(s["type_id"])
    if nw == 0 and ns == 0:  # the common hot path: copies of the traffic arrays only
        return ActorTable(
            id=t.id.copy(),
            kind=t.kind.copy(),
            role=t.role.copy(),
            xyz=t.xyz,
            yaw=t.yaw,
            velocity=t.velocity,
            speed=t.v.copy(),
            extent=t.extent.copy(),
            control=t.control,
            type_id=tuple(type_ids),
        )
    return ActorTable(
        id=np.concatenate(parts_id),
        kind=np.concatenate(parts["kind"]),
        role=np.concatenate(parts["role"]),
        xyz=np.concatenate(parts["xyz"]),
        yaw=np.concatenate(parts["yaw"]),
        velocity=np.concatenate(parts["velocity"]),
        speed=np.concatenate(parts["speed"]),
        extent=np.concatenate(parts["extent"]),
        control=np.concatenate(parts["control"]),
        type_id=tuple(type_ids),
    )


def build_snapshot(world: World, scenarios: tuple[ScenarioInfo, ...]) -> WorldSnapshot:
    x, y, yaw, v, _ = world.ego
    ego = EgoState(
        pose=Pose(x, y, world.ego_z, yaw),
        velocity=world.ego_velocity,
        speed=float(v),
        acceleration=world.ego_accel,
        yaw_rate=world.ego_yaw_rate,
        extent=world.ego_extent,
        control=world.ego_control,
        type_id=world.ego_type_id,
    )
    d = world.dense
    i = world.route_index
    route = RouteProgress(
        index=i,
        completed_m=float(d.s[i]),
        total_m=float(d.s[-1]),
        distance_to_route=world.route_lateral,
        command=int(d.commands[i]),
    )
    ego_xy = np.array([x, y])
    return WorldSnapshot(
        frame=world.frame,
        time_s=world.time_s,
        town=world.route.town,
        ego=ego,
        actors=actor_table(world),
        traffic_lights=world.signals.snapshot_lights(ego_xy),
        stop_signs=world.signals.snapshot_stop_signs(ego_xy),
        route=route,
        scenarios=scenarios,
    )
