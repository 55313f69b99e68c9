"""HardBreakRoute: the traffic ahead of the ego brakes hard, then drives on.

Bench2Drive's version asks the background activity to stop the vehicles in front of the ego. Here,
on trigger, a lead vehicle appears `LEAD_AHEAD_M` ahead on the ego's route lane at the ego's speed
(so there is always someone to brake); `BRAKE_DELAY_S` later every lane vehicle ahead on the route
within `BRAKE_RANGE_M` brakes at the IDM's maximum deceleration for `HOLD_S` seconds, then they
are released and the scenario is done.
"""

from __future__ import annotations

from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ActorRole

LEAD_AHEAD_M = 25.0  # lead vehicle spawn distance ahead of the ego along the route
LEAD_MIN_SPEED_MPS = 6.0
BRAKE_DELAY_S = 3.0
BRAKE_RANGE_M = 60.0
HOLD_S = 6.0


@register("HardBreakRoute")
class HardBreakRoute(Scenario):
    trigger_distance_m = 5.0
    timeout_s = 60.0

    def setup(self, world, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self._braked: list[int] = []
        self._t0 = 0.0
        self._phase = 0

    def on_trigger(self, world) -> None:
        self._t0 = world.time_s
        j = world.route_index_at_s(world.route_s() + LEAD_AHEAD_M)
        node = int(world.route_nodes[j])
        if node >= 0:
            world.clear_background(world.graph.xy[node], 10.0)
            speed = max(world.ego_speed, LEAD_MIN_SPEED_MPS)
            self.actor_ids.append(world.spawn_lane_vehicle(node, None, speed, ActorRole.SCENARIO))

    def tick(self, world) -> str:
        t = world.time_s - self._t0
        if self._phase == 0 and t >= BRAKE_DELAY_S:
            self._braked = world.brake_vehicles_ahead(BRAKE_RANGE_M)
            self._phase = 1
        elif self._phase == 1 and t >= BRAKE_DELAY_S + HOLD_S:
            world.release_vehicles(self._braked)
            return DONE
        return RUNNING
