"""The OpenDRIVE 1.4 writer of a `Town`.

The XML is written here (no third-party writer) so that sidewalks inside junctions, signal validities
and byte-exact determinism are under our control: a fixed element order, fixed-decimal numbers without
negative zero, and a fixed header date, so that the committed map changes only when the layout does.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from carla_bridge.town.geometry import ArcGeometry, Geometry, LineGeometry, geometry_end
from carla_bridge.town.layout import (
    EDGE_MARK,
    NO_MARK,
    SAME_DIRECTION_MARK,
    Road,
    RoadMark,
    Signal,
    Town,
    TownConfig,
)

# Header date of the layout revision: fixed so that generation is byte-deterministic. Bump on change.
LAYOUT_REVISION_DATE = "2025-01-01T00:00:00"
XODR_DECIMALS = 9  # rounding of every number written to the xodr (m, rad): 1 nm, far below carla's needs


def _num(v: float) -> str:
    """Fixed-decimal text of a number, trailing zeros stripped, no negative zero: deterministic bytes."""
    text = f"{round(v, XODR_DECIMALS) + 0.0:.{XODR_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _sub(parent: ET.Element, tag: str, **attrs: str | float | int) -> ET.Element:
    return ET.SubElement(
        parent, tag, {k: (_num(v) if isinstance(v, float) else str(v)) for k, v in attrs.items()}
    )


def _write_geometry(plan: ET.Element, s: float, geom: Geometry) -> None:
    start = geom.start
    el = _sub(plan, "geometry", s=s, x=start.x, y=start.y, hdg=start.hdg, length=geom.length_m)
    if isinstance(geom, LineGeometry):
        _sub(el, "line")
    elif isinstance(geom, ArcGeometry):
        _sub(el, "arc", curvature=geom.curvature_per_m)
    else:
        a, b, c, d = geom.coefficients
        _sub(
            el,
            "paramPoly3",
            aU=float(a[0]),
            bU=float(b[0]),
            cU=float(c[0]),
            dU=float(d[0]),
            aV=float(a[1]),
            bV=float(b[1]),
            cV=float(c[1]),
            dV=float(d[1]),
            pRange="normalized",
        )


def _write_lane(
    parent: ET.Element,
    lane_id: int,
    lane_type: str,
    width: float | None,
    mark: RoadMark,
    link: tuple[int, int] | None = None,
) -> None:
    """One <lane>; `width` None for the centre lane, which has none in OpenDRIVE."""
    lane = _sub(parent, "lane", id=lane_id, type=lane_type, level="false")
    if link is not None:
        link_el = _sub(lane, "link")
        _sub(link_el, "predecessor", id=link[0])
        _sub(link_el, "successor", id=link[1])
    if width is not None:
        _sub(lane, "width", sOffset=0.0, a=width, b=0.0, c=0.0, d=0.0)
    _sub(
        lane,
        "roadMark",
        sOffset=0.0,
        type=mark.type,
        material="standard",
        color=mark.color,
        width=0.15 if mark.type != "none" else 0.0,
        laneChange=mark.lane_change,
    )


def _write_lanes(road_el: ET.Element, road: Road) -> None:
    lanes = _sub(road_el, "lanes")
    _sub(lanes, "laneOffset", s=0.0, a=road.lane_offset_m, b=0.0, c=0.0, d=0.0)
    section = _sub(lanes, "laneSection", s=0.0)
    w, sw = road.lane_width_m, road.sidewalk_width_m
    kind = road.kind
    if kind.left_lanes or (kind.sidewalks and not road.is_connector):
        left = _sub(section, "left")
        if kind.sidewalks and not road.is_connector:
            _write_lane(left, kind.left_lanes + 1, "sidewalk", sw, NO_MARK)
        for k in range(kind.left_lanes, 0, -1):
            _write_lane(left, k, "driving", w, EDGE_MARK if k == kind.left_lanes else SAME_DIRECTION_MARK)
    center = _sub(section, "center")
    _write_lane(center, 0, "none", None, kind.centre_mark)
    right = _sub(section, "right")
    for k in range(1, kind.right_lanes + 1):
        mark = NO_MARK if road.is_connector else EDGE_MARK if k == kind.right_lanes else SAME_DIRECTION_MARK
        _write_lane(right, -k, "driving", w, mark, road.lane_links.get(-k))
    if kind.sidewalks:
        _write_lane(right, -(kind.right_lanes + 1), "sidewalk", sw, NO_MARK, road.lane_links.get(-2))


def _write_signal(signals: ET.Element, sig: Signal) -> None:
    el = _sub(
        signals,
        "signal",
        id=sig.id,
        name=sig.name,
        s=sig.s,
        t=sig.t,
        zOffset=sig.height_m,
        # the sign's face turned towards the traffic it addresses (as in CARLA's towns)
        hOffset=-math.pi if sig.orientation == "+" else 0.0,
        roll=0.0,
        pitch=0.0,
        orientation=sig.orientation,
        dynamic="yes" if sig.dynamic else "no",
        country="OpenDRIVE",
        type=sig.type,
        subtype="-1",
        value=sig.value,
        unit=sig.unit,
        text="",
        height=1.0,
        width=0.5,
    )
    if not sig.unit:
        del el.attrib["unit"]
    _sub(el, "validity", fromLane=sig.valid_lanes[0], toLane=sig.valid_lanes[1])


def _bounds(town: Town) -> tuple[float, float, float, float]:
    """(north, south, east, west): geometry end points padded by the widest road half-width."""
    xs: list[float] = []
    ys: list[float] = []
    pad = 0.0
    for road in town.roads:
        pad = max(pad, abs(road.left_edge_t()), abs(road.right_edge_t()))
        for g in road.geometries:
            for p in (g.start, geometry_end(g)):
                xs.append(p.x)
                ys.append(p.y)
    pad += town.config.sidewalk_width_m
    return max(ys) + pad, min(ys) - pad, max(xs) + pad, min(xs) - pad


def geo_reference(cfg: TownConfig) -> str:
    return (
        f"+proj=tmerc +lat_0={cfg.geo_lat0_deg:g} +lon_0={cfg.geo_lon0_deg:g} +k=1 +x_0=0 +y_0=0 "
        "+datum=WGS84 +units=m +geoidgrids=egm96_15.gtx +vunits=m +no_defs"
    )


def town_to_xodr(town: Town) -> str:
    """The OpenDRIVE 1.4 text of a town (deterministic: fixed ordering and number formatting)."""
    root = ET.Element("OpenDRIVE")
    north, south, east, west = _bounds(town)
    header = _sub(
        root,
        "header",
        revMajor=1,
        revMinor=4,
        name=town.name,
        version="1",
        date=LAYOUT_REVISION_DATE,
        north=north,
        south=south,
        east=east,
        west=west,
        vendor="takeover",
    )
    _sub(header, "geoReference").text = "@GEOREFERENCE@"
    for road in sorted(town.roads, key=lambda r: r.id):
        el = _sub(root, "road", name=road.name, length=road.length_m, id=road.id, junction=road.junction_id)
        link = _sub(el, "link")
        for tag, rl in (("predecessor", road.predecessor), ("successor", road.successor)):
            if rl is None:
                continue
            attrs: dict[str, str | int] = {"elementType": rl.element_type, "elementId": rl.element_id}
            if rl.contact_point is not None:
                attrs["contactPoint"] = rl.contact_point
            _sub(link, tag, **attrs)
        road_type = _sub(el, "type", s=0.0, type="town")
        _sub(road_type, "speed", max=f"{road.speed_kmh:g}", unit="km/h")
        plan = _sub(el, "planView")
        s = 0.0
        for g in road.geometries:
            _write_geometry(plan, s, g)
            s += g.length_m
        elevation = _sub(el, "elevationProfile")
        _sub(elevation, "elevation", s=0.0, a=0.0, b=0.0, c=0.0, d=0.0)
        _sub(el, "lateralProfile")
        _write_lanes(el, road)
        if road.signals:
            signals = _sub(el, "signals")
            for sig in road.signals:
                _write_signal(signals, sig)
    for junction in town.junctions:
        for cid, sid in junction.controllers:
            ctrl = _sub(root, "controller", name=f"ctrl{cid}", id=cid, sequence=0)
            _sub(ctrl, "control", signalId=sid, type="0")
    for junction in town.junctions:
        jel = _sub(root, "junction", id=junction.id, name=f"junction{junction.id} {junction.name}")
        for c in junction.connections:
            cel = _sub(
                jel,
                "connection",
                id=c.id,
                incomingRoad=c.incoming_road,
                connectingRoad=c.connecting_road,
                contactPoint="start",
            )
            for lane_from, lane_to in c.lane_links:
                _sub(cel, "laneLink", **{"from": lane_from, "to": lane_to})
        for seq, (cid, _) in enumerate(junction.controllers):
            _sub(jel, "controller", id=cid, type="0", sequence=seq)
    ET.indent(root, space="    ")
    text = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    text = text.replace("@GEOREFERENCE@", f"<![CDATA[{geo_reference(town.config)}]]>")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"
