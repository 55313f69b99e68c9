"""The Prefect flows of the loop: thin orchestration over the takeover library (no logic of their own).

    collect-demos      the expert drives routes x seeds (takeover.iteration.collect_episodes, mode expert)
    collect-takeovers  a checkpoint drives with the shadow expert taking over (mode takeover)
    dagger-round       takeover.dagger.dagger_round
    dpo-round          takeover.dpo.dpo_round
    evaluate           takeover.evaluate.evaluate_checkpoint on held-out routes
    nightly-iteration  takeover.iteration.run_iteration: collect takeovers [-> collection counterfactuals]
                       -> DAgger -> DPO -> evaluate [-> counterfactual] -> promote (the bootstrap first
                       when the run has no v0);
                       resumes an unfinished one
    confirm            takeover.confirm.confirm_run: v0 and a run's incumbent on seeds that decided nothing
    counterfactual     takeover.iteration.analyse_run: each takeover replayed without it, was it necessary?

Episodes fan out as `episode` tasks with retries (flows.tasks); a route x seed that still fails is
recorded as failed in the database and listed in the flow's markdown artifact, and the others go on.
backend "carla" runs one Bench2Drive leaderboard run per route on a CARLA server pool instead.
Deployments: prefect.yaml (nightly-iteration on the cron "0 2 * * *"), or `python -m flows.serve`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from carla_bridge.route_sets import load_route_set
from flows.tasks import DEFAULT_RETRY_DELAY_S, open_store, prefect_hooks, prefect_mapper
from takeover.commands.train import load_train_config
from takeover.confirm import confirm_run
from takeover.counterfactual import (
    counterfactual_markdown,
    counterfactuals_json,
    load_counterfactual_config,
    necessary_ratio,
)
from takeover.dagger import dagger_round
from takeover.dpo import dpo_round
from takeover.episode import MODE_PHASE, EpisodeMode
from takeover.evaluate import CarlaRun, evaluate_checkpoint, single_route_file
from takeover.iteration import (
    analyse_run,
    collect_episodes,
    configure,
    load_iteration_config,
    load_run_config,
    next_iteration,
    read_loop,
    run_iteration,
)
from takeover.policy import file_sha256
from takeover.report import (
    collect_markdown,
    confirmation_json,
    confirmation_markdown,
    eval_markdown,
    eval_table_rows,
    incumbent_evaluation,
    iteration_json,
    iteration_markdown,
    loop_markdown,
    training_markdown,
)
from takeover.training import TrainResult

# Upper bound of episode threads; each flow's `concurrency` parameter caps what it uses.
MAX_WORKERS = 16
ARTIFACT_KEY_CHARS = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: object) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return ARTIFACT_KEY_CHARS.sub("-", "-".join(str(p) for p in parts).lower()).strip("-")


def _carla(backend: str, routes: str, overrides: list[str] | None, managed: bool) -> CarlaRun | None:
    return (
        CarlaRun(str(single_route_file(routes)), tuple(overrides or ()), managed)
        if backend == "carla"
        else None
    )


def _collect(mode: EpisodeMode, name: str, *, routes: str, route_ids: list[str] | None, seeds: list[int],
             run: str, iteration: int | None, checkpoint: str | None, maps: list[str] | None, backend: str,
             concurrency: int, retries: int, retry_delay_s: float, db_url: str | None, clip_root: str | None,
             overrides: dict[str, list[str]] | None, carla_overrides: list[str] | None,
             carla_managed: bool) -> dict[str, Any]:  # fmt: skip
    with open_store(db_url, clip_root) as store:
        outcome = collect_episodes(
            mode, routes, seeds, store, run, iteration, route_ids=route_ids or (), checkpoint=checkpoint,
            maps_dirs=maps or (), overrides=overrides, backend=backend,
            carla=_carla(backend, routes, carla_overrides, carla_managed),
            map_jobs=prefect_mapper(concurrency, retries, retry_delay_s), progress=False,
        )  # fmt: skip
        sha = file_sha256(checkpoint) if checkpoint is not None else None
        markdown = collect_markdown(store, run, iteration, outcome, [MODE_PHASE[mode]], sha)
    create_markdown_artifact(markdown, key=artifact_key(name, run, iteration), description=f"{name} summary")
    return {
        "metrics": outcome.metrics(),
        "takeovers_by_reason": outcome.takeovers_by_reason,
        "failures": [dataclasses.asdict(f) for f in outcome.failures],
        "checkpoint_sha256": sha,
    }


@flow(name="collect-demos", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def collect_demos_flow(
    routes: str = "builtin:train",
    route_ids: list[str] | None = None,
    seeds: list[int] | None = None,
    run: str = "default",
    iteration: int | None = 0,
    maps: list[str] | None = None,
    backend: str = "embedded",
    concurrency: int = 1,
    retries: int = 1,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    db_url: str | None = None,
    clip_root: str | None = None,
    overrides: dict[str, list[str]] | None = None,
    carla_overrides: list[str] | None = None,
    carla_managed: bool = True,
) -> dict[str, Any]:
    """Expert demonstrations on routes x seeds, stored (phase "expert")."""
    return _collect(
        EpisodeMode.EXPERT, "collect-demos", routes=routes, route_ids=route_ids, seeds=seeds or [0], run=run,
        iteration=iteration, checkpoint=None, maps=maps, backend=backend, concurrency=concurrency,
        retries=retries, retry_delay_s=retry_delay_s, db_url=db_url, clip_root=clip_root, overrides=overrides,
        carla_overrides=carla_overrides, carla_managed=carla_managed,
    )  # fmt: skip


@flow(name="collect-takeovers", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def collect_takeovers_flow(
    checkpoint: str,
    routes: str = "builtin:train",
    route_ids: list[str] | None = None,
    seeds: list[int] | None = None,
    run: str = "default",
    iteration: int | None = None,
    maps: list[str] | None = None,
    backend: str = "embedded",
    concurrency: int = 1,
    retries: int = 1,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    db_url: str | None = None,
    clip_root: str | None = None,
    overrides: dict[str, list[str]] | None = None,
    carla_overrides: list[str] | None = None,
    carla_managed: bool = True,
) -> dict[str, Any]:
    """`checkpoint` drives routes x seeds with the shadow expert taking over; takeovers and clips stored."""
    return _collect(
        EpisodeMode.TAKEOVER, "collect-takeovers", routes=routes, route_ids=route_ids, seeds=seeds or [0],
        run=run, iteration=iteration, checkpoint=checkpoint, maps=maps, backend=backend,
        concurrency=concurrency, retries=retries, retry_delay_s=retry_delay_s, db_url=db_url,
        clip_root=clip_root, overrides=overrides, carla_overrides=carla_overrides, carla_managed=carla_managed,
    )  # fmt: skip


def _round_summary(result: TrainResult, name: str) -> dict[str, Any]:
    create_markdown_artifact(
        training_markdown(result), key=artifact_key(name, result.run, result.iteration), description=name
    )
    return {"checkpoint": str(result.checkpoint_path), "sha256": result.sha256, "metrics": result.metrics}


@flow(name="dagger-round")
def dagger_round_flow(
    run: str,
    iteration: int,
    checkpoint: str,
    train_overrides: list[str] | None = None,
    db_url: str | None = None,
    clip_root: str | None = None,
) -> dict[str, Any]:
    """Fine-tune `checkpoint` on the aggregate of demonstrations and takeovers up to `iteration`."""
    config = load_train_config(list(train_overrides or []))
    with open_store(db_url, clip_root) as store:
        result = dagger_round(store, run, iteration, checkpoint, config.dagger)
    return _round_summary(result, "dagger-round")


@flow(name="dpo-round")
def dpo_round_flow(
    run: str,
    iteration: int,
    checkpoint: str,
    train_overrides: list[str] | None = None,
    db_url: str | None = None,
    clip_root: str | None = None,
) -> dict[str, Any]:
    """DPO from `checkpoint` on the expert-vs-policy pairs of takeovers up to `iteration`."""
    config = load_train_config(list(train_overrides or []))
    with open_store(db_url, clip_root) as store:
        result = dpo_round(store, run, iteration, checkpoint, config.dpo)
    return _round_summary(result, "dpo-round")


@flow(name="evaluate", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def evaluate_flow(
    checkpoint: str,
    routes: str = "builtin:eval",
    route_ids: list[str] | None = None,
    seeds: list[int] | None = None,
    run: str = "default",
    iteration: int | None = None,
    with_takeovers: bool = True,
    maps: list[str] | None = None,
    backend: str = "embedded",
    concurrency: int = 1,
    retries: int = 1,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    db_url: str | None = None,
    clip_root: str | None = None,
    overrides: dict[str, list[str]] | None = None,
    carla_overrides: list[str] | None = None,
    carla_managed: bool = True,
) -> dict[str, Any]:
    """Closed-loop evaluation without and with takeovers (conf/loop.yaml iterate.eval for the rest)."""
    protocol = load_iteration_config().eval
    config = dataclasses.replace(
        protocol, routes=routes, route_ids=list(route_ids or []), seeds=list(seeds or protocol.seeds),
        with_takeovers=with_takeovers, overrides=overrides if overrides is not None else protocol.overrides,
    )  # fmt: skip
    with open_store(db_url, clip_root) as store:
        result = evaluate_checkpoint(
            checkpoint, load_route_set(routes, config.route_ids or None), config.seeds, store, run, iteration,
            config=config, route_set=routes, maps_dirs=maps or (), backend=backend,
            carla=_carla(backend, routes, carla_overrides, carla_managed),
            map_jobs=prefect_mapper(concurrency, retries, retry_delay_s), progress=False,
        )  # fmt: skip
        markdown = eval_markdown(store, result, config.takeover_phase)
    key = artifact_key("evaluate", run, iteration)
    create_markdown_artifact(markdown, key=key, description="evaluation summary")
    create_table_artifact(eval_table_rows(result), key=f"{key}-routes", description="per-route scores")
    return {"metrics": result.metrics(), "failures": [dataclasses.asdict(f) for f in result.failures]}


@flow(name="nightly-iteration", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def nightly_iteration_flow(
    run: str = "nightly",
    iteration: int | None = None,
    train_routes: str | None = None,
    train_route_ids: list[str] | None = None,
    eval_routes: str | None = None,
    eval_route_ids: list[str] | None = None,
    seeds: list[int] | None = None,
    use_dpo: bool | None = None,
    select_candidate: bool | None = None,
    base_run: str | None = None,
    maps: list[str] | None = None,
    backend: str | None = None,
    concurrency: int = 1,
    retries: int = 1,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    db_url: str | None = None,
    clip_root: str | None = None,
    config_overrides: list[str] | None = None,
    train_overrides: list[str] | None = None,
    carla_overrides: list[str] | None = None,
    carla_managed: bool | None = None,
    recipe: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """One iteration of `run`: the first unfinished one (or `iteration`); a run without v0 bootstraps
    first. Settings: conf/loop.yaml's iterate section <- recipe (conf/recipes/<recipe>.yaml or a path)
    <- config_overrides (dotlist) <- the parameters. With `resume`, a run that has started goes on with
    the settings it started with in place of the first two layers (a schedule set up once with a recipe
    keeps it, whatever conf/loop.yaml says later)."""
    hooks = prefect_hooks(concurrency, retries, retry_delay_s)
    with open_store(db_url, clip_root) as store:
        base = load_run_config(
            store, run, list(config_overrides or []), recipe, resume=resume, new_run_ok=True
        )
        config = configure(
            base, train_routes=train_routes, train_route_ids=train_route_ids, eval_routes=eval_routes,
            eval_route_ids=eval_route_ids, seeds=seeds, use_dpo=use_dpo, select_candidate=select_candidate,
            base_run=base_run, backend=backend, maps=maps, train_overrides=train_overrides,
            carla_overrides=carla_overrides, carla_managed=carla_managed,
        )  # fmt: skip
        first = next_iteration(store, run) if iteration is None else iteration
        numbers = [0, 1] if first == 0 else [first]
        results = [run_iteration(run, k, config, store, hooks=hooks, progress=False) for k in numbers]
        loop = read_loop(store, run)
        for result in results:
            create_markdown_artifact(
                iteration_markdown(
                    store, result, config.eval.takeover_phase, incumbent_evaluation(loop, result)
                ),
                key=artifact_key("nightly-iteration", run, result.iteration),
                description=f"iteration {result.iteration}: disengagements of collection and evaluation",
            )
    create_markdown_artifact(
        loop_markdown(loop), key=artifact_key("nightly-iteration", run, "history"), description="run history"
    )
    return {
        "run": run,
        "iterations": [iteration_json(r) for r in results],
    }


@flow(name="confirm", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def confirm_flow(
    run: str,
    seeds: list[int],
    iteration: int | None = None,
    concurrency: int = 1,
    retries: int = 1,
    retry_delay_s: float = DEFAULT_RETRY_DELAY_S,
    db_url: str | None = None,
    clip_root: str | None = None,
) -> dict[str, Any]:
    """v0 and `run`'s incumbent after `iteration` (default: the last) driven again on `seeds`, which
    decided none of its promotions, and compared pair by pair (takeover.confirm.confirm_run)."""
    with open_store(db_url, clip_root) as store:
        result = confirm_run(
            store, run, seeds, iteration, map_jobs=prefect_mapper(concurrency, retries, retry_delay_s),
            progress=False,
        )  # fmt: skip
    create_markdown_artifact(
        confirmation_markdown(result),
        key=artifact_key("confirm", run, result.iteration),
        description="v0 and the incumbent on fresh seeds",
    )
    return confirmation_json(result)


@flow(name="counterfactual")
def counterfactual_flow(
    run: str,
    iteration: int,
    baseline_run: str | None = None,
    baseline_iteration: int = 0,
    routes: str = "builtin:eval",
    settings: list[str] | None = None,
    db_url: str | None = None,
    clip_root: str | None = None,
) -> dict[str, Any]:
    """Every takeover of `run`'s evaluation in `iteration` replayed without it: was it necessary
    (takeover.counterfactual)? With `baseline_run`, its evaluation in `baseline_iteration` too, and the
    necessary-rate ratio of the two pair by pair. `settings` are conf/counterfactual.yaml overrides."""
    config = load_counterfactual_config(settings or [])
    sides = [(baseline_run, baseline_iteration)] if baseline_run else []
    with open_store(db_url, clip_root) as store:
        found = [
            analyse_run(store, name, number, routes=routes, config=config, progress=False)
            for name, number in [*sides, (run, iteration)]
        ]
    ratio = necessary_ratio(found[0], found[1]) if len(found) == 2 else None
    create_markdown_artifact(
        counterfactual_markdown(found, ratio),
        key=artifact_key("counterfactual", run, iteration),
        description="takeovers replayed without the takeover",
    )
    return counterfactuals_json(found, ratio)


ALL_FLOWS = (
    collect_demos_flow,
    collect_takeovers_flow,
    dagger_round_flow,
    dpo_round_flow,
    evaluate_flow,
    nightly_iteration_flow,
    confirm_flow,
    counterfactual_flow,
)
