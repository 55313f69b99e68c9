"""Running Bench2Drive's leaderboard_evaluator.py, one route per run, with this project's agent.

`leaderboard_command` / `leaderboard_env` build the subprocess (pure, tested without CARLA):

    python $B2D/leaderboard/leaderboard/leaderboard_evaluator.py --routes=FILE --routes-subset=ID
        --repetitions=1 --track=SENSORS --checkpoint=OUT/ID/results.json
        --agent=<repo>/carla_bridge/leaderboard_agent.py --agent-config=OUT/ID/agent.yaml
        --host=H --port=P --traffic-manager-port=TM --traffic-manager-seed=SEED --timeout=T --debug=0

with CARLA_ROOT, SCENARIO_RUNNER_ROOT, LEADERBOARD_ROOT, PYTHONPATH (Bench2Drive's leaderboard and
scenario_runner, CARLA's PythonAPI, this repository), SAVE_PATH (per-route agent output) and
IS_BENCH2DRIVE (what Bench2Drive's own run_evaluation.sh exports).

`run_leaderboard_route` runs it against one server and judges the outcome from the results JSON the
evaluator writes: a record whose status says the simulation crashed (or the server process died)
raises ServerCrashedError, which `CarlaServerPool.run` answers with a restart and a retry; an agent
that crashed or could not be set up raises LeaderboardRunError with the evaluator's log tail. Only
then is the agent's episode (left in the outbox) stored, with the leaderboard's scores: a crashed
route stores nothing. `run_leaderboard_routes` fans routes out over a pool, one run per route.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carla_bridge.carla_client.config import AgentConfig, LeaderboardConfig, write_agent_config
from carla_bridge.carla_client.episode_outbox import read_bundles, store_episode
from carla_bridge.carla_client.errors import LeaderboardRunError, ServerCrashedError
from carla_bridge.carla_client.server import CarlaServerPool, Server, carla_root
from carla_bridge.errors import SimulatorError
from carla_bridge.scoring.errors import ResultsFileError
from carla_bridge.scoring.record import RouteRecord as LeaderboardRecord
from carla_bridge.scoring.results_io import read_results

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_ENTRY = REPO_ROOT / "carla_bridge" / "leaderboard_agent.py"
BENCH2DRIVE_ROOT_ENV = "BENCH2DRIVE_ROOT"
RESULTS_FILE = "results.json"
AGENT_CONFIG_FILE = "agent.yaml"
EVALUATOR_LOG = "evaluator.log"
OUTBOX_DIR = "outbox"
SAVE_DIR = "agent_output"
LOG_TAIL_LINES = 30
# Statuses / entry statuses of leaderboard 2.0's evaluator (leaderboard_evaluator.py, statistics_manager.py).
SIMULATION_CRASHED = "Simulation crashed"
AGENT_CRASHED = ("Agent crashed", "Agent couldn't be set up")
ENTRY_CRASHED = "Crashed"


@dataclass(frozen=True)
class LeaderboardPaths:
    bench2drive_root: Path
    carla_root: Path

    @staticmethod
    def resolve(
        config: LeaderboardConfig, carla_root_dir: str | os.PathLike[str] | None = None
    ) -> LeaderboardPaths:
        b2d = config.bench2drive_root or os.environ.get(BENCH2DRIVE_ROOT_ENV, "")
        if not b2d:
            raise LeaderboardRunError(
                "no Bench2Drive checkout given: set $BENCH2DRIVE_ROOT or leaderboard.bench2drive_root "
                "(conf/carla.yaml) to the folder holding leaderboard/ and scenario_runner/"
            )
        root = Path(b2d).expanduser()
        evaluator = root / config.evaluator
        if not evaluator.is_file():
            raise LeaderboardRunError(
                f"{evaluator} does not exist: is {root} a Bench2Drive checkout? Fix $BENCH2DRIVE_ROOT or "
                "leaderboard.evaluator"
            )
        carla = Path(carla_root_dir) if carla_root_dir else None
        if carla is None:
            from carla_bridge.carla_client.config import ServerConfig

            carla = carla_root(ServerConfig())
        return LeaderboardPaths(root, carla)


@dataclass(frozen=True)
class LeaderboardRouteResult:
    route_id: str
    record: LeaderboardRecord  # the evaluator's record of the route
    episode_id: int | None  # the stored episode (None without a store or without a bundle)
    results_path: Path
    log_path: Path
    run_dir: Path


def leaderboard_command(
    config: LeaderboardConfig,
    paths: LeaderboardPaths,
    *,
    route_file: str | os.PathLike[str],
    route_id: str,
    host: str,
    port: int,
    tm_port: int,
    agent_config_path: str | os.PathLike[str],
    checkpoint_path: str | os.PathLike[str],
    seed: int = 0,
    agent_path: str | os.PathLike[str] = AGENT_ENTRY,
) -> list[str]:
    """The evaluator's command line for one route (see the module docstring)."""
    python = config.python or sys.executable
    return [
        python,
        str(paths.bench2drive_root / config.evaluator),
        f"--routes={Path(route_file).resolve()}",
        f"--routes-subset={route_id}",
        f"--repetitions={config.repetitions}",
        f"--track={config.track}",
        f"--checkpoint={Path(checkpoint_path).resolve()}",
        f"--agent={Path(agent_path).resolve()}",
        f"--agent-config={Path(agent_config_path).resolve()}",
        f"--host={host}",
        f"--port={port}",
        f"--traffic-manager-port={tm_port}",
        f"--traffic-manager-seed={seed}",
        f"--timeout={config.client_timeout_s:g}",
        f"--debug={config.debug}",
        *config.extra_args,
    ]


def leaderboard_env(
    config: LeaderboardConfig,
    paths: LeaderboardPaths,
    save_path: str | os.PathLike[str],
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The evaluator's environment (see the module docstring); `base` defaults to os.environ."""
    env = dict(os.environ if base is None else base)
    b2d, carla = paths.bench2drive_root, paths.carla_root
    entries = [str(b2d / p) for p in config.pythonpath]
    entries += [str(carla / p) for p in config.carla_pythonapi]
    entries.append(str(REPO_ROOT))
    if env.get("PYTHONPATH"):
        entries.append(env["PYTHONPATH"])
    env.update(
        {
            "CARLA_ROOT": str(carla),
            "SCENARIO_RUNNER_ROOT": str(b2d / "scenario_runner"),
            "LEADERBOARD_ROOT": str(b2d / "leaderboard"),
            "PYTHONPATH": os.pathsep.join(entries),
            "SAVE_PATH": str(Path(save_path).resolve()),
            "IS_BENCH2DRIVE": "True",
        }
    )
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def judge_results(results_path: Path, route_id: str, returncode: int, log_path: Path) -> LeaderboardRecord:
    """The route's record from the evaluator's results JSON, or the error its outcome calls for."""
    try:
        results = read_results(results_path)
    except ResultsFileError as exc:
        if returncode < 0:
            raise ServerCrashedError(
                f"the evaluator for route {route_id} was killed (signal {-returncode}) before writing "
                f"results: {exc}"
            ) from None
        raise LeaderboardRunError(
            f"the evaluator for route {route_id} exited with code {returncode} and no usable results "
            f"({exc}). Last lines of {log_path}:\n{_tail(log_path)}"
        ) from None
    record = next((r for r in results.records if r.route_id.split("_rep")[0].endswith(f"_{route_id}")), None)
    if record is None and results.records:
        record = results.records[-1]
    status = record.status if record is not None else ""
    if SIMULATION_CRASHED in status or (record is None and results.entry_status == ENTRY_CRASHED):
        raise ServerCrashedError(
            f"the simulation crashed during route {route_id} (status {status or results.entry_status!r}); "
            f"see {log_path}"
        )
    if any(text in status for text in AGENT_CRASHED):
        raise LeaderboardRunError(
            f"the agent failed on route {route_id} (status {status!r}). Last lines of {log_path}:\n{_tail(log_path)}"
        )
    if record is None:
        raise LeaderboardRunError(
            f"the evaluator wrote no record for route {route_id} (entry status {results.entry_status!r}). "
            f"Last lines of {log_path}:\n{_tail(log_path)}"
        )
    return record


Runner = Callable[..., Any]  # subprocess.run's signature


def run_leaderboard_route(
    route_file: str | os.PathLike[str],
    route_id: str,
    server: Server,
    agent_config: AgentConfig,
    *,
    config: LeaderboardConfig,
    paths: LeaderboardPaths,
    out_dir: str | os.PathLike[str],
    store: Any = None,
    seed: int = 0,
    runner: Runner = subprocess.run,
) -> LeaderboardRouteResult:
    """One evaluator run of one route on `server`; the episode stored in `store` (storage.Store) if given."""
    run_dir = Path(out_dir) / f"route_{route_id}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: no stale results, outbox or agent output from a crashed try
    run_dir.mkdir(parents=True)
    results_path = run_dir / RESULTS_FILE
    log_path = run_dir / EVALUATOR_LOG
    outbox = run_dir / OUTBOX_DIR
    agent = dataclasses.replace(
        agent_config,
        route_id=route_id,
        seed=seed,
        episode_outbox=str(outbox.resolve()),
        metric_info_dir=str((run_dir / SAVE_DIR).resolve()),
        record=store is not None and agent_config.record,
    )
    agent_path = write_agent_config(agent, run_dir / AGENT_CONFIG_FILE)
    command = leaderboard_command(
        config,
        paths,
        route_file=route_file,
        route_id=route_id,
        host=server.host,
        port=server.port,
        tm_port=server.tm_port,
        agent_config_path=agent_path,
        checkpoint_path=results_path,
        seed=seed,
    )
    env = leaderboard_env(config, paths, run_dir / SAVE_DIR)
    log.info("route %s on %s: %s", route_id, server.describe(), " ".join(command))
    with log_path.open("wb") as log_file:
        try:
            completed = runner(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(paths.bench2drive_root),
                timeout=config.run_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ServerCrashedError(
                f"route {route_id} did not finish within {config.run_timeout_s:g} s "
                f"(leaderboard.run_timeout_s); the server probably hangs. See {log_path}"
            ) from None
        except OSError as exc:
            raise LeaderboardRunError(f"cannot run the evaluator ({command[0]}): {exc}") from None
    if not server.alive():
        raise ServerCrashedError(f"{server.describe()} died during route {route_id}; see {log_path}")
    record = judge_results(results_path, route_id, int(completed.returncode), log_path)
    episode_id = None
    if store is not None:
        bundles = read_bundles(outbox)
        if not bundles:
            log.warning("route %s: the agent left no episode in %s (see %s)", route_id, outbox, log_path)
        for _, bundle in bundles:
            episode_id = store_episode(store, bundle, record)
    return LeaderboardRouteResult(route_id, record, episode_id, results_path, log_path, run_dir)


def run_leaderboard_routes(
    route_file: str | os.PathLike[str],
    route_ids: Sequence[str],
    pool: CarlaServerPool,
    agent_config: AgentConfig,
    *,
    config: LeaderboardConfig,
    paths: LeaderboardPaths,
    out_dir: str | os.PathLike[str],
    store: Any = None,
    seed: int = 0,
    runner: Runner = subprocess.run,
) -> list[LeaderboardRouteResult | SimulatorError]:
    """One leaderboard run per route over the pool's servers (crashes restarted and retried).

    Results in route order; a route that failed for good holds its SimulatorError.
    """

    def job(server: Server, route_id: str) -> LeaderboardRouteResult:
        return run_leaderboard_route(
            route_file, route_id, server, agent_config,
            config=config, paths=paths, out_dir=out_dir, store=store, seed=seed, runner=runner,
        )  # fmt: skip

    return pool.map(job, list(route_ids), lambda route_id: f"route {route_id}")
