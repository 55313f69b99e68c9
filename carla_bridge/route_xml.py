"""Reading and writing leaderboard / Bench2Drive route XML files (`<routes><route ...>...</routes>`).

The parser mirrors the leaderboard's `RouteParser` (leaderboard 2.0, as used by Bench2Drive) but keeps
everything a file says, so that parse -> write -> parse gives equal `Route` objects:

- `<route id town ...>`: every attribute other than `id` and `town` goes to `Route.attributes`.
- `<waypoints><position x y z/>...`: the keypoints, in order.
- `<scenarios><scenario name type>`: the first `<trigger_point x y z yaw/>`, the `<other_actor .../>`
  entries in file order, and every other child tag as a parameter `tag -> attributes`
  (a repeated tag keeps its last occurrence, as the leaderboard does).
- `<weathers><weather route_percentage=... .../>`: each keyframe starts from the leaderboard's base
  weather (`DEFAULT_WEATHER_ATTRIBUTES`) overridden by the attributes given. A route without
  `<weathers>` gets the base weather at route percentage 0 and 100.

Every problem is reported as one `RouteFileError` naming the file, the line and the route id.
"""

from __future__ import annotations

import logging
import math
import re
import xml.parsers.expat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from carla_bridge.errors import RouteFileError
from carla_bridge.route import DEFAULT_WEATHER_ATTRIBUTES, Route, ScenarioSpec, TriggerPoint, Weather

log = logging.getLogger(__name__)

TEXT_SOURCE_NAME = "<route XML text>"  # how errors name a file given as text
DEFAULT_WEATHER_PERCENTAGES: tuple[float, float] = (0.0, 100.0)  # leaderboard keyframes when none given
INDENT = "  "  # two spaces per level, like Bench2Drive's files
UTF8_BOM = b"\xef\xbb\xbf"
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass
class _Element:
    """A parsed XML element with the line it starts on (ElementTree keeps no line numbers)."""

    tag: str
    attrib: dict[str, str]
    line: int
    children: list[_Element] = field(default_factory=list)

    def find(self, tag: str) -> _Element | None:
        return next((child for child in self.children if child.tag == tag), None)

    def findall(self, tag: str) -> list[_Element]:
        return [child for child in self.children if child.tag == tag]


class _Context:
    """Where we are in the file, to name it in errors."""

    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, line: int, problem: str, route_id: str | None = None) -> RouteFileError:
        where = f"{self.name}:{line}"
        if route_id is not None:
            where += f": route {route_id}"
        return RouteFileError(f"{where}: {problem}")


def _read_source(source: str | Path) -> tuple[str | bytes, str]:
    """(XML text or file bytes, name for messages) from a path or from XML text.

    Files are read as bytes so that expat honours the encoding their XML declaration names.
    """
    if isinstance(source, str) and source.lstrip().startswith("<"):
        return source, TEXT_SOURCE_NAME
    path = Path(source).expanduser()
    if not path.exists():
        raise RouteFileError(
            f"route file {path} does not exist: pass the path of a leaderboard/Bench2Drive route XML"
        )
    if not path.is_file():
        raise RouteFileError(f"route file {path} is not a file: pass the path of a route XML file")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise RouteFileError(f"cannot read route file {path}: {exc.strerror}") from exc


def _parse_xml(text: str | bytes, ctx: _Context) -> _Element:
    """Parse `text` into an element tree with line numbers, or raise RouteFileError with the line."""
    head = text[:1024].encode() if isinstance(text, str) else text[:1024]
    if not head.removeprefix(UTF8_BOM).lstrip().startswith(b"<"):
        raise RouteFileError(
            f"{ctx.name} is not an XML file (it does not start with '<'): pass a leaderboard route XML"
        )
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Element] = []
    roots: list[_Element] = []

    def start(tag: str, attrib: dict[str, str]) -> None:
        element = _Element(tag, dict(attrib), parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(element)
        else:
            roots.append(element)
        stack.append(element)

    def end(_tag: str) -> None:
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(text, True)
    except xml.parsers.expat.ExpatError as exc:
        message = xml.parsers.expat.ErrorString(exc.code)
        raise RouteFileError(
            f"{ctx.name}:{exc.lineno}:{exc.offset + 1}: malformed XML ({message}); fix the file at that line"
        ) from exc
    return roots[0]


def _number(element: _Element, attribute: str, ctx: _Context, route_id: str | None) -> float:
    value = element.attrib.get(attribute)
    if value is None:
        raise ctx.error(element.line, f"<{element.tag}> has no '{attribute}' attribute", route_id)
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ctx.error(
            element.line,
            f"<{element.tag}> {attribute}={value!r} is not a finite number",
            route_id,
        )
    return number


@lru_cache(maxsize=1)
def _weather_fields() -> frozenset[str]:
    """Numeric fields of carla.WeatherParameters (to warn about misspelt weather attributes)."""
    import carla

    weather = carla.WeatherParameters()
    return frozenset(
        name
        for name in dir(weather)
        if not name.startswith("_") and isinstance(getattr(weather, name), int | float)
    )


def _parse_weathers(route_el: _Element, ctx: _Context, route_id: str) -> list[Weather]:
    weathers_el = route_el.find("weathers")
    keyframes = weathers_el.findall("weather") if weathers_el is not None else []
    if not keyframes:
        return [Weather(pct, dict(DEFAULT_WEATHER_ATTRIBUTES)) for pct in DEFAULT_WEATHER_PERCENTAGES]
    weathers = []
    for weather_el in keyframes:
        percentage = _number(weather_el, "route_percentage", ctx, route_id)
        parameters = dict(DEFAULT_WEATHER_ATTRIBUTES)
        for name in weather_el.attrib:
            if name == "route_percentage":
                continue
            if name not in _weather_fields():
                log.warning(
                    "%s:%d: route %s: weather attribute '%s' is not a carla.WeatherParameters field",
                    ctx.name,
                    weather_el.line,
                    route_id,
                    name,
                )
            parameters[name] = _number(weather_el, name, ctx, route_id)
        weathers.append(Weather(percentage, parameters))
    return weathers


def _parse_scenario(scenario_el: _Element, ctx: _Context, route_id: str) -> ScenarioSpec:
    name = scenario_el.attrib.get("name")
    kind = scenario_el.attrib.get("type")
    if not name or not kind:
        missing = "name" if not name else "type"
        raise ctx.error(scenario_el.line, f"a <scenario> has no '{missing}' attribute", route_id)
    triggers = scenario_el.findall("trigger_point")
    if not triggers:
        raise ctx.error(
            scenario_el.line,
            f"scenario '{name}' has no <trigger_point x y z yaw/>: add one where the scenario starts",
            route_id,
        )
    if len(triggers) > 1:
        log.warning(
            "%s:%d: route %s: scenario '%s' has %d trigger points; the first is used (as the leaderboard)",
            ctx.name,
            scenario_el.line,
            route_id,
            name,
            len(triggers),
        )
    trigger_el = triggers[0]
    trigger = TriggerPoint(*(_number(trigger_el, a, ctx, route_id) for a in ("x", "y", "z", "yaw")))
    parameters: dict[str, dict[str, str]] = {}
    other_actors: list[dict[str, str]] = []
    for child in scenario_el.children:
        if child.tag == "trigger_point":
            continue
        if child.tag == "other_actor":
            other_actors.append(dict(child.attrib))
            continue
        if child.tag in parameters:
            log.warning(
                "%s:%d: route %s: scenario '%s' repeats <%s>; the last one is kept (as the leaderboard)",
                ctx.name,
                child.line,
                route_id,
                name,
                child.tag,
            )
        parameters[child.tag] = dict(child.attrib)
    return ScenarioSpec(name, kind, trigger, parameters, tuple(other_actors))


def _parse_route(route_el: _Element, ctx: _Context) -> Route:
    route_id = route_el.attrib.get("id")
    if not route_id:
        raise ctx.error(route_el.line, "a <route> has no 'id' attribute: give every route a unique id")
    town = route_el.attrib.get("town")
    if not town:
        raise ctx.error(route_el.line, "<route> has no 'town' attribute (e.g. town=\"Town04\")", route_id)
    waypoints_el = route_el.find("waypoints")
    positions = waypoints_el.findall("position") if waypoints_el is not None else []
    if not positions:
        raise ctx.error(
            route_el.line,
            "has no keypoints: add <waypoints> with at least two <position x y z/>",
            route_id,
        )
    keypoints = np.array(
        [[_number(p, axis, ctx, route_id) for axis in ("x", "y", "z")] for p in positions],
        dtype=np.float64,
    )
    scenarios_el = route_el.find("scenarios")
    scenario_els = scenarios_el.findall("scenario") if scenarios_el is not None else []
    scenarios = [_parse_scenario(el, ctx, route_id) for el in scenario_els]
    attributes = {k: v for k, v in route_el.attrib.items() if k not in ("id", "town")}
    return Route(
        id=route_id,
        town=town,
        keypoints=keypoints,
        scenarios=scenarios,
        weathers=_parse_weathers(route_el, ctx, route_id),
        attributes=attributes,
    )


def parse_routes(source: str | Path) -> list[Route]:
    """Every route of a leaderboard / Bench2Drive route file, in file order.

    `source` is a path, or the XML text itself (a string starting with '<').
    Raises RouteFileError naming the file, the line and the route id for any problem.
    """
    text, name = _read_source(source)
    ctx = _Context(name)
    root = _parse_xml(text, ctx)
    if root.tag != "routes":
        raise ctx.error(
            root.line, f"the root element is <{root.tag}>, not <routes>: this is not a leaderboard route file"
        )
    route_els = root.findall("route")
    if not route_els:
        raise ctx.error(root.line, "<routes> holds no <route>: the file defines nothing to drive")
    routes: list[Route] = []
    first_line: dict[str, int] = {}
    for route_el in route_els:
        route = _parse_route(route_el, ctx)
        if route.id in first_line:
            raise ctx.error(
                route_el.line,
                f"duplicate route id (first defined at line {first_line[route.id]}): make route ids unique",
                route.id,
            )
        first_line[route.id] = route_el.line
        routes.append(route)
    return routes


def _format_number(value: float) -> str:
    """Shortest text that parses back to the same float (Python's repr)."""
    return repr(float(value))


def _attributes(pairs: Iterable[tuple[str, str]], route_id: str) -> str:
    parts = []
    for name, value in pairs:
        if not _XML_NAME.match(name):
            raise RouteFileError(f"route {route_id}: {name!r} is not a valid XML attribute name")
        parts.append(f"{name}={quoteattr(str(value))}")
    return " ".join(parts)


def _tag(name: str, route_id: str) -> str:
    if not _XML_NAME.match(name):
        raise RouteFileError(f"route {route_id}: {name!r} is not a valid XML tag name")
    return name


def _route_lines(route: Route) -> list[str]:
    rid = route.id
    head = [("id", rid), *route.attributes.items(), ("town", route.town)]
    lines = [f"{INDENT}<route {_attributes(head, rid)}>", f"{INDENT * 2}<waypoints>"]
    keypoints = np.asarray(route.keypoints, dtype=np.float64).reshape(-1, 3)
    for x, y, z in keypoints:
        xyz = (("x", _format_number(x)), ("y", _format_number(y)), ("z", _format_number(z)))
        lines.append(f"{INDENT * 3}<position {_attributes(xyz, rid)} />")
    lines.append(f"{INDENT * 2}</waypoints>")
    lines.append(f"{INDENT * 2}<scenarios>")
    for scenario in route.scenarios:
        lines.append(
            f"{INDENT * 3}<scenario {_attributes((('name', scenario.name), ('type', scenario.type)), rid)}>"
        )
        tp = scenario.trigger_point
        trigger = [
            (a, _format_number(getattr(tp, f)))
            for a, f in (("x", "x"), ("y", "y"), ("z", "z"), ("yaw", "yaw_deg"))
        ]
        lines.append(f"{INDENT * 4}<trigger_point {_attributes(trigger, rid)} />")
        for tag, attrib in scenario.parameters.items():
            lines.append(f"{INDENT * 4}<{_tag(tag, rid)} {_attributes(attrib.items(), rid)} />")
        for actor in scenario.other_actors:
            lines.append(f"{INDENT * 4}<other_actor {_attributes(actor.items(), rid)} />")
        lines.append(f"{INDENT * 3}</scenario>")
    lines.append(f"{INDENT * 2}</scenarios>")
    lines.append(f"{INDENT * 2}<weathers>")
    for weather in route.weathers:
        pairs = [("route_percentage", _format_number(weather.route_percentage))]
        pairs += [(k, _format_number(v)) for k, v in weather.parameters.items()]
        lines.append(f"{INDENT * 3}<weather {_attributes(pairs, rid)} />")
    lines.append(f"{INDENT * 2}</weathers>")
    lines.append(f"{INDENT}</route>")
    return lines


def write_routes(routes: Sequence[Route], path: Path | None = None) -> str:
    """Leaderboard route XML for `routes` (written to `path` too when given); the text is returned.

    Numbers are written with the shortest text that parses back to the same float, so
    `parse_routes(write_routes(routes))` equals `routes` (dense routes are not written).
    """
    lines = ["<?xml version='1.0' encoding='utf-8'?>", "<routes>"]
    for route in routes:
        lines += _route_lines(route)
    lines.append("</routes>")
    text = "\n".join(lines) + "\n"
    if path is not None:
        target = Path(path).expanduser()
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise RouteFileError(
                f"cannot write route file {target}: {exc.strerror}; check the folder exists and is writable"
            ) from exc
    return text


def split_route_ids(subset: str) -> list[str]:
    """Split a `--routes-subset` string ("1,3, 5-7") into the items `select_routes` takes."""
    return [item for item in subset.replace(" ", "").split(",") if item]


def _expand(item: str, known: set[str]) -> list[str] | None:
    """Ids an item names: an exact id, or an inclusive integer range "a-b" (as the leaderboard)."""
    if item in known:
        return [item]
    start, sep, end = item.partition("-")
    if sep and start.isdigit() and end.isdigit() and int(start) <= int(end):
        return [rid for rid in known if rid.lstrip("-").isdigit() and int(start) <= int(rid) <= int(end)]
    return None


def select_routes(routes: Sequence[Route], ids: Sequence[str] | None) -> list[Route]:
    """The routes whose id is in `ids` (exact ids or "a-b" ranges), in the routes' order; all if None.

    Raises RouteFileError naming the ids that match no route and the ids available.
    """
    if ids is None:
        return list(routes)
    known = {route.id for route in routes}
    wanted: set[str] = set()
    unknown: list[str] = []
    for item in ids:
        matched = _expand(str(item).strip(), known)
        if not matched:
            unknown.append(str(item))
        else:
            wanted.update(matched)
    if unknown:
        available = ", ".join(route.id for route in routes[:20]) + (" ..." if len(routes) > 20 else "")
        raise RouteFileError(
            f"no route with id {', '.join(unknown)} (available: {available}); fix the route subset"
        )
    return [route for route in routes if route.id in wanted]
