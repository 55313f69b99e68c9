"""Drive a leaderboard agent with the embedded simulator, the way Bench2Drive's evaluator drives it.

No CARLA needed: the embedded simulator plays the world, and this harness plays the evaluator: the
global plan in GPS and world coordinates (set_global_plan), setup(agent config), sensors() checked
like leaderboard 2.0's validate_sensor_configuration, then every tick leaderboard-format input_data
(speedometer, IMU, GNSS, black camera images for declared cameras) into run_step(input_data,
timestamp), whose carla.VehicleControl is applied to the simulator; destroy() when the route ends.
The agent's privileged world view is the simulator's snapshot (world_sources.EmbeddedSource).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import carla

from carla_bridge.carla_client.leaderboard_io import encode_input_data, global_plan
from carla_bridge.carla_client.sensors import RGB_CAMERA, validate_sensor_specs
from carla_bridge.carla_client.world_sources import EmbeddedSource
from carla_bridge.errors import SimulatorError
from carla_bridge.geo import geo_reference
from carla_bridge.route import Route
from carla_bridge.snapshot import Control, InfractionEvent, WorldSnapshot


@dataclass(frozen=True)
class HarnessOutcome:
    ticks: int  # run_step calls
    last: WorldSnapshot  # the simulator's final snapshot
    infractions: tuple[InfractionEvent, ...]  # the simulator's own scoring
    route_done: bool  # the simulator's scoring ended the route (False: stopped at max_ticks)


def vehicle_control_to_control(vc: Any) -> Control:
    """The contract Control of a carla.VehicleControl (refusing anything else)."""
    if not isinstance(vc, carla.VehicleControl):
        raise SimulatorError(f"run_step must return a carla.VehicleControl, got {type(vc).__name__}")
    return Control(
        throttle=float(vc.throttle),
        steer=float(vc.steer),
        brake=float(vc.brake),
        hand_brake=bool(vc.hand_brake),
        reverse=bool(vc.reverse),
    )


def drive_agent_on_embedded(
    agent: Any,
    sim: Any,
    route: Route,
    seed: int,
    agent_config: str | Path | None = None,
    max_ticks: int | None = None,
    source: EmbeddedSource | None = None,
) -> HarnessOutcome:
    """One route: reset the simulator, give the agent its plan and config, tick until the route ends.

    `source` is the agent's privileged view of `sim` (an EmbeddedSource by default).
    """
    snapshot = sim.reset(route, seed)
    assert route.dense is not None
    lat_ref, lon_ref = geo_reference(sim.map.to_opendrive())
    gps, world = global_plan(route.dense, lat_ref, lon_ref)
    source = source or EmbeddedSource(sim)
    source.latest = snapshot
    agent.world_source = source
    agent.set_global_plan(gps, world)
    agent.setup(None if agent_config is None else str(agent_config))
    specs = agent.sensors()
    validate_sensor_specs(specs)
    cameras = {s["id"]: (int(s["width"]), int(s["height"])) for s in specs if s["type"] == RGB_CAMERA}
    ticks = 0
    try:
        while not sim.done and (max_ticks is None or ticks < max_ticks):
            input_data = encode_input_data(snapshot.ego, snapshot.frame, lat_ref, lon_ref, cameras)
            control = vehicle_control_to_control(agent.run_step(input_data, snapshot.time_s))
            snapshot = sim.step(control)
            source.latest = snapshot
            ticks += 1
    finally:
        agent.destroy()
    return HarnessOutcome(ticks, snapshot, tuple(sim.infractions()), bool(sim.done))
