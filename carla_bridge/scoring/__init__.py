"""Leaderboard / Bench2Drive scoring: per-tick criteria, route records, global statistics, results JSON.

Mirrors the CARLA leaderboard 2.0 statistics manager and atomic criteria, and Bench2Drive's tools
(merged results, success rate, abilities, efficiency, comfortness); see research/bench2drive.md.
"""

from carla_bridge.scoring.abilities import ABILITIES, SCENARIO_TYPES, abilities_of, ability_scores
from carla_bridge.scoring.config import ScoringConfig, load_scoring_config
from carla_bridge.scoring.criteria import RouteCriteria
from carla_bridge.scoring.errors import ResultsFileError, ScoringConfigError, ScoringError
from carla_bridge.scoring.record import RouteMeta, RouteRecord, RouteScores, build_route_record
from carla_bridge.scoring.results_io import Results, merge_results, read_results, results_json, write_results
from carla_bridge.scoring.summary import GlobalRecord, summarise

__all__ = [
    "ABILITIES",
    "SCENARIO_TYPES",
    "GlobalRecord",
    "Results",
    "ResultsFileError",
    "RouteCriteria",
    "RouteMeta",
    "RouteRecord",
    "RouteScores",
    "ScoringConfig",
    "ScoringConfigError",
    "ScoringError",
    "abilities_of",
    "ability_scores",
    "build_route_record",
    "load_scoring_config",
    "merge_results",
    "read_results",
    "results_json",
    "summarise",
    "write_results",
]
