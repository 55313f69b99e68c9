"""Junction scenarios: the ego crosses the first junction after the trigger point while other traffic
claims it. All of them are done once the ego is JUNCTION_END_M past the junction exit, and remove
their vehicles and release the lights they froze then.

Flows through the junction (scenario_runner signalized_junction_left_turn.py & co.):
- SignalizedJunctionLeftTurn / NonSignalizedJunctionLeftTurn: the ego turns left; a flow comes from
  the opposite approach straight across its path. The ego must yield (wait for a gap).
- SignalizedJunctionRightTurn / NonSignalizedJunctionRightTurn: the ego turns right into a lane fed by
  a flow coming straight from its left. The ego must merge into a gap.
- SignalizedJunctionLeftTurnEnterFlow / NonSignalizedJunctionLeftTurnEnterFlow: the ego turns left
  into a lane fed by a flow coming straight from its right.
  Flow: `flow_speed` m/s (default 20), a vehicle every `source_dist_interval` m (default 25-50),
  sources 5 x flow_speed upstream of the junction, sinks 3 x flow_speed past it, vehicles ignoring
  lights (they keep junction right of way: a vehicle already committed in the junction is not run
  into). Signalized: the ego's light is red for GREEN_LIGHT_DELAY_S, then green; the flow's light
  green; all others red, for the whole scenario.

Cross traffic (Bench2Drive's traffic-sign routes): T_Junction, VanillaNonSignalizedTurn,
VanillaNonSignalizedTurnEncounterStopsign, VanillaSignalizedTurnEncounterRedLight/GreenLight: a
moderate flow on an approach from the ego's left (else right, else opposite) whose lane crosses the
ego's path (a platoon of CROSS_MAX_VEHICLES), obeying lights, stop signs and right of way. EncounterRedLight: the ego's light turns red
as the ego approaches and stays red RED_HOLD_S (cross traffic green), then green; EncounterGreenLight:
the ego's light is green (cross traffic red) until the scenario ends. The ego must obey the light /
stop sign and yield.

Adversaries (scenario_runner opposite_vehicle_taking_priority.py): OppositeVehicleRunningRedLight /
OppositeVehicleTakingPriority: a vehicle waits on the approach at `direction` (default right; at a T
junction without a straight lane from that side, the side lane that crosses the ego's way, from that
side or else the other) as far upstream as the ego's trigger is; when the ego is ADVERSARY_SYNC_TIME_S (or ADVERSARY_MIN_TRIGGER_M)
from where their paths cross, it drives straight through at ADVERSARY_SPEED_MPS (on a turning lane at
most sqrt(ADVERSARY_MAX_LATERAL_ACCEL_MPS2 / curvature)), ignoring the ego and the lights. RunningRedLight: an emergency vehicle; the ego's light is green, the adversary's red. The
ego must brake and let it pass.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from carla_bridge.embedded.catalogue import EMERGENCY, vehicles_of
from carla_bridge.embedded.scenarios.actor_flow import ActorFlow
from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.junction_layout import (
    LEFT,
    OPPOSITE,
    RIGHT,
    STRAIGHT,
    Approach,
    JunctionCrossing,
    connector_into,
    crossing_point,
    freeze_lights,
    junction_after,
    light_id,
    seg_last_node,
)
from carla_bridge.embedded.scenarios.placement import (
    ScenarioLayoutError,
    clear_lane_stretch,
    direction_param,
    ego_time_to_arrival,
    interval_param,
    node_behind,
    path_nodes_of_segments,
    seg_path,
    trigger_index,
)
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ActorRole, Pose, TrafficLightState

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

JUNCTION_END_M = 20.0  # done when the ego is this far past the junction exit

FLOW_DEFAULT_SPEED_MPS = 20.0
FLOW_DEFAULT_GAPS_M = (25.0, 50.0)
FLOW_SOURCE_TIME_S = 5.0  # source distance = this x flow speed upstream of the junction entry
FLOW_SINK_TIME_S = 3.0  # sink distance = this x flow speed past the junction exit
FLOW_MIN_SOURCE_M = 15.0
GREEN_LIGHT_DELAY_S = 5.0

CROSS_SPEED_FRACTION_OF_LIMIT = 0.7
CROSS_GAPS_M = (25.0, 45.0)
CROSS_MAX_VEHICLES = 4  # a platoon, not a stream: the ego's own side must get its turn too
CROSS_SOURCE_M = 50.0
CROSS_SINK_M = 30.0
RED_HOLD_S = 10.0
EGO_LIGHT_UNTOUCHED, EGO_LIGHT_RED_THEN_GREEN, EGO_LIGHT_GREEN = "", "red_then_green", "green"

ADVERSARY_SPEED_MPS = 70.0 / 3.6
ADVERSARY_MAX_LATERAL_ACCEL_MPS2 = 4.0  # on a turning junction lane: v <= sqrt(a_lat / max curvature)
ADVERSARY_ACCEL_MPS2 = 50.0  # scenario_runner sets its velocity directly (constant-velocity agent)
ADVERSARY_SYNC_TIME_S = 2.2
ADVERSARY_MIN_TRIGGER_M = 9.0
ADVERSARY_SOURCE_MIN_M = 15.0
ADVERSARY_SOURCE_MAX_M = 40.0
ADVERSARY_SINK_M = 20.0
ADVERSARY_CAR_CATEGORY = "car"


class _JunctionScenario(Scenario):
    """The junction after the trigger point; done JUNCTION_END_M past its exit."""

    trigger_distance_m = 20.0
    timeout_s = 180.0

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self.junction: JunctionCrossing = junction_after(world, trigger_index(world, spec))
        self.end_s = float(world.dense.s[self.junction.exit_index]) + JUNCTION_END_M
        self.flow: ActorFlow | None = None
        self.owned: list[int] = []  # scripted adversaries (flow vehicles are listed while they live)
        self.froze_lights = False
        self.t0 = 0.0

    def on_trigger(self, world: World) -> None:
        self.t0 = world.time_s

    def tick(self, world: World) -> str:
        if self.flow is not None:
            self.flow.tick(world)
        self.actor_ids = [*self.owned, *(self.flow.ids if self.flow is not None else ())]
        return DONE if world.route_s() > self.end_s else RUNNING

    def cleanup(self, world: World) -> None:
        if self.flow is not None:
            self.flow.remove_all(world)
        for aid in self.owned:
            world.remove_actor(aid)
        if self.froze_lights:
            freeze_lights(world, {}, self.junction.junction_id, 0.0)

    # ------------------------------------------------------------------ helpers
    def freeze(self, world: World, states: dict[int, TrafficLightState]) -> None:
        freeze_lights(world, states, self.junction.junction_id, self.timeout_s)
        self.froze_lights = True

    def light_of(self, world: World, approach: Approach | None) -> int | None:
        if approach is None or approach.light_index < 0:
            return None
        return light_id(world, approach.light_index)

    def path_through(
        self, world: World, approach: Approach, connector: int, source_m: float, sink_m: float
    ) -> np.ndarray:
        """Nodes from `source_m` upstream of the approach's stop line, through `connector`, to `sink_m` past it."""
        g = world.graph
        stop_node = seg_last_node(g, approach.entry_seg)
        source = node_behind(g, stop_node, max(source_m, 1.0))
        segs = [*seg_path(g, int(g.seg[source]), approach.entry_seg), connector]
        head = path_nodes_of_segments(g, segs, source, seg_last_node(g, connector))
        succ = g.successors(connector)
        if succ.size == 0:
            return head
        tail = g.path_nodes(int(g.seg_start[int(succ[0])]), sink_m)
        return np.concatenate([head, tail])


class _FlowJunction(_JunctionScenario):
    """A flow through the junction the ego must yield to or merge into (module docstring)."""

    flow_side = OPPOSITE  # where the flow comes from
    into_ego_exit = False  # True: the flow drives into the ego's exit road; False: straight across
    signalized = True

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self.speed = float(spec.value("flow_speed", FLOW_DEFAULT_SPEED_MPS))
        self.gaps = interval_param(spec, "source_dist_interval", FLOW_DEFAULT_GAPS_M)
        self.source, self.connector = self._flow_lane(world)
        source_m = max(FLOW_SOURCE_TIME_S * self.speed, FLOW_MIN_SOURCE_M)
        self.nodes = self.path_through(
            world, self.source, self.connector, source_m, FLOW_SINK_TIME_S * self.speed
        )
        clear_lane_stretch(world, self.nodes)
        self._green_given = False

    def _flow_lane(self, world: World) -> tuple[Approach, int]:
        g = world.graph
        j = self.junction
        for a in j.on_side(self.flow_side):
            c = connector_into(g, a, j.ego_exit_seg) if self.into_ego_exit else a.connector(g, STRAIGHT)
            if c >= 0:
                return a, c
        what = "into the ego's exit" if self.into_ego_exit else "straight across"
        raise ScenarioLayoutError(
            f"{self.spec.name if self.spec else ''}: junction {j.junction_id} has no lane from the "
            f"{self.flow_side} side going {what}; put the trigger before a junction that has one"
        )

    def on_trigger(self, world: World) -> None:
        super().on_trigger(world)
        self.flow = ActorFlow(world, self.nodes, self.gaps, self.speed, ignore_signals=True)
        self.flow.fill(world)
        if self.signalized:
            self._set_lights(world, TrafficLightState.RED)

    def _set_lights(self, world: World, ego_state: TrafficLightState) -> None:
        states: dict[int, TrafficLightState] = {}
        ego = self.light_of(world, self.junction.ego_approach)
        if ego is not None:
            states[ego] = ego_state
        src = self.light_of(world, self.source)
        if src is not None:
            states[src] = TrafficLightState.GREEN
        if states:
            self.freeze(world, states)

    def tick(self, world: World) -> str:
        if self.signalized and not self._green_given and world.time_s - self.t0 >= GREEN_LIGHT_DELAY_S:
            self._set_lights(world, TrafficLightState.GREEN)
            self._green_given = True
        return super().tick(world)


@register("SignalizedJunctionLeftTurn")
class SignalizedJunctionLeftTurn(_FlowJunction):
    pass


@register("NonSignalizedJunctionLeftTurn")
class NonSignalizedJunctionLeftTurn(_FlowJunction):
    signalized = False


@register("SignalizedJunctionRightTurn")
class SignalizedJunctionRightTurn(_FlowJunction):
    flow_side = LEFT
    into_ego_exit = True


@register("NonSignalizedJunctionRightTurn")
class NonSignalizedJunctionRightTurn(SignalizedJunctionRightTurn):
    signalized = False


@register("SignalizedJunctionLeftTurnEnterFlow")
class SignalizedJunctionLeftTurnEnterFlow(_FlowJunction):
    flow_side = RIGHT
    into_ego_exit = True


@register("NonSignalizedJunctionLeftTurnEnterFlow")
class NonSignalizedJunctionLeftTurnEnterFlow(SignalizedJunctionLeftTurnEnterFlow):
    signalized = False


class _CrossTraffic(_JunctionScenario):
    """A moderate cross-traffic flow that obeys the junction's rules (module docstring)."""

    side_preference = (LEFT, RIGHT, OPPOSITE)
    ego_light: str = EGO_LIGHT_UNTOUCHED  # or EGO_LIGHT_RED_THEN_GREEN | EGO_LIGHT_GREEN

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        self.cross: Approach | None = None
        self.nodes: np.ndarray | None = None
        g = world.graph
        conflicts = set(g.conflicts(self.junction.ego_connector).tolist())
        for side in self.side_preference:
            for a in self.junction.on_side(side):
                crossing = [c for c in a.connectors if c in conflicts]
                if not crossing:
                    continue
                straight = [c for c in crossing if c == a.connector(g, STRAIGHT)]
                c = (straight or crossing)[0]
                limit = float(g.speed_limit[seg_last_node(g, a.entry_seg)])
                self.speed = CROSS_SPEED_FRACTION_OF_LIMIT * limit
                self.cross = a
                self.nodes = self.path_through(world, a, c, CROSS_SOURCE_M, CROSS_SINK_M)
                clear_lane_stretch(world, self.nodes)
                return
        # no crossing lane (e.g. a plain bend of a road through a junction): the rules alone remain

    def on_trigger(self, world: World) -> None:
        super().on_trigger(world)
        if self.nodes is not None:
            self.flow = ActorFlow(
                world,
                self.nodes,
                CROSS_GAPS_M,
                self.speed,
                ignore_signals=False,
                max_vehicles=CROSS_MAX_VEHICLES,
            )
            self.flow.fill(world)
        if self.ego_light:
            self._set_lights(
                world,
                TrafficLightState.RED
                if self.ego_light == EGO_LIGHT_RED_THEN_GREEN
                else TrafficLightState.GREEN,
            )
        self._released = self.ego_light != EGO_LIGHT_RED_THEN_GREEN

    def _set_lights(self, world: World, ego_state: TrafficLightState) -> None:
        states: dict[int, TrafficLightState] = {}
        cross = self.light_of(world, self.cross)
        if cross is not None:
            states[cross] = (
                TrafficLightState.RED if ego_state == TrafficLightState.GREEN else TrafficLightState.GREEN
            )
        ego = self.light_of(world, self.junction.ego_approach)
        if ego is not None:
            states[ego] = ego_state
        if states:
            self.freeze(world, states)

    def tick(self, world: World) -> str:
        if not self._released and world.time_s - self.t0 >= RED_HOLD_S:
            self._set_lights(world, TrafficLightState.GREEN)
            self._released = True
        return super().tick(world)


@register("T_Junction", "VanillaNonSignalizedTurn", "VanillaNonSignalizedTurnEncounterStopsign")
class CrossTrafficTurn(_CrossTraffic):
    pass


@register("VanillaSignalizedTurnEncounterRedLight")
class SignalizedTurnEncounterRedLight(_CrossTraffic):
    ego_light = EGO_LIGHT_RED_THEN_GREEN


@register("VanillaSignalizedTurnEncounterGreenLight")
class SignalizedTurnEncounterGreenLight(_CrossTraffic):
    ego_light = EGO_LIGHT_GREEN


class _OppositeVehicle(_JunctionScenario):
    """A vehicle crossing the junction straight from `direction`, timed against the ego (module docstring)."""

    runs_red_light = False

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        g = world.graph
        j = self.junction
        self.source, conn = self._adversary_lane(world, direction_param(spec))
        i_trig = trigger_index(world, spec)
        ego_to_junction = float(world.dense.s[j.enter_index] - world.dense.s[i_trig])
        source_m = min(max(ego_to_junction, ADVERSARY_SOURCE_MIN_M), ADVERSARY_SOURCE_MAX_M)
        self.nodes = self.path_through(world, self.source, conn, source_m, ADVERSARY_SINK_M)
        a0 = int(g.seg_start[conn])
        kappa = float(np.abs(g.curvature[a0 : a0 + int(g.seg_count[conn])]).max())
        self.speed = min(ADVERSARY_SPEED_MPS, math.sqrt(ADVERSARY_MAX_LATERAL_ACCEL_MPS2 / max(kappa, 1e-6)))
        self.collision_xy = crossing_point(g, j.ego_connector, conn)
        clear_lane_stretch(world, self.nodes)
        self.started = False

    def _adversary_lane(self, world: World, side: str) -> tuple[Approach, int]:
        """The adversary's approach and junction lane: straight from `side`; else (a T junction) a
        lane from `side` that crosses the ego's, then the same from the other side."""
        g = world.graph
        j = self.junction
        crossing = set(g.conflicts(j.ego_connector).tolist())
        other = LEFT if side == RIGHT else RIGHT
        for s in (side, other):
            for a in j.on_side(s):
                c = a.connector(g, STRAIGHT)
                if c >= 0 and c in crossing:
                    return a, c
            for a in j.on_side(s):
                for c in a.connectors:
                    if c in crossing:
                        return a, c
        raise ScenarioLayoutError(
            f"{self.spec.name if self.spec else ''}: no lane from the left or right of junction "
            f"{j.junction_id} crosses the ego's way; put the trigger before a crossing with side roads"
        )

    def on_trigger(self, world: World) -> None:
        super().on_trigger(world)
        g = world.graph
        n0 = int(self.nodes[0])
        pose = Pose(float(g.xy[n0, 0]), float(g.xy[n0, 1]), float(g.z[n0]), float(g.yaw[n0]))
        if self.runs_red_light:
            bp = EMERGENCY[int(world.rng.integers(len(EMERGENCY)))]
            role = ActorRole.EMERGENCY
        else:
            cars = vehicles_of(ADVERSARY_CAR_CATEGORY)
            bp = cars[int(world.rng.integers(len(cars)))]
            role = ActorRole.SCENARIO
        self.owned.append(world.spawn_scripted(pose, bp.type_id, role))
        self.actor_ids = list(self.owned)
        if self.runs_red_light:
            states: dict[int, TrafficLightState] = {}
            src = self.light_of(world, self.source)
            if src is not None:
                states[src] = TrafficLightState.RED
            ego = self.light_of(world, self.junction.ego_approach)
            if ego is not None:
                states[ego] = TrafficLightState.GREEN
            if states:
                self.freeze(world, states)

    def tick(self, world: World) -> str:
        if not self.started:
            near = math.hypot(*(world.ego_xy - self.collision_xy)) < ADVERSARY_MIN_TRIGGER_M
            if near or ego_time_to_arrival(world, self.collision_xy) < ADVERSARY_SYNC_TIME_S:
                world.set_path(
                    self.owned[0],
                    world.graph.xy[self.nodes],
                    self.speed,
                    max_accel_mps2=ADVERSARY_ACCEL_MPS2,
                    remove_at_end=True,
                )
                self.started = True
        return super().tick(world)


@register("OppositeVehicleRunningRedLight")
class OppositeVehicleRunningRedLight(_OppositeVehicle):
    runs_red_light = True


@register("OppositeVehicleTakingPriority")
class OppositeVehicleTakingPriority(_OppositeVehicle):
    pass
