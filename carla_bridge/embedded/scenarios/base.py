"""Scenario plugin base class and registry.

A scenario class handles one Bench2Drive scenario type. Life cycle, driven by the simulator:

    setup(world, spec)        at reset: read parameters, precompute, spawn actors that exist from the start
    trigger_distance_m        the ego within this distance (m) of the trigger point starts it
    on_trigger(world)         once, when triggered (status "running")
    tick(world) -> status     every tick while running: "running" | "done" | "failed"
    timeout_s                 running longer than this ends it as "timed_out"

Register a class with ``@register("TypeName")``; the simulator instantiates one object per route
scenario. `world` is the `carla_bridge.embedded.world.World` API (see the package docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from carla_bridge.route import ScenarioSpec

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

PENDING, RUNNING, DONE, SKIPPED, TIMED_OUT, FAILED = (
    "pending",
    "running",
    "done",
    "skipped",
    "timed_out",
    "failed",
)

_REGISTRY: dict[str, type[Scenario]] = {}


def register(*type_names: str):
    """Class decorator: make the class handle these Bench2Drive scenario type names."""

    def deco(cls: type[Scenario]) -> type[Scenario]:
        for name in type_names:
            _REGISTRY[name] = cls
        cls.type_names = tuple(type_names)
        return cls

    return deco


def scenario_class(type_name: str) -> type[Scenario] | None:
    return _REGISTRY.get(type_name)


def registered_types() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


class Scenario:
    """Base class: a scripted Bench2Drive scenario (see module docstring)."""

    type_names: ClassVar[tuple[str, ...]] = ()
    trigger_distance_m: float = 20.0
    timeout_s: float = 60.0

    def __init__(self) -> None:
        self.spec: ScenarioSpec | None = None
        self.actor_ids: list[int] = []

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        self.spec = spec

    def on_trigger(self, world: World) -> None:
        """Called once when the ego reaches the trigger point."""

    def tick(self, world: World) -> str:
        """Called every tick while running; return RUNNING, DONE or FAILED."""
        return DONE

    def cleanup(self, world: World) -> None:
        """Called once when the scenario ends (done / failed / timed out)."""
