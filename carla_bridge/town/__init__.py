"""The built-in OpenDRIVE town `Takeover01` and its built-in Bench2Drive route files.

The generator is split by stage so that each can be read and tested on its own, every stage feeding
the next:

- `geometry`: plan-view primitives (lines, arcs, paramPoly3 cubics), corner fillets, junction connector
  curves, and `TownBuildError`.
- `layout`: the town model (roads, junctions, signals), `TownConfig`, `build_town` and the structural
  checks on the lane graph.
- `xodr`: the deterministic OpenDRIVE 1.4 writer.
- `routes`: the built-in route specifications and their walk on the generated map.
- `assets`: where the committed files live, `generate_assets`, and the command line
  (`python -m carla_bridge.town`, with `--check` and `--describe`).
"""

from carla_bridge.town.assets import (
    ASSETS_DIR,
    BUILTIN_EVAL_ROUTES_PATH,
    BUILTIN_TRAIN_ROUTES_PATH,
    BUILTIN_XODR_PATH,
    BuiltinAssets,
    describe,
    generate_assets,
)
from carla_bridge.town.geometry import (
    ArcGeometry,
    CubicGeometry,
    Geometry,
    LineGeometry,
    Pose2D,
    TownBuildError,
    connector_curve,
    fillet_path,
    geometry_end,
)
from carla_bridge.town.layout import (
    TOWN_NAME,
    Road,
    Town,
    TownConfig,
    build_town,
    check_town,
    lane_graph,
    lane_pairs,
    movement_between,
)
from carla_bridge.town.routes import (
    ROUTE_SPECS,
    SCENARIO_ABILITIES,
    BuiltRoute,
    RouteSpec,
    build_route,
    build_routes,
    routes_to_xml,
)
from carla_bridge.town.xodr import town_to_xodr

__all__ = [
    "ASSETS_DIR",
    "BUILTIN_EVAL_ROUTES_PATH",
    "BUILTIN_TRAIN_ROUTES_PATH",
    "BUILTIN_XODR_PATH",
    "ROUTE_SPECS",
    "SCENARIO_ABILITIES",
    "TOWN_NAME",
    "ArcGeometry",
    "BuiltRoute",
    "BuiltinAssets",
    "CubicGeometry",
    "Geometry",
    "LineGeometry",
    "Pose2D",
    "Road",
    "RouteSpec",
    "Town",
    "TownBuildError",
    "TownConfig",
    "build_route",
    "build_routes",
    "build_town",
    "check_town",
    "connector_curve",
    "describe",
    "fillet_path",
    "generate_assets",
    "geometry_end",
    "lane_graph",
    "lane_pairs",
    "movement_between",
    "routes_to_xml",
    "town_to_xodr",
]
