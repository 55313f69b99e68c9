"""Named route sets: `builtin` (train + eval), `builtin:train`, `builtin:eval`, or any route XML path."""

from __future__ import annotations

from pathlib import Path

from carla_bridge.errors import RouteFileError
from carla_bridge.route import Route

BUILTIN_ROUTES_DIR = Path(__file__).resolve().parent / "assets" / "routes"
BUILTIN_SPLITS: dict[str, str] = {"train": "builtin_train.xml", "eval": "builtin_eval.xml"}


def route_files(spec: str) -> list[Path]:
    """The XML files a route-set spec names."""
    if spec == "builtin":
        return [BUILTIN_ROUTES_DIR / name for name in BUILTIN_SPLITS.values()]
    if spec.startswith("builtin:"):
        split = spec.split(":", 1)[1]
        if split not in BUILTIN_SPLITS:
            raise RouteFileError(
                f"unknown built-in route set '{spec}': use builtin, builtin:train or builtin:eval"
            )
        return [BUILTIN_ROUTES_DIR / BUILTIN_SPLITS[split]]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise RouteFileError(
            f"route file {path} does not exist: pass an existing Bench2Drive/leaderboard XML or 'builtin'"
        )
    return [path]


def load_route_set(spec: str, ids: list[str] | None = None) -> list[Route]:
    """Parse every route of a spec, optionally keeping only `ids` (in file order)."""
    from carla_bridge.route_xml import parse_routes, select_routes

    routes: list[Route] = []
    for path in route_files(spec):
        routes += parse_routes(path)
    return select_routes(routes, ids) if ids else routes
