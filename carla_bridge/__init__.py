"""Everything that touches a simulator: routes, maps, world snapshots, simulator backends, scoring, BEV."""
