"""Catalogue of actor blueprints the embedded simulator spawns: CARLA type ids and box half extents.

Extents are those of the CARLA 0.9.15/0.9.16 blueprints (bounding_box.extent, metres), rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from carla_bridge.snapshot import ActorKind


@dataclass(frozen=True)
class Blueprint:
    type_id: str
    category: str  # "car" | "van" | "truck" | "bicycle" | "emergency" | "walker" | "prop"
    kind: ActorKind
    extent: tuple[float, float, float]  # half extents x (length), y (width), z (height), m


VEHICLES: tuple[Blueprint, ...] = (
    Blueprint("vehicle.lincoln.mkz_2020", "car", ActorKind.VEHICLE, (2.44, 1.06, 0.76)),
    Blueprint("vehicle.tesla.model3", "car", ActorKind.VEHICLE, (2.40, 1.08, 0.75)),
    Blueprint("vehicle.audi.a2", "car", ActorKind.VEHICLE, (1.85, 0.90, 0.77)),
    Blueprint("vehicle.toyota.prius", "car", ActorKind.VEHICLE, (2.25, 1.00, 0.77)),
    Blueprint("vehicle.nissan.patrol_2021", "car", ActorKind.VEHICLE, (2.78, 1.07, 0.97)),
    Blueprint("vehicle.mercedes.coupe_2020", "car", ActorKind.VEHICLE, (2.34, 1.05, 0.71)),
    Blueprint("vehicle.dodge.charger_2020", "car", ActorKind.VEHICLE, (2.50, 1.05, 0.75)),
    Blueprint("vehicle.ford.crown", "car", ActorKind.VEHICLE, (2.68, 0.90, 0.78)),
    Blueprint("vehicle.mercedes.sprinter", "van", ActorKind.VEHICLE, (2.96, 0.99, 1.28)),
    Blueprint("vehicle.volkswagen.t2_2021", "van", ActorKind.VEHICLE, (2.24, 1.03, 1.02)),
    Blueprint("vehicle.carlamotors.carlacola", "truck", ActorKind.VEHICLE, (2.60, 1.31, 1.25)),
    Blueprint("vehicle.carlamotors.european_hgv", "truck", ActorKind.VEHICLE, (4.20, 1.40, 1.90)),
    Blueprint("vehicle.diamondback.century", "bicycle", ActorKind.BICYCLE, (0.82, 0.19, 0.75)),
    Blueprint("vehicle.gazelle.omafiets", "bicycle", ActorKind.BICYCLE, (0.92, 0.16, 0.75)),
    Blueprint("vehicle.bh.crossbike", "bicycle", ActorKind.BICYCLE, (0.74, 0.43, 0.54)),
)

EMERGENCY: tuple[Blueprint, ...] = (
    Blueprint("vehicle.ford.ambulance", "emergency", ActorKind.VEHICLE, (3.18, 1.19, 1.22)),
    Blueprint("vehicle.dodge.charger_police_2020", "emergency", ActorKind.VEHICLE, (2.50, 1.05, 0.78)),
    Blueprint("vehicle.carlamotors.firetruck", "emergency", ActorKind.VEHICLE, (4.24, 1.41, 1.93)),
)

WALKERS: tuple[Blueprint, ...] = tuple(
    Blueprint(f"walker.pedestrian.{i:04d}", "walker", ActorKind.WALKER, (0.25, 0.25, 0.90))
    for i in range(1, 9)
)

PROPS: tuple[Blueprint, ...] = (
    Blueprint("static.prop.constructioncone", "prop", ActorKind.STATIC, (0.17, 0.17, 0.36)),
    Blueprint("static.prop.trafficcone01", "prop", ActorKind.STATIC, (0.30, 0.30, 0.60)),
    Blueprint("static.prop.warningconstruction", "prop", ActorKind.STATIC, (0.30, 0.90, 0.90)),
    Blueprint("static.prop.trafficwarning", "prop", ActorKind.STATIC, (0.90, 1.60, 1.40)),
    Blueprint("static.prop.warningaccident", "prop", ActorKind.STATIC, (0.30, 0.90, 0.90)),
    Blueprint("static.prop.dirtdebris01", "prop", ActorKind.STATIC, (1.20, 1.20, 0.05)),
    Blueprint("static.prop.vehicle_door", "prop", ActorKind.STATIC, (0.55, 0.05, 0.60)),
)

_BY_ID: dict[str, Blueprint] = {b.type_id: b for b in VEHICLES + EMERGENCY + WALKERS + PROPS}


def blueprint(type_id: str) -> Blueprint:
    """The blueprint for `type_id`; unknown vehicles get a mid-size car box, unknown props a 0.5 m cube."""
    bp = _BY_ID.get(type_id)
    if bp is not None:
        return bp
    if type_id.startswith("vehicle."):
        return Blueprint(type_id, "car", ActorKind.VEHICLE, (2.40, 1.05, 0.78))
    if type_id.startswith("walker."):
        return Blueprint(type_id, "walker", ActorKind.WALKER, (0.25, 0.25, 0.90))
    return Blueprint(type_id, "prop", ActorKind.STATIC, (0.50, 0.50, 0.50))


def vehicles_of(category: str) -> tuple[Blueprint, ...]:
    return tuple(b for b in VEHICLES if b.category == category)
