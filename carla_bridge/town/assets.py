"""Generator of the built-in OpenDRIVE town `Takeover01` and of its built-in Bench2Drive route files.

Run `python -m carla_bridge.town` to (re)write `assets/maps/Takeover01.xodr`,
`assets/routes/builtin_train.xml` and `assets/routes/builtin_eval.xml`; `--check` only verifies that the
committed files equal a fresh generation; `--describe` prints the layout.

The assets are committed rather than generated at install time so that a run never depends on the
generator; this module ties the stages together (layout, OpenDRIVE text, routes walked on the parsed
map) and is the one place that knows where the files live.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import carla
from omegaconf.errors import OmegaConfBaseException

from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError
from carla_bridge.town.geometry import TownBuildError
from carla_bridge.town.layout import TOWN_NAME, Town, TownConfig, build_town
from carla_bridge.town.routes import ROUTE_SPECS, BuiltRoute, build_routes, routes_to_xml
from carla_bridge.town.xodr import town_to_xodr

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
BUILTIN_XODR_PATH = ASSETS_DIR / "maps" / f"{TOWN_NAME}.xodr"
BUILTIN_TRAIN_ROUTES_PATH = ASSETS_DIR / "routes" / "builtin_train.xml"
BUILTIN_EVAL_ROUTES_PATH = ASSETS_DIR / "routes" / "builtin_eval.xml"


@dataclass(frozen=True)
class BuiltinAssets:
    town: Town
    routes: list[BuiltRoute]
    files: dict[Path, str]  # text of every asset, keyed by its path relative to the assets folder


def generate_assets(cfg: TownConfig) -> BuiltinAssets:
    """The town, its routes walked on the generated map, and the text of the three asset files."""
    town = build_town(cfg)
    xodr = town_to_xodr(town)
    routes = build_routes(carla.Map(cfg.town_name, xodr), town, ROUTE_SPECS)
    files = {
        Path("maps") / f"{cfg.town_name}.xodr": xodr,
        Path("routes") / BUILTIN_TRAIN_ROUTES_PATH.name: routes_to_xml(
            cfg.town_name, [r for r in routes if r.spec.split == "train"]
        ),
        Path("routes") / BUILTIN_EVAL_ROUTES_PATH.name: routes_to_xml(
            cfg.town_name, [r for r in routes if r.spec.split == "eval"]
        ),
    }
    return BuiltinAssets(town, routes, files)


def describe(town: Town, routes: Sequence[BuiltRoute] = ()) -> str:
    """Plain-text tables of the roads, junctions and routes."""
    lines = [f"Town {town.name}", "", "road  kind          lanes(L+R)  length_m  speed_kmh  name"]
    for r in town.roads:
        if not r.is_connector:
            lanes = f"{r.kind.left_lanes}+{r.kind.right_lanes}"
            lines.append(
                f"{r.id:>4}  {r.kind.name:<12}  {lanes:>10}  {r.length_m:>8.1f}  {r.speed_kmh:>9g}  {r.name}"
            )
    lines += ["", "junction  kind               centre_m        connectors  signals  name"]
    for j in town.junctions:
        signals = len(j.signal_ids)
        centre = f"({j.centre[0]:g}, {j.centre[1]:g})"
        lines.append(
            f"{j.id:>8}  {j.kind:<17}  {centre:<14}  {len(j.connections):>10}  {signals:>7}  {j.name}"
        )
    if routes:
        lines += ["", "route  split  scenario                                    length_m  roads"]
        for r in routes:
            length = (len(r.keypoints) - 1) * town.config.keypoint_spacing_m
            roads = ">".join(str(i) for i in r.road_ids)
            lines.append(f"{r.spec.id:>5}  {r.spec.split:<5}  {r.spec.scenario:<42}  {length:>8.0f}  {roads}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carla_bridge.town",
        description="Generate the built-in town Takeover01 (OpenDRIVE) and its Bench2Drive route files.",
    )
    parser.add_argument("--out-dir", type=Path, default=ASSETS_DIR, help="assets folder (maps/, routes/)")
    parser.add_argument("--check", action="store_true", help="only verify the files equal a fresh generation")
    parser.add_argument("--describe", action="store_true", help="print the roads, junctions and routes")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. lane_width_m=3.5")
    args = parser.parse_args(argv)
    try:
        try:
            cfg = load_config(TownConfig, "town", args.overrides)
        except OmegaConfBaseException as exc:
            raise TownBuildError(
                f"bad town config override {args.overrides}: {str(exc).splitlines()[0]}"
            ) from exc
        assets = generate_assets(cfg)
    except TakeoverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.describe:
        print(describe(assets.town, assets.routes))
        return 0
    stale = []
    for rel, text in assets.files.items():
        path = args.out_dir / rel
        data = text.encode("utf-8")
        if path.exists() and path.read_bytes() == data:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"stale: {names} (regenerate with python -m carla_bridge.town)", file=sys.stderr)
        return 1
    print(("wrote: " + ", ".join(str(p) for p in stale)) if stale and not args.check else "up to date")
    return 0
