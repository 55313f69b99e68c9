"""Route XML: parsing leaderboard / Bench2Drive files completely, writing them back, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carla_bridge.errors import RouteFileError
from carla_bridge.route import DEFAULT_WEATHER_ATTRIBUTES, Route
from carla_bridge.route_xml import (
    TEXT_SOURCE_NAME,
    parse_routes,
    select_routes,
    split_route_ids,
    write_routes,
)

BUILTIN_ROUTE_FILES = sorted(
    (Path(__file__).resolve().parents[1] / "carla_bridge/assets/routes").glob("*.xml")
)

RICH_XML = """<?xml version='1.0' encoding='utf-8'?>
<routes>
  <route id="7" town="Town01" road_id="3" note="a &amp; b &lt;c&gt; &quot;q&quot;">
    <waypoints>
      <position x="1.5" y="-2.25" z="0.0"/>
      <position x="11.5" y="-2.25" z="0.1"/>
    </waypoints>
    <scenarios>
      <scenario name="Parked_1" type="ParkingExit">
        <trigger_point x="1.5" y="-2.25" z="0.0" yaw="90.0"/>
        <direction value="left"/>
        <frequency from="35" to="65"/>
        <other_actor x="3" y="4" z="0" yaw="0" model="vehicle.*"/>
        <other_actor x="5" y="6" z="0" yaw="180" model="walker.*"/>
      </scenario>
    </scenarios>
  </route>
  <route id="8" town="Town02">
    <waypoints><position x="0" y="0" z="0"/><position x="5" y="0" z="0"/></waypoints>
    <weathers><weather route_percentage="0" precipitation="30"/><weather route_percentage="100"/></weathers>
  </route>
</routes>
"""


def same_route(a: Route, b: Route) -> bool:
    """Field-by-field equality (Route holds numpy arrays, so == does not work on it)."""
    return (
        a.id == b.id
        and a.town == b.town
        and np.array_equal(a.keypoints, b.keypoints)
        and a.scenarios == b.scenarios
        and a.weathers == b.weathers
        and a.attributes == b.attributes
    )


def test_given_the_dev_file_when_parsed_then_all_17_routes_are_complete(dev_routes_file: Path) -> None:
    routes = parse_routes(dev_routes_file)

    assert len(routes) == 17
    assert len({r.id for r in routes}) == 17
    assert {r.town for r in routes} == {"Town01", "Town02", "Town04", "Town06", "Town07", "Town10HD"}
    first = routes[0]
    assert (first.id, first.town, first.attributes) == ("25783", "Town04", {"road_id": "39"})
    assert first.keypoints.shape == (55, 3)
    np.testing.assert_allclose(first.keypoints[0], [-43.7, 30.4, 10.3])
    assert first.scenarios[0].type == "AccidentTwoWays"
    assert first.scenarios[0].value("distance") == 40.0
    assert first.scenarios[0].parameters["frequency"] == {"from": "60", "to": "172"}
    assert first.scenarios[0].trigger_point.yaw_deg == pytest.approx(0.2)
    assert [w.route_percentage for w in first.weathers] == [0.0, 100.0]
    assert first.weathers[0].parameters["sun_altitude_angle"] == 15.0
    merger = next(r for r in routes if r.id == "26023").scenarios[0]
    assert merger.parameters["start_actor_flow"] == {"x": "22.4", "y": "237.5", "z": "0.0"}
    assert merger.value("flow_speed") == 10.0


def test_given_the_dev_file_when_written_and_parsed_again_then_routes_are_equal(
    dev_routes_file: Path, tmp_path: Path
) -> None:
    routes = parse_routes(dev_routes_file)

    text = write_routes(routes, tmp_path / "out.xml")
    again = parse_routes(tmp_path / "out.xml")

    assert (tmp_path / "out.xml").read_text() == text
    assert len(again) == len(routes)
    assert all(same_route(a, b) for a, b in zip(routes, again, strict=True))


@pytest.mark.parametrize("path", BUILTIN_ROUTE_FILES, ids=[p.name for p in BUILTIN_ROUTE_FILES])
def test_given_a_builtin_route_file_when_round_tripped_then_routes_are_equal(path: Path) -> None:
    routes = parse_routes(path)

    again = parse_routes(write_routes(routes))

    assert routes and all(same_route(a, b) for a, b in zip(routes, again, strict=True))


def test_given_a_rich_route_when_parsed_then_every_tag_is_kept_and_round_trips() -> None:
    routes = parse_routes(RICH_XML)

    parked = routes[0].scenarios[0]
    assert routes[0].attributes == {"road_id": "3", "note": 'a & b <c> "q"'}
    assert parked.parameters == {"direction": {"value": "left"}, "frequency": {"from": "35", "to": "65"}}
    assert parked.text("direction") == "left"
    assert [a["model"] for a in parked.other_actors] == ["vehicle.*", "walker.*"]
    assert parked.trigger_point.yaw_deg == 90.0
    again = parse_routes(write_routes(routes))
    assert all(same_route(a, b) for a, b in zip(routes, again, strict=True))


def test_given_a_route_without_weathers_then_the_leaderboard_default_applies_at_0_and_100() -> None:
    route = parse_routes(RICH_XML)[0]

    assert [w.route_percentage for w in route.weathers] == [0.0, 100.0]
    assert all(w.parameters == DEFAULT_WEATHER_ATTRIBUTES for w in route.weathers)


def test_given_partial_weathers_then_they_start_from_the_leaderboard_base_weather() -> None:
    route = parse_routes(RICH_XML)[1]

    assert route.weathers[0].parameters == {**DEFAULT_WEATHER_ATTRIBUTES, "precipitation": 30.0}
    assert route.weathers[1].parameters == DEFAULT_WEATHER_ATTRIBUTES
    assert route.scenarios == []


def _route(body: str, attributes: str = 'id="1" town="Town01"') -> str:
    return f"<routes>\n<route {attributes}>\n{body}\n</route>\n</routes>"


WAYPOINTS = '<waypoints><position x="0" y="0" z="0"/><position x="5" y="0" z="0"/></waypoints>'
BAD_INPUTS = {
    "malformed": ("<routes>\n<route id='1' town='T'>\n<waypoints>\n</routes>", ":4:"),
    "wrong root": ("<scenarios><route id='1'/></scenarios>", "not <routes>"),
    "no routes": ("<routes></routes>", "holds no <route>"),
    "no id": (_route(WAYPOINTS, 'town="Town01"'), "has no 'id' attribute"),
    "no town": (_route(WAYPOINTS, 'id="9"'), "route 9: <route> has no 'town'"),
    "no keypoints": (_route("<waypoints></waypoints>"), "route 1: has no keypoints"),
    "no waypoints tag": (_route(""), "route 1: has no keypoints"),
    "non-numeric": (_route('<waypoints><position x="abc" y="0" z="0"/></waypoints>'), "x='abc'"),
    "nan": (_route('<waypoints><position x="nan" y="0" z="0"/></waypoints>'), "x='nan'"),
    "missing z": (_route('<waypoints><position x="1" y="0"/></waypoints>'), "no 'z' attribute"),
    "no trigger": (
        _route(
            WAYPOINTS
            + '<scenarios><scenario name="A_1" type="A"><distance value="3"/></scenario></scenarios>'
        ),
        "scenario 'A_1' has no <trigger_point",
    ),
    "bad weather": (
        _route(WAYPOINTS + '<weathers><weather route_percentage="0" cloudiness="lots"/></weathers>'),
        "cloudiness='lots'",
    ),
    "duplicate ids": (
        "<routes>\n"
        + _route(WAYPOINTS).removeprefix("<routes>\n").removesuffix("\n</routes>")
        + "\n"
        + _route(WAYPOINTS).removeprefix("<routes>\n").removesuffix("\n</routes>")
        + "\n</routes>",
        "route 1: duplicate route id (first defined at line 2)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_given_bad_route_xml_when_parsed_then_one_clear_error_names_the_problem(case: str) -> None:
    text, expected = BAD_INPUTS[case]

    with pytest.raises(RouteFileError) as error:
        parse_routes(text)

    assert expected in str(error.value)
    assert str(error.value).startswith(TEXT_SOURCE_NAME + ":")


@pytest.mark.parametrize("content", [b'{"routes": []}', b"", b"\x89PNG\r\n\x1a\n\x00\xff"])
def test_given_a_file_that_is_not_xml_then_the_error_says_so(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "routes.xml"
    path.write_bytes(content)

    with pytest.raises(RouteFileError, match=r"is not an XML file"):
        parse_routes(path)


def test_given_a_bad_file_on_disk_then_the_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(_route('<waypoints><position x="1" y="oops" z="0"/></waypoints>'))

    with pytest.raises(RouteFileError, match=rf"{path}:3: route 1: <position> y='oops'"):
        parse_routes(path)


def test_given_a_latin1_file_with_its_declaration_then_its_text_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "latin1.xml"
    path.write_bytes(
        _route(WAYPOINTS, 'id="1" town="Town01" note="caf\xe9"')
        .replace("<routes>", "<?xml version='1.0' encoding='ISO-8859-1'?>\n<routes>", 1)
        .encode("latin-1")
    )

    assert parse_routes(path)[0].attributes == {"note": "caf\xe9"}


def test_given_a_missing_file_then_the_error_says_so(tmp_path: Path) -> None:
    with pytest.raises(RouteFileError, match="does not exist"):
        parse_routes(tmp_path / "nope.xml")


def test_given_routes_when_selecting_ids_and_ranges_then_file_order_is_kept() -> None:
    routes = [Route(rid, "Town01", np.zeros((2, 3))) for rid in ("3", "10", "11", "12", "abc")]

    picked = select_routes(routes, ["abc", *split_route_ids("10-11, 3")])

    assert [r.id for r in picked] == ["3", "10", "11", "abc"]
    assert select_routes(routes, None) == routes


def test_given_an_unknown_route_id_when_selecting_then_the_error_lists_available_ids() -> None:
    routes = [Route("3", "Town01", np.zeros((2, 3)))]

    with pytest.raises(RouteFileError, match=r"no route with id 4 \(available: 3\)"):
        select_routes(routes, ["4"])
