"""Finding and loading town maps (OpenDRIVE `.xodr` files) as offline `carla.Map` objects.

Search order: the folders given (config `maps.extra_dirs` or `--maps`), the built-in maps shipped in
carla_bridge/assets/maps/, then a CARLA install under `$CARLA_ROOT`
(CarlaUE4/Content/Carla/Maps/OpenDrive/, and the per-town OpenDrive/ folders of the large maps).
Town names are file stems ("Town04" -> Town04.xodr); "Town04_Opt" and "Carla/Maps/Town04" name Town04.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import carla

from carla_bridge.config import load_config
from carla_bridge.errors import MapNotFoundError, TakeoverError
from carla_bridge.route_planner import LANE_SURVEY_SPACING_M, PlannerConfig

BUILTIN_MAPS_DIR = Path(__file__).resolve().parent / "assets" / "maps"
CARLA_ROOT_ENV = "CARLA_ROOT"
CARLA_MAPS_SUBDIR = Path("CarlaUE4/Content/Carla/Maps")
CARLA_OPENDRIVE_SUBDIR = CARLA_MAPS_SUBDIR / "OpenDrive"  # towns 01-10HD
CARLA_LARGE_MAP_GLOB = "*/OpenDrive"  # large maps (Town12, Town13, ...) keep theirs beside the level
XODR_SUFFIX = ".xodr"
OPTIMISED_SUFFIX = "_Opt"  # CARLA's layered variants ("Town04_Opt") share the town's OpenDRIVE


class InvalidMapError(TakeoverError):
    """An OpenDRIVE file exists but cannot be used (unreadable, not OpenDRIVE, no drivable lanes)."""


@dataclass
class MapsConfig:
    """conf/maps.yaml: where towns are found, and how routes are planned on them."""

    extra_dirs: list[str] = field(default_factory=list)  # folders searched first, in order
    use_carla_root: bool = True  # also search the CARLA install named by $CARLA_ROOT
    planner: PlannerConfig = field(default_factory=PlannerConfig)


def load_maps_config(overrides: list[str] | None = None) -> MapsConfig:
    """MapsConfig from its defaults, conf/maps.yaml and dotlist overrides ("planner.hop_resolution_m=2")."""
    return load_config(MapsConfig, "maps", overrides)


def canonical_town(town: str) -> str:
    """The file stem a town name refers to: "Carla/Maps/Town04_Opt" -> "Town04"."""
    name = town.strip().replace("\\", "/").rsplit("/", 1)[-1]
    if name.lower().endswith(XODR_SUFFIX):
        name = name[: -len(XODR_SUFFIX)]
    if name.endswith(OPTIMISED_SUFFIX):
        name = name[: -len(OPTIMISED_SUFFIX)]
    return name


class MapLibrary:
    """Towns found in the search folders; `load` parses and caches one `carla.Map` per town."""

    def __init__(self, extra_dirs: Sequence[Path | str] = (), use_carla_root: bool = True) -> None:
        self.extra_dirs = [Path(d).expanduser() for d in extra_dirs]
        self.use_carla_root = use_carla_root
        self._maps: dict[str, carla.Map] = {}
        self._texts: dict[str, str] = {}

    @classmethod
    def from_config(
        cls, config: MapsConfig | None = None, extra_dirs: Sequence[Path | str] = ()
    ) -> MapLibrary:
        """A library searching `extra_dirs` (e.g. --maps) first, then the configured folders."""
        config = config or load_maps_config()
        return cls([*extra_dirs, *config.extra_dirs], config.use_carla_root)

    def search_dirs(self) -> list[Path]:
        """Every folder searched, in order (CARLA's only while $CARLA_ROOT is set)."""
        dirs = [*self.extra_dirs, BUILTIN_MAPS_DIR]
        root = os.environ.get(CARLA_ROOT_ENV)
        if self.use_carla_root and root:
            maps_dir = Path(root).expanduser() / CARLA_MAPS_SUBDIR
            dirs.append(Path(root).expanduser() / CARLA_OPENDRIVE_SUBDIR)
            if maps_dir.is_dir():
                large = sorted(p for p in maps_dir.glob(CARLA_LARGE_MAP_GLOB) if p.is_dir())
                dirs += [p for p in large if p not in dirs]
        return dirs

    def find(self, town: str) -> Path:
        """The OpenDRIVE file of `town` in the first folder holding it (exact stem first, then any case)."""
        name = canonical_town(town)
        dirs = self.search_dirs()
        if name:
            for folder in dirs:
                path = folder / f"{name}{XODR_SUFFIX}"
                if path.is_file():
                    return path
            for folder in dirs:
                if folder.is_dir():
                    for path in sorted(folder.glob(f"*{XODR_SUFFIX}")):
                        if path.stem.lower() == name.lower():
                            return path
        searched = "; ".join(f"{d}{'' if d.is_dir() else ' (missing)'}" for d in dirs)
        known = ", ".join(self.towns()) or "none"
        carla_hint = (
            "" if os.environ.get(CARLA_ROOT_ENV) or not self.use_carla_root else " ($CARLA_ROOT is not set)"
        )
        raise MapNotFoundError(
            f"no OpenDRIVE file for town '{town}' ({name}{XODR_SUFFIX}) in: {searched}{carla_hint}. "
            f"Towns found: {known}. Fix: pass --maps DIR with {name}{XODR_SUFFIX} in it, or set "
            f"{CARLA_ROOT_ENV} to a CARLA install"
        )

    def towns(self) -> list[str]:
        """Every town stem found in the search folders, sorted."""
        names = set()
        for folder in self.search_dirs():
            if folder.is_dir():
                names.update(path.stem for path in folder.glob(f"*{XODR_SUFFIX}") if path.is_file())
        return sorted(names)

    def xodr_text(self, town: str) -> str:
        """The OpenDRIVE text of `town` (cached)."""
        name = canonical_town(town)
        if name not in self._texts:
            path = self.find(town)
            try:
                self._texts[name] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidMapError(
                    f"cannot read OpenDRIVE file {path} ({exc}): replace it with a valid .xodr file"
                ) from exc
        return self._texts[name]

    def load(self, town: str) -> carla.Map:
        """The offline `carla.Map` of `town` (parsed once per library)."""
        name = canonical_town(town)
        if name not in self._maps:
            text = self.xodr_text(town)
            path = self.find(town)
            try:
                cmap = carla.Map(name, text)
            except RuntimeError as exc:
                raise InvalidMapError(
                    f"{path} is not a valid OpenDRIVE file (carla.Map: {exc}): "
                    "replace it with the town's .xodr"
                ) from exc
            if not cmap.get_topology() and not cmap.generate_waypoints(LANE_SURVEY_SPACING_M):
                raise InvalidMapError(
                    f"{path} has no drivable lanes (carla.Map found no road topology nor lanes): "
                    "is it an OpenDRIVE "
                    "export of the town? Replace it with the town's .xodr"
                )
            self._maps[name] = cmap
        return self._maps[name]
