"""Closed-loop rollout speed on CPU: simulated seconds per wall-clock second, and where a tick's time goes.

    python benchmarks/rollout_speed.py [--routes builtin:train] [--route-ids 1008 1012] [--seconds 30]
                                       [--threads 1] [--no-traffic] [--json]


Runs each route in three set-ups with takeover.episode.run_episode, as collection does:
  takeover  an untrained HybridPolicy drives, the PDM-Lite expert plans in shadow, the monitor decides,
            takeover clips (with BEV features) are built;
  expert    the expert alone (demonstrations: strided clips with features);
  policy    the policy alone (evaluation, no clips).
Prints one row per set-up: ticks, simulated and wall seconds, x realtime (simulated s / wall s), and
milliseconds per tick spent in the simulator step, the expert, the policy and the monitor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from carla_bridge.config import load_config
from carla_bridge.embedded import EmbeddedSimulator, SimConfig
from carla_bridge.maps import MapLibrary
from carla_bridge.route_planner import prepare_routes
from carla_bridge.route_sets import load_route_set
from experts.expert import PDMLiteExpert
from takeover.episode import EpisodeConfig, load_episode_config, run_episode
from takeover.monitor import TakeoverMonitor, load_monitor_config
from takeover.policy import HybridPolicy, load_policy_config

MODES = ("takeover", "expert", "policy")
MS_PER_S = 1000.0
WIDE_CHARS = 200  # table width when printing to a pipe or file
SEED = 0


class Timed:
    """Proxy that adds the wall time of the named methods of `target` to `totals[label]`."""

    def __init__(self, target: Any, label: str, methods: tuple[str, ...], totals: dict[str, float]) -> None:
        self._target = target
        self._label = label
        self._methods = methods
        self._totals = totals

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._methods:
            return attr
        return self._wrap(attr)

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._totals[self._label] += time.perf_counter() - t0

        return timed


def run_one(mode: str, route, maps: MapLibrary, sim_config: SimConfig, seconds: float) -> dict[str, Any]:
    totals: dict[str, float] = defaultdict(float)
    sim = EmbeddedSimulator(sim_config, maps)
    policy_config = load_policy_config(["device=cpu"])
    torch.manual_seed(SEED)
    policy = HybridPolicy(policy_config) if mode != "expert" else None
    expert = PDMLiteExpert() if mode != "policy" else None
    monitor = TakeoverMonitor(load_monitor_config()) if mode == "takeover" else None
    config: EpisodeConfig = load_episode_config([f"mode={mode}", f"max_time_s={seconds}"])
    result = run_episode(
        Timed(sim, "sim_step", ("step",), totals),
        route,
        SEED,
        Timed(policy, "policy", ("act",), totals) if policy is not None else None,
        Timed(expert, "expert", ("plan",), totals) if expert is not None else None,
        Timed(monitor, "monitor", ("update",), totals) if monitor is not None else None,
        config,
        feature_config=policy_config if mode == "expert" else None,
    )
    ticks = max(result.n_ticks, 1)
    return {
        "mode": mode,
        "route": route.id,
        "ticks": result.n_ticks,
        "sim_s": result.sim_time_s,
        "wall_s": result.wall_time_s,
        "realtime_factor": result.realtime_factor,
        "takeovers": len(result.takeovers),
        "clips": len(result.clips),
        **{
            f"{k}_ms_per_tick": MS_PER_S * totals.get(k, 0.0) / ticks
            for k in ("sim_step", "expert", "policy", "monitor")
        },
        "other_ms_per_tick": MS_PER_S * (result.wall_time_s - sum(totals.values())) / ticks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default="builtin:train")
    parser.add_argument("--route-ids", nargs="+", default=["1008", "1012"])
    parser.add_argument("--seconds", type=float, default=30.0, help="simulated seconds per episode")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-traffic", action="store_true", help="no background vehicles and walkers")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    maps = MapLibrary()
    routes = prepare_routes(load_route_set(args.routes, args.route_ids), maps)
    overrides = ["traffic.enabled=false", "walkers.enabled=false"] if args.no_traffic else []
    sim_config = load_config(SimConfig, "sim", overrides)
    # Warm-up: the first reset builds lane graphs and loads compiled kernels.
    run_one("expert", routes[0], maps, sim_config, 1.0)
    rows = [run_one(mode, route, maps, sim_config, args.seconds) for mode in args.modes for route in routes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"closed-loop rollout speed (CPU, {args.threads} torch thread(s), "
                        f"traffic {'off' if args.no_traffic else 'on'})")  # fmt: skip
    columns = ("mode", "route", "ticks", "sim s", "wall s", "x realtime", "step ms", "expert ms", "policy ms",
               "monitor ms", "other ms", "takeovers", "clips")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["mode"], r["route"], str(r["ticks"]), f"{r['sim_s']:.1f}", f"{r['wall_s']:.2f}",
            f"{r['realtime_factor']:.1f}", f"{r['sim_step_ms_per_tick']:.2f}", f"{r['expert_ms_per_tick']:.2f}",
            f"{r['policy_ms_per_tick']:.2f}", f"{r['monitor_ms_per_tick']:.2f}", f"{r['other_ms_per_tick']:.2f}",
            str(r["takeovers"]), str(r["clips"]),
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else WIDE_CHARS).print(table)
    for mode in args.modes:
        factors = [r["realtime_factor"] for r in rows if r["mode"] == mode]
        print(f"{mode}: median x realtime {statistics.median(factors):.1f}")


if __name__ == "__main__":
    main()
