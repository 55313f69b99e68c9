"""User-facing errors of the scoring package (TakeoverError subclasses: one line, problem and fix)."""

from __future__ import annotations

from carla_bridge.errors import TakeoverError


class ScoringError(TakeoverError):
    """Scoring cannot proceed with what it was given."""


class ScoringConfigError(ScoringError):
    """conf/scoring.yaml (or its overrides) holds values the criteria cannot work with."""


class ResultsFileError(ScoringError):
    """A leaderboard / Bench2Drive results JSON cannot be read: missing file, bad JSON, missing keys."""
