"""Prefect tasks and the hooks that run the library's steps and episodes as tasks.

`prefect_hooks(concurrency, retries)` returns takeover.iteration.LoopHooks whose `run_step` runs each
step of an iteration as a task named after it, and whose `map_jobs` fans the route x seed episodes of
a collection or evaluation out as `episode` tasks with retries, at most `concurrency` at a time (each
worker thread builds its own simulator). A job that still fails after its retries comes back as its
exception: the library records it as a failed route and carries on with the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from carla_bridge.config import load_config
from storage.config import StorageConfig
from storage.store import Store
from takeover.evaluate import EpisodeJob, JobFunction, JobMapper
from takeover.iteration import LoopHooks

STORAGE_CONFIG = "storage"
DEFAULT_RETRY_DELAY_S = 5.0


def open_store(db_url: str | None, clip_root: str | None) -> Store:
    """The takeover store: the flow's parameters, else $TAKEOVER_DB_URL / $TAKEOVER_CLIP_ROOT, else
    conf/storage.yaml."""
    return Store.from_config(load_config(StorageConfig, STORAGE_CONFIG), db_url=db_url, clip_root=clip_root)


# Live objects (job functions, stores) cross into these tasks: nothing to hash or cache.
@task(name="episode", cache_policy=NO_CACHE)
def episode_task(fn: JobFunction, job: EpisodeJob) -> int:
    return fn(job)


@task(name="step", cache_policy=NO_CACHE)
def step_task(fn: Callable[[], Any]) -> Any:
    return fn()


def _settle(index: int, future: PrefectFuture, results: list[Any]) -> None:
    future.wait()
    try:
        results[index] = future.result()
    except Exception as exc:  # the job's own error, after its retries: the library records it
        results[index] = exc


def prefect_mapper(concurrency: int, retries: int, retry_delay_s: float = DEFAULT_RETRY_DELAY_S) -> JobMapper:
    """A JobMapper submitting one `episode` task per job, at most `concurrency` in flight."""
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be >= 1")
    configured = episode_task.with_options(retries=retries, retry_delay_seconds=retry_delay_s)

    def map_jobs(what: str, fn: JobFunction, jobs: Sequence[EpisodeJob]) -> list[int | BaseException]:
        results: list[Any] = [None] * len(jobs)
        in_flight: deque[tuple[int, PrefectFuture]] = deque()
        for index, job in enumerate(jobs):
            if len(in_flight) >= concurrency:
                _settle(*in_flight.popleft(), results)
            future = configured.with_options(task_run_name=f"{what}: {job.label}").submit(fn, job)
            in_flight.append((index, future))
        while in_flight:
            _settle(*in_flight.popleft(), results)
        return results

    return map_jobs


def prefect_step(name: str, fn: Callable[[], Any]) -> Any:
    """Run one step of an iteration as a task named after it."""
    return step_task.with_options(name=name, task_run_name=name)(fn)


def prefect_hooks(concurrency: int, retries: int, retry_delay_s: float = DEFAULT_RETRY_DELAY_S) -> LoopHooks:
    return LoopHooks(run_step=prefect_step, map_jobs=prefect_mapper(concurrency, retries, retry_delay_s))
