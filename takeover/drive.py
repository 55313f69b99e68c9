"""Drive routes in closed loop with one agent and score them like the leaderboard (`takeover drive`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from carla_bridge.agent import Agent
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route import Route
from carla_bridge.route_planner import prepare_routes
from carla_bridge.scoring import RouteRecord
from carla_bridge.snapshot import WorldSnapshot
from carla_bridge.video import RouteVideo


@dataclass(frozen=True)
class DriveOutcome:
    route: Route
    seed: int
    record: RouteRecord
    wall_s: float
    ticks: int


def record_name(route: Route, repetition: int) -> str:
    """Leaderboard record name; seeds map to leaderboard repetitions."""
    return f"RouteScenario_{route.id}_rep{repetition}"


def drive_route(
    sim: EmbeddedSimulator,
    route: Route,
    seed: int,
    agent: Agent,
    repetition: int = 0,
    video_path: Path | None = None,
    on_tick: Callable[[WorldSnapshot], None] | None = None,
) -> DriveOutcome:
    """One route until the scoring ends it (completion, deviation, blockage, timeout); optionally filmed."""
    start = time.perf_counter()
    snapshot = sim.reset(route, seed)
    agent.reset(route, sim.map)
    video = RouteVideo(video_path, sim.map, route) if video_path is not None else None
    ticks = 0
    try:
        while not sim.done:
            control = agent.run_step(snapshot)
            if video is not None:
                video.add(snapshot, agent)
            snapshot = sim.step(control)
            ticks += 1
            if on_tick is not None:
                on_tick(snapshot)
    finally:
        if video is not None:
            video.close()
    wall = time.perf_counter() - start
    record = sim.criteria.record(index=repetition, duration_system_s=wall)
    record = replace(record, route_id=record_name(route, repetition))
    return DriveOutcome(route, seed, record, wall, ticks)


def drive_routes(
    routes: Sequence[Route],
    make_agent: Callable[[], Agent],
    maps: MapLibrary,
    sim_config: SimConfig,
    seeds: Sequence[int] = (0,),
    video_dir: Path | None = None,
    show_progress: bool = True,
) -> list[DriveOutcome]:
    """Every route x seed, in order; one simulator and one agent reused across routes."""
    routes = prepare_routes(list(routes), maps)
    sim = EmbeddedSimulator(sim_config, maps)
    agent = make_agent()
    outcomes: list[DriveOutcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        overall = progress.add_task("routes", total=len(routes) * len(seeds))
        for route in routes:
            for repetition, seed in enumerate(seeds):
                task = progress.add_task(f"route {route.id} seed {seed}", total=100)
                video_path = None
                if video_dir is not None:
                    video_path = video_dir / f"{record_name(route, repetition)}_{agent.name}.mp4"
                outcome = drive_route(
                    sim,
                    route,
                    seed,
                    agent,
                    repetition,
                    video_path,
                    on_tick=lambda s, t=task: progress.update(t, completed=s.route.completion),
                )
                outcomes.append(outcome)
                progress.remove_task(task)
                progress.advance(overall)
    sim.close()
    return outcomes


def mean_driving_score(outcomes: Sequence[DriveOutcome]) -> float:
    return float(np.mean([o.record.scores.score_composed for o in outcomes])) if outcomes else 0.0
