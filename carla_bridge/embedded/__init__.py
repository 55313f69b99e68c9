"""The embedded closed-loop simulator: vector space, CPU, numpy, on carla.Map roads.

Use::

    from carla_bridge.embedded import EmbeddedSimulator, SimConfig
    sim = EmbeddedSimulator(load_config(SimConfig, "sim"), MapLibrary())
    snap = sim.reset(route, seed=0)
    while not sim.done:
        snap = sim.step(agent.run_step(snap))

Modules: `lane_graph` (lanes sampled at ~1 m into arrays), `vehicle_model` (bicycle_step),
`traffic` (IDM background vehicles, junction reservations; numpy reference tick),
`traffic_kernel` (the same tick compiled with numba when it is installed: `traffic.backend`
auto | numba | numpy), `signals` (lights, stop signs, phases), `walkers` (sidewalk pedestrians),
`scripted` (scenario-owned actors), `world` (episode state + scenario API), `route_progress`
(per-tick route locator), `snapshot_builder`, `simulator` (the Simulator protocol), `scenarios`
(plugins), `lane_routes` (dense routes straight from the lane graph), `catalogue` (blueprints).

Determinism: one numpy Generator per reset(route, seed) (`world.rng`); scenario code must draw from
it and nothing else. Same seed + same controls -> identical snapshots and infractions.

Scenario world API (`carla_bridge.embedded.world.World`, passed to every scenario method)
-----------------------------------------------------------------------------------------
State (read):
    world.time_s, world.frame, world.dt         clock (s), tick counter, 0.05 s
    world.rng                                   the episode's numpy Generator (use it, never another RNG)
    world.cmap, world.graph                     carla.Map and the LaneGraph (arrays, see lane_graph.py)
    world.route, world.dense                    the Route and its DenseRoute
    world.route_index, world.route_s()          ego progress on the dense route (index, metres)
    world.route_nodes                           (M,) lane node under each dense route point (-1 if none)
    world.ego_pose / ego_xy / ego_speed / ego   ego Pose, (2,) xy, m/s, (x, y, yaw, v, steer) tuple
    world.traffic                               TrafficModel arrays (id, xyz, yaw, v, ...), one row per lane vehicle
Look-ups:
    route_index_at_s(s), route_index_near(xy)   dense index at arc length s / closest to a point
    lane_node(xy, yaw=None, radius_m=4)         nearest lane-graph node (heading-aware), -1 if none
    node_pose(node) -> Pose; lane_path(node, length_m) -> (M, 2) lane-centre polyline
    waypoint(xy, z=None) -> carla.Waypoint       the map's waypoint API for anything else (left/right lanes...);
                                                pass z where roads overlap (Town04 bridges)
    next_light_on_route(max_distance_m) -> light id | None
    actor_xy(id), actor_speed(id)
Actors (each returns the new actor id; list them in `self.actor_ids` so ScenarioInfo reports them):
    spawn_lane_vehicle(node, type_id=None, speed=0, role=SCENARIO, speed_cap=inf, managed=False,
                       ignore_signals=False, path_segments=None)
                                                a vehicle driven by the traffic model (IDM, lights, right of
                                                way); path_segments: keep it on these consecutive lanes
    spawn_scripted(pose, type_id, role=SCENARIO, extent=None, kind=None)
                                                an actor that stands still until given a path
    spawn_static(pose, type_id, extent=None)    a prop (cone, sign, debris); never moves
    spawn_walker(pose, type_id)                 a scripted pedestrian (give it a path to cross)
    set_path(id, path_xy, speed, max_accel_mps2=None, max_decel_mps2=None, remove_at_end=False)
                                                follow an (M, 2) polyline at speed m/s or f(t since set) -> m/s
    stop_actor(id); remove_actor(id); open_door(id, left=True) -> door prop id
    clear_background(center_xy, radius_m); block_spawns(nodes)   keep background traffic away
    keep_out_background(nodes) -> token; allow_background(token)
                                                no background vehicle spawns on or drives onto these lane
                                                nodes (removed there) until allowed again
Traffic and signals:
    brake_vehicles_ahead(distance_m) -> ids; release_vehicles(ids)
    set_light_state(light_id, TrafficLightState, duration_s)
Vehicles spawned with spawn_lane_vehicle may be tuned through their row in world.traffic
(`speed_cap`, `forced_brake`, `ignore_signals`; row = world.traffic.index_of(id)).
"""

from carla_bridge.embedded.config import SimConfig
from carla_bridge.embedded.simulator import EmbeddedSimulator

__all__ = ["EmbeddedSimulator", "SimConfig"]
