"""Closed-loop evaluation of the expert: routes x seeds through a simulator, scored like the leaderboard.

`run_route` drives one route with one agent and returns its leaderboard record plus what the expert
did (how long each reason limited its speed, planning time per tick). `evaluate` runs many and
`format_table` prints the per-route table (driving score, route completion, penalty, infractions,
comfort). Used by benchmarks/expert_routes.py and by the slow closed-loop test.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from carla_bridge.route import Route
from carla_bridge.scoring import RouteCriteria, RouteRecord
from carla_bridge.simulator import Simulator
from carla_bridge.snapshot import WorldSnapshot
from experts.config import ExpertConfig
from experts.expert import ExpertPlan, PDMLiteExpert


@dataclass
class RouteRun:
    route_id: str
    seed: int
    scenario: str
    record: RouteRecord
    ticks: int
    wall_s: float
    plan_ms_median: float
    plan_ms_p95: float
    reasons: Counter = field(default_factory=Counter)  # ticks per speed-limiting reason
    error: str = ""  # the simulator failed mid-route (the record covers the ticks before)

    @property
    def driving_score(self) -> float:
        return self.record.scores.score_composed

    @property
    def infraction_summary(self) -> str:
        parts = [f"{key}:{len(msgs)}" for key, msgs in self.record.infractions.items() if msgs]
        return " ".join(parts) if parts else "-"


def run_route(
    sim: Simulator,
    route: Route,
    seed: int,
    expert: PDMLiteExpert,
    on_tick: Callable[[WorldSnapshot, ExpertPlan], None] | None = None,
) -> RouteRun:
    """Drive `route` to its end (the leaderboard criteria decide when) with the expert; score it."""
    snap = sim.reset(route, seed)
    criteria = RouteCriteria(route, sim.map)
    criteria.update(snap)
    expert.reset(route, sim.map)
    plan_ms: list[float] = []
    reasons: Counter = Counter()
    start = time.perf_counter()
    error = ""
    while not criteria.done:
        t0 = time.perf_counter()
        plan = expert.plan(snap)
        plan_ms.append(1000.0 * (time.perf_counter() - t0))
        reasons[str(plan.reason)] += 1
        if on_tick is not None:
            on_tick(snap, plan)
        try:
            snap = sim.step(plan.control)
        except Exception as exc:  # a simulator bug must not hide the other routes' results
            error = f"simulator failed at t={snap.time_s:.2f}s: {type(exc).__name__}: {exc}"
            break
        criteria.update(snap)
    wall = time.perf_counter() - start
    plan_ms.sort()
    return RouteRun(
        route_id=route.id,
        seed=seed,
        scenario=",".join(s.type for s in route.scenarios) or "-",
        record=criteria.record(),
        ticks=criteria.ticks,
        wall_s=wall,
        plan_ms_median=statistics.median(plan_ms) if plan_ms else 0.0,
        plan_ms_p95=plan_ms[int(0.95 * (len(plan_ms) - 1))] if plan_ms else 0.0,
        reasons=reasons,
        error=error,
    )


def evaluate(
    make_sim: Callable[[], Simulator],
    routes: Sequence[Route],
    seeds: Sequence[int],
    config: ExpertConfig | None = None,
    progress: Callable[[RouteRun], None] | None = None,
) -> list[RouteRun]:
    """Every route with every seed; one simulator and one expert reused throughout."""
    sim = make_sim()
    expert = PDMLiteExpert(config)
    runs: list[RouteRun] = []
    try:
        for route in routes:
            for seed in seeds:
                run = run_route(sim, route, seed, expert)
                runs.append(run)
                if progress is not None:
                    progress(run)
    finally:
        sim.close()
    return runs


def format_table(runs: Sequence[RouteRun]) -> str:
    """Per-route table (mean over seeds, and the worst seed), then the totals."""
    by_route: dict[str, list[RouteRun]] = {}
    for run in runs:
        by_route.setdefault(run.route_id, []).append(run)
    header = f"{'route':>8} {'scenario':<36} {'DS mean':>7} {'DS min':>6} {'RC':>6} {'penalty':>7} {'comfort':>7} {'ticks':>6} {'ms/step':>7}  infractions (all seeds)"
    lines = [header, "-" * len(header)]
    for rid, rr in by_route.items():
        ds = [r.driving_score for r in rr]
        rc = [r.record.scores.score_route for r in rr]
        pen = [r.record.scores.score_penalty for r in rr]
        comfort = [r.record.comfort for r in rr if r.record.comfort is not None]
        infr: Counter = Counter()
        for r in rr:
            for key, msgs in r.record.infractions.items():
                infr[key] += len(msgs)
        infr_text = " ".join(f"{k}:{v}" for k, v in infr.items() if v) or "-"
        errors = sum(1 for r in rr if r.error)
        if errors:
            infr_text += f" SIM-ERROR x{errors}"
        lines.append(
            f"{rid:>8} {rr[0].scenario[:36]:<36} {statistics.mean(ds):7.1f} {min(ds):6.1f} {statistics.mean(rc):6.1f} "
            f"{statistics.mean(pen):7.3f} {statistics.mean(comfort) if comfort else float('nan'):7.2f} "
            f"{statistics.mean(r.ticks for r in rr):6.0f} {statistics.median(r.plan_ms_median for r in rr):7.2f}  {infr_text}"
        )
    all_ds = [r.driving_score for r in runs]
    collisions = sum(
        len(msgs) for r in runs for key, msgs in r.record.infractions.items() if key.startswith("collisions")
    )
    comforts = [r.record.comfort for r in runs if r.record.comfort is not None]
    lines.append("-" * len(header))
    lines.append(
        f"runs {len(runs)}  mean DS {statistics.mean(all_ds) if all_ds else 0.0:.2f}  "
        f"success {sum(r.record.success for r in runs)}/{len(runs)}  collisions {collisions}  "
        f"mean comfort {statistics.mean(comforts) if comforts else float('nan'):.3f}  "
        f"median plan {statistics.median(r.plan_ms_median for r in runs) if runs else 0.0:.2f} ms"
    )
    return "\n".join(lines)
