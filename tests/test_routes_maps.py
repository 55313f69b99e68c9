"""Map discovery: search order, town name forms, caching, clear errors for missing or broken maps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import carla
import pytest

from carla_bridge.config import load_config
from carla_bridge.errors import MapNotFoundError
from carla_bridge.maps import (
    BUILTIN_MAPS_DIR,
    CARLA_OPENDRIVE_SUBDIR,
    InvalidMapError,
    MapLibrary,
    MapsConfig,
    canonical_town,
    load_maps_config,
)

ONE_ROAD_XODR = """<?xml version="1.0" standalone="yes"?>
<OpenDRIVE>
  <header revMajor="1" revMinor="4" name="{name}" version="1"><geoReference>+lat_0=0</geoReference></header>
  <road name="r1" length="40" id="1" junction="-1">
    <link/>
    <planView><geometry s="0" x="0" y="0" hdg="0" length="40"><line/></geometry></planView>
    <lanes><laneSection s="0">
      <center><lane id="0" type="none" level="false"/></center>
      <right><lane id="-1" type="driving" level="false">
        <width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane></right>
    </laneSection></lanes>
  </road>
</OpenDRIVE>
"""


def _write_town(folder: Path, town: str, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{town}.xodr"
    path.write_text(ONE_ROAD_XODR.format(name=town) if text is None else text)
    return path


@pytest.fixture
def no_carla_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARLA_ROOT", raising=False)


def test_given_town_name_forms_then_they_name_the_file_stem() -> None:
    assert canonical_town("Town04") == "Town04"
    assert canonical_town("Town04_Opt") == "Town04"
    assert canonical_town("Carla/Maps/Town10HD_Opt") == "Town10HD"
    assert canonical_town("Town01.xodr") == "Town01"


def test_given_the_shared_towns_when_searched_then_each_is_found_and_loads(
    shared_maps_dir: Path, no_carla_root: None
) -> None:
    library = MapLibrary([shared_maps_dir])

    assert {"Town01", "Town04", "Town10HD"} <= set(library.towns())
    assert library.find("Town04_Opt") == shared_maps_dir / "Town04.xodr"
    assert library.find("town04") == shared_maps_dir / "Town04.xodr"
    cmap = library.load("Town01")
    assert cmap.name == "Town01" and len(cmap.get_topology()) > 0
    assert library.load("Town01_Opt") is cmap  # cached per library
    assert library.xodr_text("Town01").startswith("<?xml")


def test_given_a_town_in_two_folders_then_the_first_folder_wins(tmp_path: Path, no_carla_root: None) -> None:
    first = _write_town(tmp_path / "a", "Tiny")
    _write_town(tmp_path / "b", "Tiny")

    library = MapLibrary([tmp_path / "a", tmp_path / "b"])

    assert library.find("Tiny") == first
    assert library.search_dirs()[:3] == [tmp_path / "a", tmp_path / "b", BUILTIN_MAPS_DIR]


def test_given_carla_root_then_its_opendrive_folders_are_searched_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "carla"
    small = _write_town(root / CARLA_OPENDRIVE_SUBDIR, "Town77")
    large = _write_town(root / "CarlaUE4/Content/Carla/Maps/Town88/OpenDrive", "Town88")
    monkeypatch.setenv("CARLA_ROOT", str(root))

    library = MapLibrary()

    assert library.find("Town77") == small
    assert library.find("Town88_Opt") == large
    assert library.search_dirs()[0] == BUILTIN_MAPS_DIR
    assert len(MapLibrary(use_carla_root=False).search_dirs()) == 1
    with pytest.raises(MapNotFoundError):
        MapLibrary(use_carla_root=False).find("Town77")


def test_given_an_unknown_town_then_the_error_names_it_every_folder_and_the_fix(
    tmp_path: Path, no_carla_root: None
) -> None:
    _write_town(tmp_path / "maps", "Tiny")
    library = MapLibrary([tmp_path / "maps", tmp_path / "missing"])

    with pytest.raises(MapNotFoundError) as error:
        library.find("Town99")

    message = str(error.value)
    for part in (
        "'Town99'",
        str(tmp_path / "maps"),
        f"{tmp_path / 'missing'} (missing)",
        str(BUILTIN_MAPS_DIR),
    ):
        assert part in message
    assert "--maps DIR" in message and "CARLA_ROOT" in message
    assert "Tiny" in message.split("Towns found:")[1]


@pytest.mark.parametrize(
    "text",
    ["this is not xml", "<OpenDRIVE><header/></OpenDRIVE>", "<OpenDRIVE>"],
    ids=["garbage", "no-roads", "truncated"],
)
def test_given_an_unusable_xodr_when_loaded_then_a_clear_error_names_the_file(
    tmp_path: Path, text: str, no_carla_root: None
) -> None:
    path = _write_town(tmp_path, "Broken", text)

    with pytest.raises(InvalidMapError, match=str(path)):
        MapLibrary([tmp_path]).load("Broken")


def test_given_a_tiny_town_when_loaded_then_carla_map_has_its_road(
    tmp_path: Path, no_carla_root: None
) -> None:
    _write_town(tmp_path, "Tiny")

    cmap = MapLibrary([tmp_path]).load("Tiny")

    waypoint = cmap.get_waypoint(carla.Location(x=10.0, y=1.75, z=0.0))
    assert (waypoint.road_id, waypoint.lane_id) == (1, -1)


def test_given_the_maps_yaml_then_it_matches_the_schema_defaults_and_takes_overrides() -> None:
    assert load_config(MapsConfig, "maps") == MapsConfig()

    config = load_maps_config(["extra_dirs=[/a,/b]", "planner.max_keypoint_offset_m=2.5"])

    assert config.extra_dirs == ["/a", "/b"]
    assert config.planner.max_keypoint_offset_m == 2.5
    library = MapLibrary.from_config(config, extra_dirs=["/cli"])
    assert library.extra_dirs == [Path("/cli"), Path("/a"), Path("/b")]
    assert dataclasses.asdict(MapsConfig())["planner"]["hop_resolution_m"] == 1.0


def test_given_builtin_maps_when_present_then_each_loads(no_carla_root: None) -> None:
    towns = sorted(p.stem for p in BUILTIN_MAPS_DIR.glob("*.xodr"))
    if not towns:
        pytest.skip("no built-in map in carla_bridge/assets/maps yet")
    library = MapLibrary()

    for town in towns:
        assert library.load(town).get_topology(), town
