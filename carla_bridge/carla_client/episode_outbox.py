"""Handing a finished episode from the agent (inside the evaluator process) to whoever stores it.

The agent cannot know whether the leaderboard will count its route (a simulation crash after the last
tick is only visible to the evaluator), so under `run_leaderboard_route` it leaves an `EpisodeBundle`
in an outbox folder and the launcher stores it only after reading the evaluator's record for the
route: a crashed route leaves no episode in the database. Bundles are written atomically (temporary
file, fsync, rename): a reader sees a whole bundle or none. They are pickles of this package's own
dataclasses, written and read by the same user within one run (the outbox is a private temp folder).

`store_episode` writes a bundle with `Store.ingest_episode` (one transaction, idempotent), recording
the policy checkpoint first and, when given, replacing the agent's own scores by the leaderboard's.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carla_bridge.errors import SimulatorError
from carla_bridge.scoring.record import RouteRecord as LeaderboardRecord

BUNDLE_SUFFIX = ".episode.pkl"
PICKLE_PROTOCOL = 5


@dataclass(frozen=True)
class EpisodeBundle:
    episode: Any  # storage.records.EpisodeRecord
    takeovers: tuple[Any, ...]  # storage.records.TakeoverRecord
    clips: tuple[Any, ...]  # storage.records.ClipRecord
    agent_record: LeaderboardRecord  # the agent's own scoring of the route
    checkpoint_path: str | None  # the policy file, recorded in the store before the episode

    @property
    def name(self) -> str:
        route = self.episode.route
        return f"{route.route_id}_rep{self.episode.repetition}"


def write_bundle(bundle: EpisodeBundle, outbox: str | os.PathLike[str]) -> Path:
    """Atomically write `bundle` into `outbox` (file `<route>_rep<n>.episode.pkl`)."""
    folder = Path(outbox)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{bundle.name}{BUNDLE_SUFFIX}"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=BUNDLE_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(bundle, handle, protocol=PICKLE_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_bundles(outbox: str | os.PathLike[str]) -> list[tuple[Path, EpisodeBundle]]:
    """Every complete bundle in `outbox`, by file name."""
    folder = Path(outbox)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(f"*{BUNDLE_SUFFIX}")):
        if path.name.startswith(".tmp-"):
            continue
        with path.open("rb") as handle:
            bundle = pickle.load(handle)  # our own file (module docstring)
        if not isinstance(bundle, EpisodeBundle):
            raise SimulatorError(f"{path} is not an episode bundle; remove it from the outbox")
        out.append((path, bundle))
    return out


def with_leaderboard_scores(episode: Any, record: LeaderboardRecord) -> Any:
    """The episode with status and scores from the leaderboard's record (the agent's kept under scores)."""
    scores = dict(episode.scores)
    if episode.driving_score is not None:
        scores["agent_driving_score"] = float(episode.driving_score)
    if record.efficiency is not None:
        scores["efficiency"] = float(record.efficiency)
    if record.comfort is not None:
        scores["comfort"] = float(record.comfort)
    return dataclasses.replace(
        episode,
        status=record.status,
        driving_score=float(record.scores.score_composed),
        route_completion=float(record.scores.score_route),
        infraction_penalty=float(record.scores.score_penalty),
        success=bool(record.success),
        scores=scores,
    )


def store_episode(
    store: Any, bundle: EpisodeBundle, leaderboard_record: LeaderboardRecord | None = None
) -> int:
    """Write a bundle into `store` (a storage.Store); returns the episode id."""
    from storage.records import CheckpointRecord

    episode = bundle.episode
    if episode.checkpoint_sha256 is not None:
        if bundle.checkpoint_path is None:
            raise SimulatorError(
                f"episode {bundle.name} names checkpoint {episode.checkpoint_sha256[:12]} but not its file"
            )
        store.record_checkpoint(
            CheckpointRecord(path=bundle.checkpoint_path, sha256=episode.checkpoint_sha256)
        )
    if leaderboard_record is not None:
        episode = with_leaderboard_scores(episode, leaderboard_record)
    return int(store.ingest_episode(episode, bundle.takeovers, bundle.clips))
