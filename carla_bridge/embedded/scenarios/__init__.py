"""Bench2Drive scenario plugins of the embedded simulator (see base.py for the life cycle).

Importing this package registers the built-in scenario types.
"""

from carla_bridge.embedded.scenarios import hard_break as _hard_break  # noqa: F401  (registers)
from carla_bridge.embedded.scenarios import obstacles as _obstacles  # noqa: F401  (registers)
from carla_bridge.embedded.scenarios.base import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    TIMED_OUT,
    Scenario,
    register,
    registered_types,
    scenario_class,
)

__all__ = [
    "DONE", "FAILED", "PENDING", "RUNNING", "SKIPPED", "TIMED_OUT",
    "Scenario", "register", "registered_types", "scenario_class",
]  # fmt: skip
