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

# Bench2Drive scenario types (registration side effects; after base so the package is complete)
from carla_bridge.embedded.scenarios import accident as _accident  # noqa: F401
from carla_bridge.embedded.scenarios import control_loss as _control_loss  # noqa: F401
from carla_bridge.embedded.scenarios import cut_in as _cut_in  # noqa: F401
from carla_bridge.embedded.scenarios import emergency as _emergency  # noqa: F401
from carla_bridge.embedded.scenarios import invading_turn as _invading_turn  # noqa: F401
from carla_bridge.embedded.scenarios import junctions as _junctions  # noqa: F401
from carla_bridge.embedded.scenarios import merging as _merging  # noqa: F401
from carla_bridge.embedded.scenarios import pedestrians as _pedestrians  # noqa: F401
