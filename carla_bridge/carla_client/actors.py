"""CARLA actors -> the snapshot's `EgoState` and `ActorTable` (pure: reads actor-like objects only).

An actor here is anything with CARLA's read API: ``id``, ``type_id``, ``attributes`` (dict of str),
``bounding_box`` (carla.BoundingBox, location relative to the actor), ``get_transform()``,
``get_velocity()``, ``get_acceleration()``, ``get_angular_velocity()`` (deg/s, ego only),
``get_control()`` (vehicles) and optionally ``get_light_state()`` (vehicles). In a live world these
are carla.Actor objects (their getters read the client's cached world snapshot, no RPC); in tests,
small classes holding real carla.Transform / Vector3D / BoundingBox values.

Conventions (carla_bridge.snapshot): a pose is the bounding-box centre in the world,
``T_actor.transform(bb.location)``; yaw in radians = radians(rotation.yaw); the planar velocity is
(v.x, v.y); the signed speed is the velocity along the heading, v . (cos yaw, sin yaw).

Kinds and roles:
- walker.pedestrian.*                       WALKER
- vehicle.* with base_type 'bicycle' (or, lacking base_type, number_of_wheels == 2)   BICYCLE
- other vehicle.*                           VEHICLE
- static.*                                  STATIC (cones, barriers, warning signs, debris)
- sensors, controllers, spectator, traffic lights and signs are no traffic participants (None).
Role from the role_name attribute (`SnapshotConfig.roles`), background otherwise; an emergency
vehicle (type in `emergency_type_ids` or special_type 'emergency') is EMERGENCY while its special
lights are on (or whenever its light state cannot be read).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import carla
import numpy as np

from carla_bridge.carla_client.config import SnapshotConfig
from carla_bridge.snapshot import ActorKind, ActorRole, ActorTable, Control, EgoState, Pose

HERO_ROLE_NAME = "hero"
EMERGENCY_SPECIAL_TYPE = "emergency"
SIREN_LIGHTS = int(carla.VehicleLightState.Special1) | int(carla.VehicleLightState.Special2)
VEHICLE_PREFIX = "vehicle."
WALKER_PREFIX = "walker.pedestrian"
STATIC_PREFIX = "static."
BICYCLE_BASE_TYPE = "bicycle"
TWO_WHEELS = "2"
NO_CONTROL = (math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class ActorClass:
    kind: ActorKind
    role: ActorRole


def role_name(actor) -> str:
    return str(dict(actor.attributes).get("role_name", ""))


def is_hero(actor) -> bool:
    return role_name(actor) == HERO_ROLE_NAME


def _sirens_on(actor) -> bool:
    getter = getattr(actor, "get_light_state", None)
    if getter is None:
        return True  # nothing to tell a parked emergency vehicle apart: treat it as one on duty
    return bool(int(getter()) & SIREN_LIGHTS)


def classify_actor(actor, config: SnapshotConfig) -> ActorClass | None:
    """Kind and role of one actor (module docstring), or None for non-participants."""
    type_id = str(actor.type_id)
    attributes: Mapping[str, str] = dict(actor.attributes)
    if type_id.startswith(WALKER_PREFIX):
        kind = ActorKind.WALKER
    elif type_id.startswith(VEHICLE_PREFIX):
        base_type = attributes.get("base_type", "").lower()
        two_wheels = not base_type and attributes.get("number_of_wheels") == TWO_WHEELS
        kind = ActorKind.BICYCLE if base_type == BICYCLE_BASE_TYPE or two_wheels else ActorKind.VEHICLE
    elif type_id.startswith(STATIC_PREFIX):
        kind = ActorKind.STATIC
    else:
        return None
    role_text = config.roles.get(attributes.get("role_name", ""), ActorRole.BACKGROUND.name)
    role = ActorRole[role_text]
    if kind == ActorKind.VEHICLE and _is_emergency(type_id, attributes, config) and _sirens_on(actor):
        role = ActorRole.EMERGENCY
    return ActorClass(kind, role)


def _is_emergency(type_id: str, attributes: Mapping[str, str], config: SnapshotConfig) -> bool:
    return type_id in config.emergency_type_ids or attributes.get("special_type") == EMERGENCY_SPECIAL_TYPE


def box_pose(transform: carla.Transform, box: carla.BoundingBox) -> Pose:
    """World pose of the box centre: p = T.transform(bb.location), yaw = radians(T.rotation.yaw)."""
    centre = transform.transform(box.location)
    return Pose(float(centre.x), float(centre.y), float(centre.z), math.radians(transform.rotation.yaw))


def signed_speed(vx: float, vy: float, yaw: float) -> float:
    """Speed along the heading: v . (cos yaw, sin yaw)."""
    return vx * math.cos(yaw) + vy * math.sin(yaw)


def vehicle_control(actor) -> Control:
    c = actor.get_control()
    return Control(
        throttle=float(c.throttle),
        steer=float(c.steer),
        brake=float(c.brake),
        hand_brake=bool(c.hand_brake),
        reverse=bool(c.reverse),
    )


def ego_state(actor, control: Control | None = None) -> EgoState:
    """EgoState of the hero. `control` is the one applied on the last step (the actor's own otherwise).

    yaw_rate = radians(angular_velocity.z): CARLA reports deg/s about z, positive as yaw grows.
    """
    transform = actor.get_transform()
    box = actor.bounding_box
    pose = box_pose(transform, box)
    v = actor.get_velocity()
    a = actor.get_acceleration()
    w = actor.get_angular_velocity()
    return EgoState(
        pose=pose,
        velocity=np.array([float(v.x), float(v.y)]),
        speed=signed_speed(float(v.x), float(v.y), pose.yaw),
        acceleration=np.array([float(a.x), float(a.y)]),
        yaw_rate=math.radians(float(w.z)),
        extent=np.array([float(box.extent.x), float(box.extent.y), float(box.extent.z)]),
        control=control if control is not None else vehicle_control(actor),
        type_id=str(actor.type_id),
    )


def actor_table(
    actors: Iterable, config: SnapshotConfig, center_xy: Sequence[float] | None = None, exclude_id: int = -1
) -> ActorTable:
    """Every traffic participant but `exclude_id` (the ego), within `actor_radius_m` of `center_xy`."""
    ids: list[int] = []
    kinds: list[int] = []
    roles: list[int] = []
    xyz: list[tuple[float, float, float]] = []
    yaw: list[float] = []
    velocity: list[tuple[float, float]] = []
    speed: list[float] = []
    extent: list[tuple[float, float, float]] = []
    control: list[tuple[float, float, float]] = []
    type_ids: list[str] = []
    radius2 = config.actor_radius_m**2
    for actor in actors:
        if int(actor.id) == exclude_id or is_hero(actor):
            continue
        cls = classify_actor(actor, config)
        if cls is None:
            continue
        pose = box_pose(actor.get_transform(), actor.bounding_box)
        if center_xy is not None and (pose.x - center_xy[0]) ** 2 + (pose.y - center_xy[1]) ** 2 > radius2:
            continue
        v = actor.get_velocity()
        e = actor.bounding_box.extent
        ids.append(int(actor.id))
        kinds.append(int(cls.kind))
        roles.append(int(cls.role))
        xyz.append((pose.x, pose.y, pose.z))
        yaw.append(pose.yaw)
        velocity.append((float(v.x), float(v.y)))
        speed.append(signed_speed(float(v.x), float(v.y), pose.yaw))
        extent.append((float(e.x), float(e.y), float(e.z)))
        if cls.kind in (ActorKind.VEHICLE, ActorKind.BICYCLE):
            c = actor.get_control()
            control.append((float(c.throttle), float(c.steer), float(c.brake)))
        else:
            control.append(NO_CONTROL)
        type_ids.append(str(actor.type_id))
    if not ids:
        return ActorTable.empty()
    return ActorTable(
        id=np.asarray(ids, np.int64),
        kind=np.asarray(kinds, np.int8),
        role=np.asarray(roles, np.int8),
        xyz=np.asarray(xyz, np.float64),
        yaw=np.asarray(yaw, np.float64),
        velocity=np.asarray(velocity, np.float64),
        speed=np.asarray(speed, np.float64),
        extent=np.asarray(extent, np.float64),
        control=np.asarray(control, np.float32),
        type_id=tuple(type_ids),
    )
