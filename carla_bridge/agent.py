"""The driving-agent contract used by the route runner: anything that maps snapshots to controls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import carla

    from carla_bridge.route import Route
    from carla_bridge.snapshot import Control, WorldSnapshot


@runtime_checkable
class Agent(Protocol):
    """`reset` once per route (after the simulator's reset), then `run_step` every tick."""

    name: str

    def reset(self, route: Route, cmap: carla.Map) -> None: ...

    def run_step(self, snapshot: WorldSnapshot) -> Control: ...
