"""The `Simulator` backend contract shared by the embedded simulator and the CARLA client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import carla

    from carla_bridge.route import Route
    from carla_bridge.scoring.criteria import RouteCriteria
    from carla_bridge.snapshot import Control, InfractionEvent, WorldSnapshot

FIXED_DELTA_S = 0.05  # 20 Hz, as the leaderboard


@runtime_checkable
class Simulator(Protocol):
    """reset(route, seed) -> snapshot; step(control) -> snapshot at FIXED_DELTA_S; close()."""

    dt: float

    @property
    def map(self) -> carla.Map: ...

    @property
    def done(self) -> bool:
        """True once the route's scoring criteria have ended it (completed, failed, timed out)."""
        ...

    @property
    def criteria(self) -> RouteCriteria | None:
        """The route's scoring criteria; `criteria.record()` gives the leaderboard record."""
        ...

    def reset(self, route: Route, seed: int) -> WorldSnapshot: ...

    def step(self, control: Control) -> WorldSnapshot: ...

    def infractions(self) -> list[InfractionEvent]:
        """Every infraction since reset (the union of the snapshots' `events`)."""
        ...

    def close(self) -> None: ...
