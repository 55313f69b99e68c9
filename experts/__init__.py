"""The privileged PDM-Lite-style expert (issue 3): reads WorldSnapshots and the map, drives, and plans.

Entry point: `experts.expert.PDMLiteExpert` (Agent protocol + `plan(snapshot) -> ExpertPlan`).
Modules: `config` (ExpertConfig, conf/expert.yaml), `route_prep` (the driven path and its speed
profile), `scene` (actors in the route frame), `tracking` (per-actor yaw rate, acceleration,
standing time), `idm`, `forecast` (bicycle / walker forecasts),
`obstacles` (lateral manoeuvres), `controllers` (heading PID, speed tracking), `evaluate` (closed-loop
route runs and the per-route table), `synthetic` (hand-built scenes for tests and benchmarks),
`errors`. Plane geometry (angles, oriented boxes, SAT) is shared: carla_bridge.geometry.
"""
