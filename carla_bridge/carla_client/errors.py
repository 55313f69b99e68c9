"""Errors of the real CARLA path; all are SimulatorError, so callers may catch the contract's one class."""

from __future__ import annotations

from carla_bridge.errors import SimulatorError


class ServerUnreachableError(SimulatorError):
    """Nothing answers at host:port, or what answers is not a CARLA server (wrong port, still loading)."""


class ServerCrashedError(SimulatorError):
    """The server stopped answering or its process died while a route ran; the episode is discarded."""


class ServerStartError(SimulatorError):
    """A CARLA server process could not be started or did not become ready in time."""


class RouteRetriesExhaustedError(SimulatorError):
    """A route failed on every try (each after a server restart)."""


class LeaderboardRunError(SimulatorError):
    """Bench2Drive's leaderboard_evaluator.py could not run a route (set-up, agent crash, no result)."""
