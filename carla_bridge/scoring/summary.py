"""`GlobalRecord` and `summarise`: the leaderboard's global statistics plus Bench2Drive's benchmark numbers.

Leaderboard (statistics manager): score means over *all* routes of the run (a missing route counts 0),
sample standard deviations, summed lengths and durations, the worst status (Perfect > Completed >
Failed) and the failed routes as exceptions, and infractions per kilometre driven, where
km_driven = sum_r route_length_r / 1000 x RC_r / 100 (at least 0.001). Outside route lanes is a
distance, not a count: its figure is the kilometres driven outside the lanes per kilometre driven.

Bench2Drive: driving score DS = sum_r DS_r / N, success rate SR = successes / N (a fraction, as its
merge tool writes it), efficiency and comfortness means over the routes that have them, and the five
ability scores with their mean (carla_bridge.scoring.abilities).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from carla_bridge.scoring.abilities import ability_mean, ability_scores
from carla_bridge.scoring.errors import ScoringError
from carla_bridge.scoring.leaderboard import (
    RECORD_INFRACTION_ORDER,
    ROUND_DIGITS,
    ROUND_DIGITS_SCORE,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_PERFECT,
)
from carla_bridge.scoring.record import RouteRecord, RouteScores

MIN_KM_DRIVEN = 0.001  # the leaderboard's floor, avoids dividing by zero
OUTSIDE_LANES_KEY = "outside_route_lanes"
_OUTSIDE_METERS = re.compile(r"for about ([0-9.eE+-]+) meters")
SCORE_KEYS = ("score_composed", "score_route", "score_penalty")


@dataclass
class GlobalRecord:
    """Global statistics of a run of N routes (`total_routes`, of which `eval_num` have records)."""

    status: str  # worst route status: "Perfect", "Completed" or "Failed"
    infractions: dict[str, float]  # per km driven (outside_route_lanes: km outside per km driven)
    scores_mean: RouteScores  # means over total_routes, missing routes counting 0
    scores_std_dev: RouteScores  # sample standard deviations over the records (0 for a single route)
    total_length: float  # m
    duration_game: float  # s
    duration_system: float  # s
    exceptions: list[tuple[str, int, str]]  # (route_id, index, status) of failed routes
    total_routes: int
    eval_num: int
    driving_score: float  # Bench2Drive DS in percent
    success_rate: float  # Bench2Drive SR as a fraction in [0, 1]
    efficiency: float | None
    comfort: float | None
    abilities: dict[str, float | None] = field(default_factory=dict)  # fractions in [0, 1]
    ability_mean: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The leaderboard's global_record layout, Bench2Drive's figures in extra keys."""
        return {
            "index": -1,
            "route_id": -1,
            "status": self.status,
            "infractions": dict(self.infractions),
            "scores_mean": _scores_dict(self.scores_mean),
            "scores_std_dev": _scores_dict(self.scores_std_dev),
            "meta": {
                "total_length": self.total_length,
                "duration_game": self.duration_game,
                "duration_system": self.duration_system,
                "exceptions": [list(e) for e in self.exceptions],
            },
            "total_routes": self.total_routes,
            "eval_num": self.eval_num,
            "driving_score": self.driving_score,
            "success_rate": self.success_rate,
            "efficiency": self.efficiency,
            "comfort": self.comfort,
            "abilities": dict(self.abilities),
            "ability_mean": self.ability_mean,
        }


def _scores_dict(scores: RouteScores) -> dict[str, float]:
    return {key: getattr(scores, key) for key in SCORE_KEYS}


def outside_lanes_m(messages: Sequence[str]) -> float:
    """Metres outside the route lanes, read back from outside-route-lanes messages."""
    total = 0.0
    for message in messages:
        match = _OUTSIDE_METERS.search(message)
        if match:
            total += float(match.group(1))
    return total


def km_driven(records: Sequence[RouteRecord]) -> float:
    """sum_r route_length_r / 1000 x RC_r / 100, floored at MIN_KM_DRIVEN."""
    km = sum(r.meta.route_length / 1000.0 * r.scores.score_route / 100.0 for r in records)
    return max(km, MIN_KM_DRIVEN)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(
    records: Sequence[RouteRecord],
    total_routes: int | None = None,
    route_types: Mapping[str, Sequence[str]] | None = None,
) -> GlobalRecord:
    """Global statistics of `records` out of `total_routes` (default: as many as records).

    `route_types` maps route_id ("RouteScenario_3_rep0") or the bare route id ("3") to scenario types,
    for records that do not carry theirs (e.g. read from a Bench2Drive file).
    """
    n = len(records) if total_routes is None else total_routes
    if n < len(records):
        raise ScoringError(
            f"total_routes={n} is smaller than the {len(records)} route records given; "
            "pass the number of routes of the whole run (or leave it out)"
        )
    denominator = max(n, 1)

    means = {key: sum(getattr(r.scores, key) for r in records) / denominator for key in SCORE_KEYS}
    if len(records) > 1:
        stds = {
            key: math.sqrt(
                sum((getattr(r.scores, key) - means[key]) ** 2 for r in records) / (denominator - 1)
            )
            for key in SCORE_KEYS
        }
    else:
        stds = dict.fromkeys(SCORE_KEYS, 0.0)

    status = STATUS_PERFECT
    exceptions: list[tuple[str, int, str]] = []
    for r in records:
        result = STATUS_FAILED if STATUS_FAILED in r.status else r.status
        if result == STATUS_FAILED:
            exceptions.append((r.route_id, r.index, r.status))
            status = STATUS_FAILED
        elif status == STATUS_PERFECT and result != STATUS_PERFECT:
            status = STATUS_COMPLETED
    if not records:
        status = STATUS_FAILED

    km = km_driven(records)
    infractions: dict[str, float] = {}
    for key in RECORD_INFRACTION_ORDER:
        if key == OUTSIDE_LANES_KEY:
            amount = sum(outside_lanes_m(r.infractions.get(key, [])) for r in records) / 1000.0
        else:
            amount = float(sum(len(r.infractions.get(key, [])) for r in records))
        infractions[key] = round(amount / km, ROUND_DIGITS)

    successes = sum(r.success for r in records)
    typed = [(_types_of(r, route_types), r.success) for r in records]
    abilities = ability_scores(typed)
    return GlobalRecord(
        status=status,
        infractions=infractions,
        scores_mean=RouteScores(**{k: round(v, ROUND_DIGITS_SCORE) for k, v in means.items()}),
        scores_std_dev=RouteScores(**{k: round(v, ROUND_DIGITS_SCORE) for k, v in stds.items()}),
        total_length=round(sum(r.meta.route_length for r in records), ROUND_DIGITS),
        duration_game=round(sum(r.meta.duration_game for r in records), ROUND_DIGITS),
        duration_system=round(sum(r.meta.duration_system for r in records), ROUND_DIGITS),
        exceptions=exceptions,
        total_routes=n,
        eval_num=len(records),
        driving_score=round(means["score_composed"], ROUND_DIGITS_SCORE),
        success_rate=round(successes / denominator, ROUND_DIGITS_SCORE),
        efficiency=_round_opt(_mean([r.efficiency for r in records if r.efficiency is not None])),
        comfort=_round_opt(_mean([r.comfort for r in records if r.comfort is not None])),
        abilities={k: _round_opt(v) for k, v in abilities.items()},
        ability_mean=_round_opt(ability_mean(abilities)),
    )


def _round_opt(value: float | None) -> float | None:
    return None if value is None else round(value, ROUND_DIGITS_SCORE)


def _types_of(record: RouteRecord, route_types: Mapping[str, Sequence[str]] | None) -> Sequence[str]:
    if record.scenario_types or route_types is None:
        return record.scenario_types
    if record.route_id in route_types:
        return route_types[record.route_id]
    bare = _bare_route_id(record.route_id)
    return route_types.get(bare, ())


def _bare_route_id(route_id: str) -> str:
    """Bare route id of a record name: RouteScenario_1711_rep0 -> 1711; other ids unchanged."""
    match = re.fullmatch(r"RouteScenario_(.+)_rep\d+", route_id)
    return match.group(1) if match else route_id
