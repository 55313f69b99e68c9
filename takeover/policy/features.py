"""Policy inputs: the BEV raster, ego speed, target point on the route and the navigation command.

`FeatureBuilder` turns a WorldSnapshot (+ the route's dense interpolation and the map) into
`PolicyFeatures` (tensors). Storage-friendly numpy arrays come from `FeatureBuilder.arrays` and
become tensors with `FeatureArrays.to_features`, so data sets can store compact uint8 rasters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from carla_bridge.bev import BevConfig, BevRasterizer
from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import world_to_ego
from carla_bridge.route import DenseRoute, RoadOption

if TYPE_CHECKING:
    import carla

    from carla_bridge.snapshot import WorldSnapshot
    from takeover.policy.config import FeatureConfig

# One-hot order of the navigation command. VOID (no command) counts as LANEFOLLOW.
COMMANDS: tuple[RoadOption, ...] = (
    RoadOption.LEFT,
    RoadOption.RIGHT,
    RoadOption.STRAIGHT,
    RoadOption.LANEFOLLOW,
    RoadOption.CHANGELANELEFT,
    RoadOption.CHANGELANERIGHT,
)
NUM_COMMANDS = len(COMMANDS)
_COMMAND_INDEX = {int(c): i for i, c in enumerate(COMMANDS)}
_FOLLOW = (int(RoadOption.LANEFOLLOW), int(RoadOption.VOID))
_BEV_SCALE = 1.0 / 255.0


class FeatureError(TakeoverError):
    """Features cannot be built: no route set, a route without its dense interpolation, bad batch."""


def command_index(option: int) -> int:
    """Index of a RoadOption value in COMMANDS (VOID and unknown values count as LANEFOLLOW)."""
    return _COMMAND_INDEX.get(int(option), _COMMAND_INDEX[int(RoadOption.LANEFOLLOW)])


@dataclass
class PolicyFeatures:
    """Network inputs, one sample (no batch dimension) or a batch (leading B).

    bev: (C, H, W) float32 in [0, 1]; speed: () m/s; target_point: (2,) ego frame m (x forward,
    y right); command: (NUM_COMMANDS,) one-hot. Batched: each with a leading B.
    """

    bev: torch.Tensor
    speed: torch.Tensor
    target_point: torch.Tensor
    command: torch.Tensor

    @property
    def is_batched(self) -> bool:
        return self.bev.dim() == 4

    @property
    def batch_size(self) -> int:
        return int(self.bev.shape[0]) if self.is_batched else 1

    def as_batch(self) -> PolicyFeatures:
        """Itself when batched, else a batch of one."""
        if self.is_batched:
            return self
        return PolicyFeatures(
            self.bev.unsqueeze(0),
            self.speed.reshape(1),
            self.target_point.unsqueeze(0),
            self.command.unsqueeze(0),
        )

    def to(self, device: torch.device | str) -> PolicyFeatures:
        return PolicyFeatures(
            self.bev.to(device, non_blocking=True),
            self.speed.to(device, non_blocking=True),
            self.target_point.to(device, non_blocking=True),
            self.command.to(device, non_blocking=True),
        )


def collate_features(items: Sequence[PolicyFeatures]) -> PolicyFeatures:
    """Stack single samples (or concatenate batches) into one batch."""
    if not items:
        raise FeatureError("collate_features got no samples; give at least one PolicyFeatures")
    batches = [f.as_batch() for f in items]
    shapes = {tuple(b.bev.shape[1:]) for b in batches}
    if len(shapes) != 1:
        raise FeatureError(f"cannot batch BEVs of different shapes {sorted(shapes)}; use one BevConfig")
    return PolicyFeatures(
        torch.cat([b.bev for b in batches]),
        torch.cat([b.speed for b in batches]),
        torch.cat([b.target_point for b in batches]),
        torch.cat([b.command for b in batches]),
    )


@dataclass
class FeatureArrays:
    """The same inputs as numpy, compact for storage: bev (C, H, W) uint8, command as an index."""

    bev: np.ndarray
    speed_mps: float
    target_point: np.ndarray  # (2,) float32 ego frame m
    command: int  # index in COMMANDS

    def to_features(self) -> PolicyFeatures:
        one_hot = torch.zeros(NUM_COMMANDS)
        one_hot[self.command] = 1.0
        return PolicyFeatures(
            torch.from_numpy(self.bev).float().mul_(_BEV_SCALE),
            torch.tensor(self.speed_mps, dtype=torch.float32),
            torch.as_tensor(self.target_point, dtype=torch.float32),
            one_hot,
        )


@dataclass(frozen=True)
class RouteTarget:
    """Where the route leads from the ego: the nearest dense index, the target point and the command."""

    nearest_index: int
    target_index: int
    target_xy_ego: np.ndarray  # (2,)
    command: int  # RoadOption value


def route_target(
    dense: DenseRoute, snapshot: WorldSnapshot, target_distance_m: float, search_m: float
) -> RouteTarget:
    """Target point = the dense point `target_distance_m` of arc length past the ego's nearest point.

    The nearest point is searched from `snapshot.route.index` over `search_m` of route. The command is
    the first one other than LANEFOLLOW/VOID between the nearest point and the target point (so a
    turn is announced `target_distance_m` before it starts and held until it ends), else LANEFOLLOW.
    """
    n = len(dense)
    if n == 0:
        raise FeatureError("the route's dense interpolation is empty; plan the route before driving it")
    start = int(np.clip(snapshot.route.index, 0, n - 1))
    stop = int(np.searchsorted(dense.s, dense.s[start] + search_m, side="right"))
    stop = max(stop, start + 1)
    ego = snapshot.ego.pose
    d2 = (dense.xyz[start:stop, 0] - ego.x) ** 2 + (dense.xyz[start:stop, 1] - ego.y) ** 2
    nearest = start + int(np.argmin(d2))
    target = int(np.searchsorted(dense.s, dense.s[nearest] + target_distance_m, side="left"))
    target = min(max(target, nearest), n - 1)
    window = dense.commands[nearest : target + 1].astype(np.int64)
    turns = window[~np.isin(window, _FOLLOW)]
    command = int(turns[0]) if len(turns) else int(RoadOption.LANEFOLLOW)
    return RouteTarget(nearest, target, world_to_ego(dense.xyz[target, :2], ego), command)


class FeatureBuilder:
    """Builds policy inputs for one route on one map (the map tile is cached across builders)."""

    def __init__(
        self, features: FeatureConfig, bev: BevConfig, cmap: carla.Map, dense: DenseRoute | None
    ) -> None:
        if dense is None:
            raise FeatureError(
                "the route has no dense interpolation (route.dense is None); plan the route first"
            )
        self.config = features
        self.dense = dense
        self.rasterizer = BevRasterizer(bev, cmap)

    def target(self, snapshot: WorldSnapshot) -> RouteTarget:
        return route_target(
            self.dense, snapshot, self.config.target_point_distance_m, self.config.progress_search_m
        )

    def arrays(self, snapshot: WorldSnapshot, ego_history_xy: np.ndarray | None = None) -> FeatureArrays:
        target = self.target(snapshot)
        return FeatureArrays(
            bev=self.rasterizer.rasterize(snapshot, self.dense, ego_history_xy),
            speed_mps=float(snapshot.ego.speed),
            target_point=target.target_xy_ego.astype(np.float32),
            command=command_index(target.command),
        )

    def build(self, snapshot: WorldSnapshot, ego_history_xy: np.ndarray | None = None) -> PolicyFeatures:
        return self.arrays(snapshot, ego_history_xy).to_features()
