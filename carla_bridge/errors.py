"""User-facing errors of the simulator room. Each names the problem and the fix in one message."""

from __future__ import annotations


class TakeoverError(Exception):
    """Base of every error the product reports to a user as one clear line (no traceback in the CLI)."""


class RouteFileError(TakeoverError):
    """A route file cannot be read: malformed XML, missing attributes, unknown tags in required places."""


class RouteError(TakeoverError):
    """One route is unusable: unknown town, keypoint far from any lane, unreachable keypoint."""

    def __init__(self, route_id: str, problem: str) -> None:
        super().__init__(f"route {route_id}: {problem}")
        self.route_id = route_id
        self.problem = problem


class MapNotFoundError(TakeoverError):
    """No OpenDRIVE file for a town in any of the searched folders."""


class SimulatorError(TakeoverError):
    """A simulator backend failed (server unreachable, crashed, bad state)."""
