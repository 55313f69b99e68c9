"""Errors of the expert, reported to users as one clear line (carla_bridge.errors.TakeoverError)."""

from __future__ import annotations

from carla_bridge.errors import TakeoverError


class ExpertError(TakeoverError):
    """The expert was used wrongly (e.g. asked to plan before `reset(route, cmap)`)."""
