"""Collecting demonstrations and takeovers into storage: the library behind `takeover collect` and the flows.

One route x seed is one call of `collect_one(setup, route, seed, store, ...)`: it runs the episode
(takeover.episode.run_episode) and ingests its records atomically, so a flow can fan episodes out as
tasks (each worker builds its own `CollectSetup` once with `make_setup`). `collect_demos` and
`collect_takeovers` loop over routes x seeds with a rich progress bar and return a `CollectSummary`
(episodes, takeovers per reason, driving scores).

Configs: conf/episode.yaml, conf/monitor.yaml, conf/sim.yaml, conf/expert.yaml, conf/policy.yaml,
each overridable per section with dotlists (`Overrides`, e.g. {"monitor": ["stuck_time_s=5"]}).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.errors import TakeoverError
from carla_bridge.maps import MapLibrary, load_maps_config
from carla_bridge.route_planner import prepare_routes
from carla_bridge.units import M_PER_KM
from experts.config import load_expert_config
from experts.expert import PDMLiteExpert
from storage.records import CheckpointRecord
from takeover.episode import (
    EpisodeConfig,
    EpisodeMode,
    EpisodeResult,
    EpisodeTags,
    load_episode_config,
    run_episode,
)
from takeover.monitor import TakeoverMonitor, load_monitor_config

if TYPE_CHECKING:
    from carla_bridge.route import Route
    from carla_bridge.simulator import Simulator
    from storage.store import Store
    from takeover.policy import HybridPolicy, PolicyConfig

# Sections of the per-config dotlist overrides and the conf/<name>.yaml each one changes.
OVERRIDE_SECTIONS: tuple[str, ...] = ("episode", "monitor", "sim", "expert", "policy")
Overrides = Mapping[str, Sequence[str]]
SIM_CONFIG_NAME = "sim"


class CollectError(TakeoverError):
    """Collection cannot start: bad overrides, a missing checkpoint, an unusable route set."""


@dataclass
class CollectSetup:
    """Everything one worker needs to run episodes, built once and reused for every route x seed."""

    mode: EpisodeMode
    sim: Simulator
    expert: PDMLiteExpert
    monitor: TakeoverMonitor | None  # takeover mode only
    policy: HybridPolicy | None  # None for demonstrations
    episode: EpisodeConfig
    feature_config: PolicyConfig | None  # the policy config whose inputs demonstrations store
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None


@dataclass(frozen=True)
class EpisodeSummary:
    route_id: str
    seed: int
    episode_id: int  # row id in the store
    status: str
    driving_score: float
    route_completion: float
    distance_m: float
    sim_time_s: float
    wall_time_s: float
    takeovers: dict[str, int]  # reason -> count
    clips: int
    expert_share: float  # fraction of ticks the expert drove

    @property
    def realtime_factor(self) -> float:
        return self.sim_time_s / self.wall_time_s if self.wall_time_s > 0 else math.inf


@dataclass(frozen=True)
class CollectSummary:
    mode: str
    episodes: tuple[EpisodeSummary, ...]

    @property
    def takeovers_by_reason(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for episode in self.episodes:
            total.update(episode.takeovers)
        return dict(sorted(total.items()))

    @property
    def total_takeovers(self) -> int:
        return sum(self.takeovers_by_reason.values())

    @property
    def distance_km(self) -> float:
        return sum(e.distance_m for e in self.episodes) / M_PER_KM

    @property
    def takeovers_per_km(self) -> float | None:
        return self.total_takeovers / self.distance_km if self.distance_km > 0 else None

    @property
    def mean_driving_score(self) -> float | None:
        if not self.episodes:
            return None
        return sum(e.driving_score for e in self.episodes) / len(self.episodes)


def _section(overrides: Overrides | None, name: str) -> list[str]:
    return list((overrides or {}).get(name, ()))


def check_overrides(overrides: Overrides | None) -> None:
    unknown = sorted(set(overrides or {}) - set(OVERRIDE_SECTIONS))
    if unknown:
        raise CollectError(f"unknown config section(s) {unknown} in overrides; use {list(OVERRIDE_SECTIONS)}")


def make_setup(
    mode: EpisodeMode | str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    maps: MapLibrary | None = None,
    overrides: Overrides | None = None,
) -> CollectSetup:
    """Simulator, expert, monitor and policy for `mode` ("expert" demos, "takeover" or "policy" runs).

    Modes that drive the policy load it from `checkpoint` (HybridPolicy.from_checkpoint); the
    `policy` overrides then change how it drives (controller, noise, device), never its network.
    """
    check_overrides(overrides)
    try:
        mode = EpisodeMode(mode)
    except ValueError:
        raise CollectError(f"unknown mode {mode!r}; use one of {[m.value for m in EpisodeMode]}") from None
    episode = load_episode_config([*_section(overrides, "episode"), f"mode={mode.value}"])
    maps = maps or MapLibrary.from_config()
    sim = EmbeddedSimulator(load_config(SimConfig, SIM_CONFIG_NAME, _section(overrides, "sim")), maps)
    expert = PDMLiteExpert(load_expert_config(_section(overrides, "expert")))
    policy: HybridPolicy | None = None
    feature_config: PolicyConfig | None = None
    sha256: str | None = None
    path: str | None = None
    if mode is EpisodeMode.EXPERT:
        from takeover.policy import load_policy_config

        feature_config = load_policy_config(_section(overrides, "policy"))
    else:
        if checkpoint is None:
            raise CollectError(
                f"mode {mode.value} drives a policy: pass --checkpoint PATH (a saved policy .pt)"
            )
        from takeover.policy import HybridPolicy, file_sha256

        path = str(checkpoint)
        if not Path(path).is_file():
            raise CollectError(f"checkpoint {path} does not exist; train one first or give the right path")
        driving = _section(overrides, "policy")
        policy, _ = HybridPolicy.from_checkpoint(path)
        if driving:
            # Overrides apply to the checkpoint's own config; from_checkpoint refuses network changes.
            merged = OmegaConf.merge(OmegaConf.structured(policy.config), OmegaConf.from_dotlist(driving))
            policy, _ = HybridPolicy.from_checkpoint(path, overrides=OmegaConf.to_object(merged))
        sha256 = file_sha256(path)
    monitor = (
        TakeoverMonitor(load_monitor_config(_section(overrides, "monitor")))
        if mode is EpisodeMode.TAKEOVER
        else None
    )
    return CollectSetup(mode, sim, expert, monitor, policy, episode, feature_config, path, sha256)


def plan_missing(routes: Sequence[Route], maps: MapLibrary) -> list[Route]:
    """Plan the dense route of every route that has none (conf/maps.yaml planner settings)."""
    missing = [r for r in routes if r.dense is None]
    if missing:
        prepare_routes(missing, maps, load_maps_config().planner)
    return list(routes)


def route_set_name(spec: str) -> str:
    """The name episodes record for a route-set spec: the spec for built-ins, else the file's stem."""
    return spec if spec.startswith("builtin") else Path(spec).stem


def collect_one(
    setup: CollectSetup,
    route: Route,
    seed: int,
    store: Store,
    *,
    run: str,
    route_set: str = "default",
    iteration: int | None = None,
    repetition: int = 0,
) -> tuple[EpisodeSummary, EpisodeResult]:
    """Run one route x seed with `setup` and ingest it (idempotent: a stored episode is kept)."""
    if setup.checkpoint_sha256 is not None and setup.checkpoint_path is not None:
        store.record_checkpoint(
            CheckpointRecord(path=setup.checkpoint_path, sha256=setup.checkpoint_sha256, kind="policy")
        )
    if iteration is not None:
        store.start_iteration(run, iteration)
    tags = EpisodeTags(
        run=run, route_set=route_set, iteration=iteration, checkpoint_sha256=setup.checkpoint_sha256,
        repetition=repetition,
    )  # fmt: skip
    result = run_episode(
        setup.sim, route, seed, setup.policy, setup.expert, setup.monitor, setup.episode,
        tags=tags, feature_config=setup.feature_config,
    )  # fmt: skip
    episode_id = store.ingest_episode(result.episode, result.takeovers, result.clips)
    summary = EpisodeSummary(
        route_id=route.id,
        seed=int(seed),
        episode_id=episode_id,
        status=result.record.status,
        driving_score=result.driving_score,
        route_completion=float(result.record.scores.score_route),
        distance_m=result.distance_m,
        sim_time_s=result.sim_time_s,
        wall_time_s=result.wall_time_s,
        takeovers=result.takeovers_by_reason,
        clips=len(result.clips),
        expert_share=result.expert_ticks / result.n_ticks if result.n_ticks else 0.0,
    )
    return summary, result


def _collect(
    setup: CollectSetup,
    routes: Sequence[Route],
    seeds: Sequence[int],
    store: Store,
    run: str,
    route_set: str,
    iteration: int | None,
    progress: bool,
) -> CollectSummary:
    if not routes:
        raise CollectError("no routes to collect on; check the route set and --route-ids")
    if not seeds:
        raise CollectError("no seeds given; pass --seeds 0 [1 ...]")
    maps = getattr(setup.sim, "maps", None)
    if isinstance(maps, MapLibrary):
        plan_missing(routes, maps)
    jobs = [(route, int(seed)) for route in routes for seed in seeds]
    episodes: list[EpisodeSummary] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{setup.mode.value} episodes", total=len(jobs))
        for route, seed in jobs:
            bar.update(task, description=f"{setup.mode.value}: route {route.id} seed {seed}")
            summary, _ = collect_one(
                setup, route, seed, store, run=run, route_set=route_set, iteration=iteration
            )
            episodes.append(summary)
            bar.advance(task)
    return CollectSummary(setup.mode.value, tuple(episodes))


def collect_demos(
    routes: Sequence[Route],
    seeds: Sequence[int],
    store: Store,
    run: str,
    *,
    route_set: str = "default",
    iteration: int | None = None,
    setup: CollectSetup | None = None,
    overrides: Overrides | None = None,
    maps: MapLibrary | None = None,
    progress: bool = True,
) -> CollectSummary:
    """Expert demonstrations on every route x seed (phase "expert"), stored as strided demo clips."""
    setup = setup or make_setup(EpisodeMode.EXPERT, maps=maps, overrides=overrides)
    if setup.mode is not EpisodeMode.EXPERT:
        raise CollectError(f"collect_demos needs an expert-mode setup, got {setup.mode.value}")
    return _collect(setup, routes, seeds, store, run, route_set, iteration, progress)


def collect_takeovers(
    routes: Sequence[Route],
    seeds: Sequence[int],
    checkpoint: str | os.PathLike[str] | None,
    store: Store,
    run: str,
    iteration: int | None,
    *,
    route_set: str = "default",
    setup: CollectSetup | None = None,
    overrides: Overrides | None = None,
    maps: MapLibrary | None = None,
    progress: bool = True,
) -> CollectSummary:
    """The policy from `checkpoint` drives every route x seed with the shadow expert taking over
    (phase "rollout"); each takeover is stored with its clip."""
    setup = setup or make_setup(EpisodeMode.TAKEOVER, checkpoint=checkpoint, maps=maps, overrides=overrides)
    if setup.mode is not EpisodeMode.TAKEOVER:
        raise CollectError(f"collect_takeovers needs a takeover-mode setup, got {setup.mode.value}")
    return _collect(setup, routes, seeds, store, run, route_set, iteration, progress)


def summary_rows(summary: CollectSummary) -> list[dict[str, Any]]:
    """One JSON-able dict per episode (for tables, logs and flows)."""
    return [dataclasses.asdict(e) for e in summary.episodes]


__all__ = [
    "OVERRIDE_SECTIONS",
    "CollectError",
    "CollectSetup",
    "CollectSummary",
    "EpisodeSummary",
    "check_overrides",
    "collect_demos",
    "collect_one",
    "collect_takeovers",
    "make_setup",
    "plan_missing",
    "route_set_name",
    "summary_rows",
]
