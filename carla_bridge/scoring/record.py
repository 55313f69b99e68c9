"""`RouteRecord`: the leaderboard's per-route result, plus Bench2Drive's efficiency and comfortness.

Scores as the leaderboard statistics manager computes them:

    RC      = 100 if the destination was reached, else the completion percentage
    penalty = prod_e c_e  x  prod_o (1 - (1 - c_o) x pct_o / 100)
    DS      = max(RC x penalty, 0)

with c_e the coefficient of each counted event (leaderboard.PENALTY_COEFFICIENTS) and o the
percentage events (outside route lanes, c_o = 0). Route deviation, agent blocked and route timeouts end
the route and set its status but carry no multiplier. Success (Bench2Drive): status Completed or
Perfect and no infraction of any kind but minimum speed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from carla_bridge.scoring.errors import ResultsFileError
from carla_bridge.scoring.leaderboard import (
    INFRACTION_KEYS,
    OUTSIDE_LANES_COEFFICIENT,
    PENALTY_COEFFICIENTS,
    RECORD_INFRACTION_ORDER,
    ROUND_DIGITS,
    ROUND_DIGITS_SCORE,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_PERFECT,
    SUCCESS_IGNORED_KEYS,
    SUCCESS_STATUSES,
)
from carla_bridge.snapshot import InfractionEvent, InfractionKind


@dataclass(frozen=True)
class RouteScores:
    score_route: float  # route completion RC, percent
    score_penalty: float  # infraction penalty, product of coefficients in [0, 1]
    score_composed: float  # driving score DS = max(RC x penalty, 0), percent


@dataclass(frozen=True)
class RouteMeta:
    route_length: float  # m, length of the dense route
    duration_game: float  # s of simulated time
    duration_system: float  # s of wall-clock time


@dataclass
class RouteRecord:
    """One route's result. `infractions` maps every leaderboard key to its messages (possibly empty)."""

    route_id: str  # "RouteScenario_{id}_rep0"
    index: int
    status: str
    infractions: dict[str, list[str]]
    scores: RouteScores
    meta: RouteMeta
    efficiency: float | None = None  # percent of the surrounding traffic's speed; None without traffic
    comfort: float | None = None  # share of comfortable 1 s segments in [0, 1]; None for a short route
    scenario_types: tuple[str, ...] = ()
    town: str = ""
    extras: dict[str, Any] = field(default_factory=dict)  # unknown keys of a read record, written back as is

    @property
    def num_infractions(self) -> int:
        return sum(len(messages) for messages in self.infractions.values())

    @property
    def success(self) -> bool:
        """Bench2Drive success: Completed/Perfect and no infraction except minimum-speed ones."""
        if self.status not in SUCCESS_STATUSES:
            return False
        return all(
            not messages for key, messages in self.infractions.items() if key not in SUCCESS_IGNORED_KEYS
        )

    def to_dict(self) -> dict[str, Any]:
        """The leaderboard record layout, Bench2Drive extras after it."""
        data: dict[str, Any] = {
            "index": self.index,
            "route_id": self.route_id,
            "status": self.status,
            "num_infractions": self.num_infractions,
            "infractions": {key: list(messages) for key, messages in self.infractions.items()},
            "scores": {
                "score_route": self.scores.score_route,
                "score_penalty": self.scores.score_penalty,
                "score_composed": self.scores.score_composed,
            },
            "meta": {
                "route_length": self.meta.route_length,
                "duration_game": self.meta.duration_game,
                "duration_system": self.meta.duration_system,
            },
            "efficiency": self.efficiency,
            "comfort": self.comfort,
            "scenario_types": list(self.scenario_types),
            "town": self.town,
        }
        data.update(self.extras)
        return data

    @staticmethod
    def from_dict(data: Mapping[str, Any], index: int = 0) -> RouteRecord:
        """Inverse of `to_dict`; also reads plain leaderboard / Bench2Drive records (no extras, no index)."""
        try:
            route_id = str(data["route_id"])
            status = str(data["status"])
            scores = data["scores"]
            meta = data.get("meta", {})
            record_scores = RouteScores(
                score_route=float(scores["score_route"]),
                score_penalty=float(scores["score_penalty"]),
                score_composed=float(scores["score_composed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultsFileError(
                f"route record {data.get('route_id', '?')!r} lacks or mangles {exc}; a record needs route_id, "
                "status and scores{score_route, score_penalty, score_composed} as the leaderboard writes them"
            ) from exc
        infractions = empty_infractions()
        for key, messages in dict(data.get("infractions", {})).items():
            infractions[key] = [str(m) for m in messages]
        known = {
            "index",
            "route_id",
            "status",
            "num_infractions",
            "infractions",
            "scores",
            "meta",
            "efficiency",
            "comfort",
            "scenario_types",
            "town",
        }
        return RouteRecord(
            route_id=route_id,
            index=int(data.get("index", index)),
            status=status,
            infractions=infractions,
            scores=record_scores,
            meta=RouteMeta(
                route_length=float(meta.get("route_length", 0.0)),
                duration_game=float(meta.get("duration_game", 0.0)),
                duration_system=float(meta.get("duration_system", 0.0)),
            ),
            efficiency=optional_float(data.get("efficiency")),
            comfort=optional_float(data.get("comfort")),
            scenario_types=tuple(str(t) for t in data.get("scenario_types", ())),
            town=str(data.get("town", "")),
            extras={k: v for k, v in data.items() if k not in known},
        )


def optional_float(value: Any) -> float | None:
    """`value` as a float, None kept (an optional number read back from JSON)."""
    return None if value is None else float(value)


def empty_infractions() -> dict[str, list[str]]:
    """Every leaderboard infraction key mapped to an empty list, in record order."""
    return {key: [] for key in RECORD_INFRACTION_ORDER}


def infraction_lists(events: Iterable[InfractionEvent]) -> dict[str, list[str]]:
    """Event messages grouped by leaderboard key."""
    infractions = empty_infractions()
    for event in events:
        infractions[INFRACTION_KEYS[event.kind]].append(event.message)
    return infractions


def infraction_penalty(events: Iterable[InfractionEvent]) -> float:
    """penalty = prod_e c_e x prod_o (1 - (1 - c_o) x pct_o / 100); 1.0 without events."""
    penalty = 1.0
    for event in events:
        if event.kind in PENALTY_COEFFICIENTS:
            penalty *= PENALTY_COEFFICIENTS[event.kind]
        elif event.kind == InfractionKind.OUTSIDE_ROUTE_LANES:
            penalty *= 1.0 - (1.0 - OUTSIDE_LANES_COEFFICIENT) * event.value / 100.0
    return penalty


def driving_score(score_route: float, score_penalty: float) -> float:
    """DS = max(RC x penalty, 0)."""
    return max(score_route * score_penalty, 0.0)


def route_status(reached: bool, failure_status: str | None, num_infractions: int) -> str:
    """A failure status wins; a reached route is Perfect without infractions, else Completed; else Failed."""
    if failure_status:
        return failure_status
    if reached:
        return STATUS_PERFECT if num_infractions == 0 else STATUS_COMPLETED
    return STATUS_FAILED


def build_route_record(
    *,
    route_id: str,
    index: int,
    events: Iterable[InfractionEvent],
    completion_pct: float,
    reached: bool,
    failure_status: str | None,
    route_length_m: float,
    duration_game_s: float,
    duration_system_s: float,
    efficiency: float | None = None,
    comfort: float | None = None,
    scenario_types: tuple[str, ...] = (),
    town: str = "",
) -> RouteRecord:
    """A RouteRecord from a route's events and outcome (scores per the module equations, leaderboard rounding)."""
    events = list(events)
    infractions = infraction_lists(events)
    score_route = 100.0 if reached else completion_pct
    penalty = infraction_penalty(events)
    num = sum(len(v) for v in infractions.values())
    return RouteRecord(
        route_id=route_id,
        index=index,
        status=route_status(reached, failure_status, num),
        infractions=infractions,
        scores=RouteScores(
            score_route=round(score_route, ROUND_DIGITS_SCORE),
            score_penalty=round(penalty, ROUND_DIGITS_SCORE),
            score_composed=round(driving_score(score_route, penalty), ROUND_DIGITS_SCORE),
        ),
        meta=RouteMeta(
            route_length=round(route_length_m, ROUND_DIGITS),
            duration_game=round(duration_game_s, ROUND_DIGITS),
            duration_system=round(duration_system_s, ROUND_DIGITS),
        ),
        efficiency=None
        if efficiency is None or math.isnan(efficiency)
        else round(efficiency, ROUND_DIGITS_SCORE),
        comfort=None if comfort is None else round(comfort, ROUND_DIGITS_SCORE),
        scenario_types=scenario_types,
        town=town,
    )
