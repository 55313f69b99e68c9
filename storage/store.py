"""`Store`: the one entry point to write and read takeover data (database rows + clip files).

An episode's rows and files are written atomically. The protocol, in order:
  1. validate and encode everything in memory (a bad record fails before anything is written);
  2. commit a journal row (`ingest_attempts`) naming a fresh clip folder for this attempt;
  3. write the clip files into that folder (fsync'ed, each under its final name only when complete);
  4. one transaction inserts the episode, takeovers, clips and frames and deletes the journal row;
  5. on any failure before the commit, the folder and the journal row are removed.
A writer killed between 2 and 4 leaves only a journal row and its folder, which `recover_orphans`
removes (the first ingest of every Store runs it). Rows thus never point to missing files, and files
without rows never outlive a recovery. The episode insert is `ON CONFLICT (natural_key) DO NOTHING`:
re-ingesting is a no-op returning the first id, and of two processes racing on one episode the loser
removes its own folder (folders are per attempt, never shared).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, ParamSpec, TypeVar

import fsspec
import numpy as np
from sqlalchemy import Engine, Select, Table, delete, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from storage.clip_format import FRAME_KEYS, clip_frame_numbers
from storage.clip_store import ClipStore, decode_arrays, encode_arrays, sha256_hex
from storage.config import StorageConfig
from storage.engine import db_error, make_engine, writer
from storage.errors import ClipNotFoundError, EpisodeConflictError, RecordError, SchemaError, StorageError
from storage.migrate import SchemaState, ensure_schema
from storage.models import (
    Base,
    Checkpoint,
    Clip,
    Counterfactual,
    Episode,
    Frame,
    IngestAttempt,
    Iteration,
    PreferencePair,
    Route,
    Takeover,
    TrainingMetric,
    TrainingRound,
    utcnow,
)
from storage.records import (
    CheckpointRecord,
    ClipInfo,
    ClipRecord,
    CounterfactualRecord,
    EpisodeRecord,
    FrameTable,
    PreferencePairInfo,
    PreferencePairRecord,
    TakeoverInfo,
    TakeoverRecord,
    TrainingRoundRecord,
    check_sha256,
    content_digest,
    jsonable,
    plan_to_json,
)
from storage.url import mask_url, parse_db_url, resolve_clip_root, resolve_db_url, sqlite_path

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
OnConflict = Literal["keep", "error"]
EPISODES_DIR = "episodes"  # clip files live under <clip root>/episodes/<key hash>/<attempt id>/
KEY_HASH_LEN = 16  # hex chars of the natural key's sha256 in folder names
HASH_CHUNK_BYTES = 1 << 20  # read size when hashing a checkpoint file
HOST = socket.gethostname()
ID_CHUNK = 10_000  # ids per IN (...) list: below SQLite's and PostgreSQL's bound-parameter limits
CLIP_INFO_COLUMNS = tuple(getattr(Clip, f.name) for f in fields(ClipInfo))


def _translate_db_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn driver errors of a public Store method into one StorageError with the URL masked."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except DBAPIError as exc:
            store = args[0]
            assert isinstance(store, Store)
            raise db_error(store.url, exc, method.__name__.replace("_", " ")) from None

    return wrapper


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _as_utc(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; everything is written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RecoveryReport:
    removed_dirs: list[str]  # clip folders of dead or stale ingests (and strays when swept)
    in_flight: int  # unfinished ingests left alone (their writer may still be running)


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    missing: list[tuple[int, str]]  # (clip id, uri)
    corrupt: list[tuple[int, str]]
    stray_dirs: list[str]  # folders under the clip root that no clip row and no ingest references

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.stray_dirs)


@dataclass(frozen=True)
class IterationSummary:
    run: str
    iteration: int | None
    episodes: int
    distance_km: float
    takeovers: int
    mean_driving_score: float | None

    @property
    def takeovers_per_km(self) -> float | None:
        return self.takeovers / self.distance_km if self.distance_km > 0 else None


@dataclass(frozen=True)
class StoreStats:
    database: str  # masked URL
    clip_root: str
    schema: SchemaState
    rows: dict[str, int]  # table -> row count
    clip_bytes: int
    unfinished_ingests: int
    iterations: list[IterationSummary] = field(default_factory=list)


@dataclass(frozen=True)
class _EncodedClip:
    record: ClipRecord
    seq: int
    n_frames: int
    name: str  # file name inside the attempt folder
    data: bytes
    sha256: str


@dataclass(frozen=True)
class _Prepared:
    episode: EpisodeRecord
    takeovers: list[TakeoverRecord]
    clips: list[_EncodedClip]
    natural_key: str
    content_sha256: str


@dataclass(frozen=True)
class _Attempt:
    id: str
    clip_dir: str


class Store:
    """Takeover database + clip store. `Store.from_config()` resolves the URL like the CLI does."""

    def __init__(
        self,
        db_url: str | URL,
        clip_root: str,
        config: StorageConfig | None = None,
        *,
        auto_upgrade: bool | None = None,
    ) -> None:
        self.config = config or StorageConfig()
        self.url = parse_db_url(db_url) if isinstance(db_url, str) else db_url
        upgrade_allowed = self.config.auto_upgrade if auto_upgrade is None else auto_upgrade
        path = sqlite_path(self.url) if self.url.get_backend_name() == "sqlite" else None
        if path is not None and not upgrade_allowed and not path.exists():
            raise SchemaError(f"database file {path} does not exist; run `takeover db upgrade` to create it")
        self.engine: Engine = make_engine(
            self.url,
            connect_timeout_s=self.config.connect_timeout_s,
            sqlite_busy_timeout_s=self.config.sqlite_busy_timeout_s,
        )
        self._writer = writer(self.engine)
        try:
            self.schema = ensure_schema(self.engine, upgrade_allowed)
        except BaseException:
            self.engine.dispose()
            raise
        self.clip_store = ClipStore(clip_root, fsync=self.config.fsync_clips)
        self._recovered = False

    @classmethod
    def from_config(
        cls, config: StorageConfig | None = None, *, db_url: str | None = None, clip_root: str | None = None
    ) -> Store:
        """Open the store named by `db_url`/`clip_root`, else the environment, else `config`."""
        config = config or StorageConfig()
        return cls(
            resolve_db_url(config.db_url, db_url), resolve_clip_root(config.clip_root, clip_root), config
        )

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- helpers
    def _insert(self, model: type[Base] | Table) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(model)

    def _get_or_create(self, session: Session, model: type[Base], key: dict[str, Any], **values: Any) -> int:
        """Id of the row with `key`, inserting it (with `values`) when absent; safe against racing writers."""
        stmt = self._insert(model).values(**key, **values).on_conflict_do_nothing(index_elements=list(key))
        session.execute(stmt)
        return int(session.execute(select(model.id).filter_by(**key)).scalar_one())  # type: ignore[attr-defined]

    def _checkpoint_id(self, session: Session, sha256: str | None, what: str) -> int | None:
        if sha256 is None:
            return None
        found = session.execute(select(Checkpoint.id).where(Checkpoint.sha256 == sha256)).scalar_one_or_none()
        if found is None:
            raise RecordError(
                f"{what} {sha256[:16]}... is not recorded; call Store.record_checkpoint(...) for it first"
            )
        return int(found)

    def _iteration_id(self, session: Session, run: str, number: int | None) -> int | None:
        if number is None:
            return None
        return self._get_or_create(
            session,
            Iteration,
            {"run": run, "number": int(number)},
            status="running",
            config={},
            started_at=utcnow(),
        )

    # ---------------------------------------------------------------- iterations and checkpoints
    @_translate_db_errors
    def start_iteration(
        self,
        run: str,
        number: int,
        *,
        config: dict[str, Any] | None = None,
        base_checkpoint_sha256: str | None = None,
        notes: str | None = None,
    ) -> int:
        """Id of iteration `number` of `run`, created on first call (later calls return the same id)."""
        if not run:
            raise RecordError("iteration run name must be a non-empty string")
        with Session(self._writer) as session, session.begin():
            base = self._checkpoint_id(
                session, check_sha256(base_checkpoint_sha256, "base checkpoint"), "base checkpoint"
            )
            return self._get_or_create(
                session,
                Iteration,
                {"run": run, "number": int(number)},
                status="running",
                config=jsonable(config or {}, "iteration config"),
                base_checkpoint_id=base,
                notes=notes,
                started_at=utcnow(),
            )

    @_translate_db_errors
    def finish_iteration(
        self, iteration_id: int, *, status: str = "completed", promoted_checkpoint_sha256: str | None = None
    ) -> None:
        with Session(self._writer) as session, session.begin():
            iteration = session.get(Iteration, iteration_id)
            if iteration is None:
                raise RecordError(f"no iteration with id {iteration_id}")
            iteration.status = status
            iteration.finished_at = utcnow()
            iteration.promoted_checkpoint_id = self._checkpoint_id(
                session,
                check_sha256(promoted_checkpoint_sha256, "promoted checkpoint"),
                "promoted checkpoint",
            )

    @_translate_db_errors
    def record_checkpoint(self, record: CheckpointRecord) -> int:
        """Id of the checkpoint with this content (sha256 of the file when not given); idempotent."""
        sha256 = check_sha256(record.sha256, "checkpoint sha256")
        size: int | None = None
        if sha256 is None:
            sha256, size = self._hash_file(record.path)
        with Session(self._writer) as session, session.begin():
            parent = self._checkpoint_id(
                session, check_sha256(record.parent_sha256, "parent checkpoint"), "parent checkpoint"
            )
            return self._get_or_create(
                session,
                Checkpoint,
                {"sha256": sha256},
                path=record.path,
                kind=record.kind,
                size_bytes=size,
                config=jsonable(dict(record.config), "checkpoint config"),
                parent_id=parent,
                created_at=utcnow(),
            )

    @staticmethod
    def _hash_file(path: str) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        try:
            with fsspec.open(path, "rb") as handle:
                while chunk := handle.read(HASH_CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise RecordError(f"checkpoint file {path} does not exist; save it before recording it") from None
        return digest.hexdigest(), size

    # ---------------------------------------------------------------- episodes
    def _prepare(
        self, episode: EpisodeRecord, takeovers: list[TakeoverRecord], clips: list[ClipRecord]
    ) -> _Prepared:
        episode.validate()
        for index, takeover in enumerate(takeovers):
            takeover.validate(index, episode.n_frames)
        encoded = []
        for seq, clip in enumerate(clips):
            length = clip.validate(seq, episode.n_frames, len(takeovers))
            data = encode_arrays(clip.arrays, self.config.clip_compression_level)
            name = f"{seq:03d}-{clip.kind}.npz"
            encoded.append(_EncodedClip(clip, seq, length, name, data, sha256_hex(data)))
        return _Prepared(
            episode, takeovers, encoded, episode.natural_key(), content_digest(episode, takeovers, clips)
        )

    def _existing_episode(self, natural_key: str) -> tuple[int, str] | None:
        with Session(self.engine) as session:
            row = session.execute(
                select(Episode.id, Episode.content_sha256).where(Episode.natural_key == natural_key)
            ).one_or_none()
        return None if row is None else (int(row[0]), str(row[1]))

    def _resolve_existing(
        self, existing: tuple[int, str], prepared: _Prepared, on_conflict: OnConflict
    ) -> int:
        episode_id, stored_digest = existing
        if stored_digest != prepared.content_sha256:
            if on_conflict == "error":
                raise EpisodeConflictError(
                    f"episode {prepared.natural_key} is already stored (id {episode_id}) with different "
                    "content; give the new run another seed/repetition/phase, or ingest with on_conflict='keep'"
                )
            log.info(
                "episode %s already stored as id %d; keeping the stored one", prepared.natural_key, episode_id
            )
        return episode_id

    @_translate_db_errors
    def ingest_episode(
        self,
        episode: EpisodeRecord,
        takeovers: Iterable[TakeoverRecord] = (),
        clips: Iterable[ClipRecord] = (),
        *,
        on_conflict: OnConflict = "keep",
    ) -> int:
        """Write one episode with its takeovers, clips (files) and frames atomically; returns its id.

        Idempotent: an episode whose natural key is stored already is not written again and its id is
        returned (with on_conflict="error", different content under the same key raises instead).
        """
        prepared = self._prepare(episode, list(takeovers), list(clips))
        if not self._recovered:
            self.recover_orphans()
            self._recovered = True
        existing = self._existing_episode(prepared.natural_key)
        if existing is not None:
            return self._resolve_existing(existing, prepared, on_conflict)
        attempt = self._open_attempt(prepared.natural_key) if prepared.clips else None
        try:
            if attempt is not None:
                for clip in prepared.clips:
                    self.clip_store.write(f"{attempt.clip_dir}/{clip.name}", clip.data)
            episode_id = self._commit_rows(prepared, attempt)
        except BaseException:
            if attempt is not None:
                self._abandon_attempt(attempt)
            raise
        if episode_id is None:  # another writer stored the same episode first
            if attempt is not None:
                self._abandon_attempt(attempt)
            existing = self._existing_episode(prepared.natural_key)
            assert existing is not None, "insert conflicted on a natural key that is not there"
            return self._resolve_existing(existing, prepared, on_conflict)
        return episode_id

    def _open_attempt(self, natural_key: str) -> _Attempt:
        attempt_id = str(uuid.uuid4())
        key_hash = hashlib.sha256(natural_key.encode()).hexdigest()[:KEY_HASH_LEN]
        clip_dir = f"{EPISODES_DIR}/{key_hash[:2]}/{key_hash}/{attempt_id}"
        with Session(self._writer) as session, session.begin():
            session.add(
                IngestAttempt(
                    id=attempt_id,
                    natural_key=natural_key,
                    clip_dir=clip_dir,
                    host=HOST,
                    pid=os.getpid(),
                    started_at=utcnow(),
                )
            )
        return _Attempt(attempt_id, clip_dir)

    def _abandon_attempt(self, attempt: _Attempt) -> None:
        """Remove an attempt's folder and journal row, unless its episode committed after all.

        Best effort: when the database cannot be reached the row stays for recover_orphans.
        """
        try:
            with Session(self._writer) as session, session.begin():
                claimed = session.execute(
                    update(IngestAttempt).where(IngestAttempt.id == attempt.id).values(claimed_at=utcnow())
                ).rowcount
            if claimed != 1:
                return  # the journal row went with the episode's commit: the files are in use
            self.clip_store.remove_tree(attempt.clip_dir)
            with Session(self._writer) as session, session.begin():
                session.execute(delete(IngestAttempt).where(IngestAttempt.id == attempt.id))
        except Exception as exc:  # never hide the error that made us abandon
            log.warning(
                "could not clean up ingest %s (%s); recover_orphans will", attempt.id, type(exc).__name__
            )

    def _commit_rows(self, prepared: _Prepared, attempt: _Attempt | None) -> int | None:
        """The one transaction of an episode; None when the natural key was taken meanwhile."""
        episode = prepared.episode
        with Session(self._writer) as session, session.begin():
            iteration_id = self._iteration_id(session, episode.run, episode.iteration)
            route = episode.route
            route_pk = self._get_or_create(
                session,
                Route,
                {"route_set": route.route_set, "route_id": route.route_id},
                town=route.town,
                scenario_type=route.scenario_type,
                scenario_types=list(route.scenario_types),
                length_m=route.length_m,
            )
            checkpoint_id = self._checkpoint_id(session, episode.checkpoint_sha256, "episode checkpoint")
            episode_id = session.execute(
                self._insert(Episode)
                .values(**self._episode_values(prepared, iteration_id, route_pk, checkpoint_id))
                .on_conflict_do_nothing(index_elements=["natural_key"])
                .returning(Episode.id)
            ).scalar_one_or_none()
            if episode_id is None:
                return None
            takeover_ids = self._insert_takeovers(session, episode_id, prepared.takeovers)
            if attempt is not None:
                self._insert_clips(session, episode_id, prepared, attempt, takeover_ids)
                released = session.execute(
                    delete(IngestAttempt).where(
                        IngestAttempt.id == attempt.id, IngestAttempt.claimed_at.is_(None)
                    )
                ).rowcount
                if released != 1:
                    raise StorageError(
                        f"ingest of episode {prepared.natural_key} outlived storage.orphan_grace_s and recovery "
                        "reclaimed its clip files; nothing was written; ingest it again"
                    )
            self._before_commit(session, int(episode_id))
        return int(episode_id)

    def _before_commit(self, session: Session, episode_id: int) -> None:
        """Called with every row of an episode written, just before COMMIT (a seam for crash tests)."""

    @staticmethod
    def _episode_values(
        prepared: _Prepared, iteration_id: int | None, route_pk: int, checkpoint_id: int | None
    ) -> dict[str, Any]:
        e = prepared.episode
        return {
            "natural_key": prepared.natural_key,
            "run": e.run,
            "iteration_id": iteration_id,
            "route_pk": route_pk,
            "checkpoint_id": checkpoint_id,
            "backend": e.backend,
            "phase": e.phase,
            "seed": int(e.seed),
            "repetition": int(e.repetition),
            "status": e.status,
            "driving_score": e.driving_score,
            "route_completion": e.route_completion,
            "infraction_penalty": e.infraction_penalty,
            "success": e.success,
            "scores": jsonable(dict(e.scores), "episode.scores"),
            "infractions": jsonable([dict(i) for i in e.infractions], "episode.infractions"),
            "distance_m": float(e.distance_m),
            "duration_s": float(e.duration_s),
            "n_frames": int(e.n_frames),
            "n_takeovers": len(prepared.takeovers),
            "content_sha256": prepared.content_sha256,
            "started_at": e.started_at,
            "finished_at": e.finished_at,
            "created_at": utcnow(),
        }

    def _insert_takeovers(
        self, session: Session, episode_id: int, takeovers: list[TakeoverRecord]
    ) -> list[int]:
        if not takeovers:
            return []
        rows = [
            {
                "episode_id": episode_id,
                "seq": seq,
                "frame": int(t.frame),
                "time_s": float(t.time_s),
                "x_m": float(t.x_m),
                "y_m": float(t.y_m),
                "yaw_rad": t.yaw_rad,
                "speed_mps": float(t.speed_mps),
                "reason": t.reason,
                "scenario_type": t.scenario_type,
                "ttc_s": t.ttc_s,
                "severity": jsonable(dict(t.severity), f"takeover {seq} severity"),
                "plan_frame": t.plan_frame,
                "policy_plan": plan_to_json(t.policy_plan, f"takeover {seq} policy_plan"),
                "expert_plan": plan_to_json(t.expert_plan, f"takeover {seq} expert_plan"),
                "handback_frame": t.handback_frame,
                "handback_time_s": t.handback_time_s,
            }
            for seq, t in enumerate(takeovers)
        ]
        result = session.execute(
            self._insert(Takeover).returning(Takeover.id, sort_by_parameter_order=True), rows
        )
        return [int(row[0]) for row in result]

    def _insert_clips(
        self,
        session: Session,
        episode_id: int,
        prepared: _Prepared,
        attempt: _Attempt,
        takeover_ids: list[int],
    ) -> None:
        rows = []
        for clip in prepared.clips:
            record = clip.record
            rows.append(
                {
                    "episode_id": episode_id,
                    "seq": clip.seq,
                    "kind": record.kind,
                    "takeover_id": None
                    if record.takeover_index is None
                    else takeover_ids[record.takeover_index],
                    "start_frame": int(record.start_frame),
                    "end_frame": _end_frame(record.arrays, int(record.start_frame), clip.n_frames),
                    "n_frames": clip.n_frames,
                    "uri": f"{attempt.clip_dir}/{clip.name}",
                    "sha256": clip.sha256,
                    "size_bytes": len(clip.data),
                    "arrays": {
                        k: {"shape": list(np.shape(v)), "dtype": np.asarray(v).dtype.str}
                        for k, v in sorted(record.arrays.items())
                    },
                }
            )
        result = session.execute(self._insert(Clip).returning(Clip.id, sort_by_parameter_order=True), rows)
        clip_ids = [int(row[0]) for row in result]
        trigger_frames = {int(t.frame) for t in prepared.takeovers}
        frame_rows: list[dict[str, Any]] = []
        for clip_id, clip in zip(clip_ids, prepared.clips, strict=True):
            frame_rows.extend(self._frame_rows(clip_id, clip, trigger_frames))
        if frame_rows:
            # Core executemany on the table: the ORM's per-row bookkeeping would triple the cost.
            session.connection().execute(self._insert(Frame.__table__), frame_rows)

    @staticmethod
    def _frame_rows(clip_id: int, clip: _EncodedClip, trigger_frames: set[int]) -> list[dict[str, Any]]:
        arrays = clip.record.arrays
        time_s, speed, driver = (np.asarray(arrays[key]) for key in FRAME_KEYS)
        frames = clip_frame_numbers(clip.record.arrays, clip.record.start_frame, clip.n_frames)
        pose = arrays.get("ego_pose")
        xs = np.asarray(pose)[:, 0].tolist() if pose is not None else [None] * clip.n_frames
        ys = np.asarray(pose)[:, 1].tolist() if pose is not None else [None] * clip.n_frames
        return [
            {
                "clip_id": clip_id,
                "frame": f,
                "time_s": t,
                "ego_speed_mps": v,
                "driver": d,
                "is_takeover": f in trigger_frames,
                "x_m": x,
                "y_m": y,
            }
            for f, t, v, d, x, y in zip(
                frames.tolist(),
                time_s.astype(float).tolist(),
                speed.astype(float).tolist(),
                driver.astype(int).tolist(),
                xs,
                ys,
                strict=True,
            )
        ]

    @_translate_db_errors
    def episode_id(self, episode: EpisodeRecord) -> int | None:
        """Id of the stored episode with this record's natural key, or None."""
        existing = self._existing_episode(episode.natural_key())
        return None if existing is None else existing[0]

    # ---------------------------------------------------------------- recovery and checks
    @_translate_db_errors
    def recover_orphans(self, grace_s: float | None = None, *, sweep: bool = False) -> RecoveryReport:
        """Remove the clip folders of ingests that died before committing.

        An unfinished ingest is an orphan when recovery claimed it before, when it is older than
        `grace_s` (default storage.orphan_grace_s), or when its writer ran on this host and that process
        is gone. With `sweep`, also remove folders under the clip root that neither a clip row nor an
        unfinished ingest references (listing the whole store: slow on big object stores).
        """
        grace = self.config.orphan_grace_s if grace_s is None else grace_s
        stray = self._stray_dirs() if sweep else []
        now = utcnow()
        with Session(self.engine) as session:
            attempts = session.execute(select(IngestAttempt)).scalars().all()
            session.expunge_all()
        removed: list[str] = []
        in_flight = 0
        for attempt in attempts:
            age_s = (now - _as_utc(attempt.started_at)).total_seconds()
            dead_here = attempt.host == HOST and attempt.pid != os.getpid() and not _pid_alive(attempt.pid)
            if attempt.claimed_at is None and age_s <= grace and not dead_here:
                in_flight += 1
                continue
            with Session(self._writer) as session, session.begin():
                claimed = session.execute(
                    update(IngestAttempt).where(IngestAttempt.id == attempt.id).values(claimed_at=now)
                ).rowcount
            if claimed != 1:
                continue  # it committed (or another recovery finished it) meanwhile
            self.clip_store.remove_tree(attempt.clip_dir)
            with Session(self._writer) as session, session.begin():
                session.execute(delete(IngestAttempt).where(IngestAttempt.id == attempt.id))
            removed.append(attempt.clip_dir)
            log.info("removed the clip folder %s of an ingest that never committed", attempt.clip_dir)
        for folder in stray:
            self.clip_store.remove_tree(folder)
            removed.append(folder)
        return RecoveryReport(removed, in_flight)

    def _stray_dirs(self) -> list[str]:
        # List files first, then read the rows: a folder seen on disk had its journal row committed
        # before its first file, so the rows read afterwards reference it unless it is garbage.
        folders = {path.rsplit("/", 1)[0] for path in self.clip_store.list_files(EPISODES_DIR)}
        if not folders:
            return []
        with Session(self.engine) as session:
            referenced = {uri.rsplit("/", 1)[0] for uri in session.execute(select(Clip.uri)).scalars()}
            referenced |= set(session.execute(select(IngestAttempt.clip_dir)).scalars())
        return sorted(folders - referenced)

    @_translate_db_errors
    def verify_clips(self, *, sweep: bool = True) -> VerifyReport:
        """Read every clip file and check it against its recorded sha256 and size."""
        missing: list[tuple[int, str]] = []
        corrupt: list[tuple[int, str]] = []
        with Session(self.engine) as session:
            rows = session.execute(
                select(Clip.id, Clip.uri, Clip.sha256, Clip.size_bytes).order_by(Clip.id)
            ).all()
        for clip_id, uri, sha256, size in rows:
            try:
                self.clip_store.read_verified(uri, sha256, size, f"clip {clip_id}")
            except ClipNotFoundError:
                missing.append((int(clip_id), uri))
            except StorageError:
                corrupt.append((int(clip_id), uri))
        return VerifyReport(len(rows), missing, corrupt, self._stray_dirs() if sweep else [])

    # ---------------------------------------------------------------- clips
    @_translate_db_errors
    def clip_info(self, clip_id: int) -> ClipInfo:
        with Session(self.engine) as session:
            clip = session.get(Clip, clip_id)
            if clip is None:
                raise ClipNotFoundError(
                    f'no clip with id {clip_id}; list them with takeover db query "SELECT id, kind FROM clips"'
                )
            return _clip_info(clip)

    def load_clip(self, clip_id: int) -> dict[str, np.ndarray]:
        """A clip's arrays, after checking the file against the sha256 recorded in the database."""
        info = self.clip_info(clip_id)
        data = self.clip_store.read_verified(info.uri, info.sha256, info.size_bytes, f"clip {clip_id}")
        return decode_arrays(data)

    # ---------------------------------------------------------------- reads for training data
    # Every list_* method takes the same episode filters; each given one must hold:
    #   run            the episodes' run
    #   phases         their phase is one of these (e.g. ["rollout"])
    #   max_iteration  their iteration number is <= this; episodes outside any iteration count as 0
    #   iteration      their iteration number is exactly this (episodes outside any iteration never match)
    #   episode_ids    they are one of these

    @_translate_db_errors
    def list_clips(
        self,
        *,
        run: str | None = None,
        phases: Iterable[str] | None = None,
        max_iteration: int | None = None,
        iteration: int | None = None,
        episode_ids: Iterable[int] | None = None,
        kinds: Iterable[str] | None = None,
        ids: Iterable[int] | None = None,
    ) -> list[ClipInfo]:
        """Clips of the selected episodes (of these `kinds`, with these `ids` when given), by id."""
        # Columns, not ORM objects: a training set lists thousands of clips and needs no identity map.
        stmt = select(*CLIP_INFO_COLUMNS).where(
            _episodes_where(Clip.episode_id, run, phases, max_iteration, iteration, episode_ids)
        )
        if kinds is not None:
            stmt = stmt.where(Clip.kind.in_(_strings(kinds)))
        with Session(self.engine) as session:
            clips = [
                _clip_info(row)
                for part in _id_chunks(stmt, Clip.id, ids)
                for row in session.execute(part).all()
            ]
        return sorted(clips, key=lambda c: c.id)

    @_translate_db_errors
    def list_frames(
        self,
        *,
        run: str | None = None,
        phases: Iterable[str] | None = None,
        max_iteration: int | None = None,
        iteration: int | None = None,
        episode_ids: Iterable[int] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> FrameTable:
        """Every frame of the clips of the selected episodes (of these clip `kinds` when given).

        A tick stored in two clips (overlapping windows) appears once per clip.
        """
        stmt = (
            select(
                Frame.clip_id,
                Clip.episode_id,
                Frame.frame,
                Frame.time_s,
                Frame.ego_speed_mps,
                Frame.driver,
                Frame.is_takeover,
            )
            .join(Clip, Clip.id == Frame.clip_id)
            .where(_episodes_where(Clip.episode_id, run, phases, max_iteration, iteration, episode_ids))
            .order_by(Frame.clip_id, Frame.frame)
        )
        if kinds is not None:
            stmt = stmt.where(Clip.kind.in_(_strings(kinds)))
        with Session(self.engine) as session:
            rows = session.execute(stmt).all()
        if not rows:
            return FrameTable.empty()
        clip_id, episode_id, frame, time_s, speed, driver, is_takeover = (
            list(c) for c in zip(*rows, strict=True)
        )
        table = FrameTable(
            clip_id=np.array(clip_id, np.int64),
            episode_id=np.array(episode_id, np.int64),
            frame=np.array(frame, np.int64),
            row=_rows_within_clips(np.array(clip_id, np.int64)),
            time_s=np.array(time_s, np.float64),
            ego_speed_mps=np.array(speed, np.float64),
            driver=np.array(driver, np.int8),
            is_takeover=np.array(is_takeover, bool),
        )
        return table.subset(np.lexsort((table.clip_id, table.frame, table.episode_id)))

    @_translate_db_errors
    def list_takeovers(
        self,
        *,
        run: str | None = None,
        phases: Iterable[str] | None = None,
        max_iteration: int | None = None,
        iteration: int | None = None,
        episode_ids: Iterable[int] | None = None,
        reasons: Iterable[str] | None = None,
    ) -> list[TakeoverInfo]:
        """Takeovers of the selected episodes (for these `reasons` when given), by episode and tick."""
        columns = [getattr(Takeover, f.name) for f in fields(TakeoverInfo)]
        stmt = (
            select(*columns)
            .where(_episodes_where(Takeover.episode_id, run, phases, max_iteration, iteration, episode_ids))
            .order_by(Takeover.episode_id, Takeover.frame, Takeover.seq)
        )
        if reasons is not None:
            stmt = stmt.where(Takeover.reason.in_(_strings(reasons)))
        with Session(self.engine) as session:
            return [TakeoverInfo(**row._asdict()) for row in session.execute(stmt).all()]

    @_translate_db_errors
    def list_preference_pairs(
        self,
        *,
        run: str | None = None,
        phases: Iterable[str] | None = None,
        max_iteration: int | None = None,
        iteration: int | None = None,
        episode_ids: Iterable[int] | None = None,
        sources: Iterable[str] | None = None,
    ) -> list[PreferencePairInfo]:
        """DPO pairs of the selected episodes (made by these `sources` when given), by id."""
        holds_frame = (Frame.clip_id == PreferencePair.clip_id) & (Frame.frame == PreferencePair.frame)
        # Index of the pair's tick in its clip's arrays: the clip's frames before it (clips may be strided).
        row = (
            select(func.count())
            .select_from(Frame)
            .where(Frame.clip_id == PreferencePair.clip_id, Frame.frame < PreferencePair.frame)
            .scalar_subquery()
        )
        stmt = (
            select(
                *(
                    getattr(PreferencePair, f.name)
                    for f in fields(PreferencePairInfo)
                    if f.name != "clip_row"
                ),
                row.label("clip_row"),
                select(Frame.frame).where(holds_frame).exists().label("in_clip"),
            )
            .where(
                _episodes_where(PreferencePair.episode_id, run, phases, max_iteration, iteration, episode_ids)
            )
            .order_by(PreferencePair.id)
        )
        if sources is not None:
            stmt = stmt.where(PreferencePair.source.in_(_strings(sources)))
        with Session(self.engine) as session:
            pairs = []
            for found in session.execute(stmt).all():
                values = found._asdict()
                in_clip = values.pop("in_clip")
                values["clip_row"] = int(values["clip_row"]) if in_clip else None
                pairs.append(PreferencePairInfo(**values))
            return pairs

    # ---------------------------------------------------------------- DPO pairs and training
    @_translate_db_errors
    def add_preference_pairs(self, pairs: Sequence[PreferencePairRecord]) -> list[int]:
        """Store DPO pairs (one transaction); a pair already there (episode, frame, source) keeps its id."""
        rows = []
        for index, pair in enumerate(pairs):
            what = f"preference pair {index}"
            if not pair.source:
                raise RecordError(f"{what}: source must be a non-empty string")
            rows.append(
                {
                    "episode_id": int(pair.episode_id),
                    "takeover_id": pair.takeover_id,
                    "clip_id": pair.clip_id,
                    "frame": int(pair.frame),
                    "time_s": float(pair.time_s),
                    "source": pair.source,
                    "chosen": plan_to_json(pair.chosen, f"{what} chosen"),
                    "rejected": plan_to_json(pair.rejected, f"{what} rejected"),
                    "weight": float(pair.weight),
                    "created_at": utcnow(),
                }
            )
        if not rows:
            return []
        ids = []
        with Session(self._writer) as session, session.begin():
            known = set(
                session.execute(
                    select(Episode.id).where(Episode.id.in_({r["episode_id"] for r in rows}))
                ).scalars()
            )
            unknown = sorted({r["episode_id"] for r in rows} - known)
            if unknown:
                raise RecordError(f"preference pairs name episode id(s) {unknown} that are not stored")
            key = ["episode_id", "frame", "source"]
            session.execute(self._insert(PreferencePair).on_conflict_do_nothing(index_elements=key), rows)
            for row in rows:
                ids.append(
                    int(
                        session.execute(
                            select(PreferencePair.id).filter_by(**{k: row[k] for k in key})
                        ).scalar_one()
                    )
                )
        return ids

    @_translate_db_errors
    def add_counterfactuals(self, records: Sequence[CounterfactualRecord]) -> None:
        """Store takeover counterfactuals (one transaction); one already there (takeover, settings) is kept."""
        rows = []
        for record in records:
            check_sha256(record.config_sha256, f"counterfactual of takeover {record.takeover_id}")
            rows.append(
                {
                    "takeover_id": int(record.takeover_id),
                    "config_sha256": record.config_sha256,
                    "horizon_s": float(record.horizon_s),
                    "outcome": record.outcome,
                    "necessary": record.necessary,
                    "first_event_s": record.first_event_s,
                    "progress_m": float(record.progress_m),
                    "events": jsonable(list(record.events), "counterfactual events"),
                    "config": jsonable(dict(record.config), "counterfactual config"),
                    "created_at": utcnow(),
                }
            )
        if not rows:
            return
        with Session(self._writer) as session, session.begin():
            wanted = {r["takeover_id"] for r in rows}
            known = set(session.execute(select(Takeover.id).where(Takeover.id.in_(wanted))).scalars())
            if unknown := sorted(wanted - known):
                raise RecordError(f"counterfactuals name takeover id(s) {unknown} that are not stored")
            key = ["takeover_id", "config_sha256"]
            session.execute(self._insert(Counterfactual).on_conflict_do_nothing(index_elements=key), rows)

    @_translate_db_errors
    def list_counterfactuals(
        self, takeover_ids: Iterable[int], config_sha256: str
    ) -> list[CounterfactualRecord]:
        """The stored counterfactuals of these takeovers under one replay setting, by takeover id."""
        ids = sorted({int(i) for i in takeover_ids})
        columns = [getattr(Counterfactual, f.name) for f in fields(CounterfactualRecord)]
        stmt = (
            select(*columns)
            .where(Counterfactual.takeover_id.in_(ids), Counterfactual.config_sha256 == config_sha256)
            .order_by(Counterfactual.takeover_id)
        )
        with Session(self.engine) as session:
            return [
                CounterfactualRecord(**{**row._asdict(), "events": tuple(row.events)})
                for row in session.execute(stmt).all()
            ]

    @_translate_db_errors
    def record_training_round(self, record: TrainingRoundRecord) -> int:
        """Create or update a training round (natural key: run, iteration, kind, name) and its curves."""
        if not record.run or not record.kind or not record.name:
            raise RecordError("training round needs non-empty run, kind and name")
        metrics = jsonable({k: float(v) for k, v in record.metrics.items()}, "training metrics")
        history = [{"name": p.name, "step": int(p.step), "value": float(p.value)} for p in record.history]
        with Session(self._writer) as session, session.begin():
            iteration_id = self._iteration_id(session, record.run, record.iteration)
            input_id = self._checkpoint_id(
                session, check_sha256(record.input_checkpoint_sha256, "input"), "input checkpoint"
            )
            output_id = self._checkpoint_id(
                session, check_sha256(record.output_checkpoint_sha256, "output"), "output checkpoint"
            )
            values = {
                "iteration_id": iteration_id,
                "kind": record.kind,
                "name": record.name,
                "input_checkpoint_id": input_id,
                "output_checkpoint_id": output_id,
                "status": record.status,
                "config": jsonable(dict(record.config), "training config"),
                "metrics": metrics,
                "n_samples": record.n_samples,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
            }
            mutable = ("output_checkpoint_id", "status", "metrics", "n_samples", "finished_at")
            stmt = self._insert(TrainingRound).values(
                natural_key=record.natural_key(), created_at=utcnow(), **values
            )
            # A round started again (a resumed iteration) restarts its clock; a record without a start
            # (resolving a failure) keeps the stored one.
            started_at = func.coalesce(stmt.excluded.started_at, TrainingRound.started_at)
            stmt = stmt.on_conflict_do_update(
                index_elements=["natural_key"],
                set_={"started_at": started_at, **{name: getattr(stmt.excluded, name) for name in mutable}},
            )
            session.execute(stmt)
            round_id = int(
                session.execute(
                    select(TrainingRound.id).where(TrainingRound.natural_key == record.natural_key())
                ).scalar_one()
            )
            if history:
                points = self._insert(TrainingMetric)
                points = points.on_conflict_do_update(
                    index_elements=["round_id", "name", "step"], set_={"value": points.excluded.value}
                )
                session.execute(points, [{"round_id": round_id, **p} for p in history])
        return round_id

    # ---------------------------------------------------------------- overview
    @_translate_db_errors
    def stats(self) -> StoreStats:
        tables = [m for m in Base.registry.mappers]
        rows: dict[str, int] = {}
        with Session(self.engine) as session:
            for mapper in sorted(tables, key=lambda m: m.local_table.name):
                table = mapper.local_table
                if table.name == IngestAttempt.__tablename__:
                    continue
                rows[table.name] = int(session.execute(select(func.count()).select_from(table)).scalar_one())
            clip_bytes = int(
                session.execute(select(func.coalesce(func.sum(Clip.size_bytes), 0))).scalar_one()
            )
            unfinished = int(session.execute(select(func.count()).select_from(IngestAttempt)).scalar_one())
            takeovers = (
                select(Takeover.episode_id, func.count().label("n")).group_by(Takeover.episode_id).subquery()
            )
            summary = session.execute(
                select(
                    Episode.run,
                    Iteration.number,
                    func.count(Episode.id),
                    func.sum(Episode.distance_m),
                    func.coalesce(func.sum(takeovers.c.n), 0),
                    func.avg(Episode.driving_score),
                )
                .outerjoin(Iteration, Iteration.id == Episode.iteration_id)
                .outerjoin(takeovers, takeovers.c.episode_id == Episode.id)
                .group_by(Episode.run, Iteration.number)
                .order_by(Episode.run, Iteration.number)
            ).all()
        iterations = [
            IterationSummary(
                run,
                number,
                int(n),
                float(dist or 0.0) / 1000.0,
                int(tk),
                None if score is None else float(score),
            )
            for run, number, n, dist, tk, score in summary
        ]
        return StoreStats(
            self.masked_url, self.clip_store.root, self.schema, rows, clip_bytes, unfinished, iterations
        )


def _end_frame(arrays: Mapping[str, Any], start_frame: int, n_frames: int) -> int:
    """Exclusive end tick of a clip: one past its last frame's tick (clips may be strided)."""
    if n_frames == 0:
        return start_frame
    return int(clip_frame_numbers(arrays, start_frame, n_frames)[-1]) + 1


def _clip_info(clip: Clip | Any) -> ClipInfo:
    """The ClipInfo of a clips row (an ORM object or a row of its columns)."""
    values = {f.name: getattr(clip, f.name) for f in fields(ClipInfo)}
    return ClipInfo(**{**values, "arrays": dict(values["arrays"])})


def _strings(values: Iterable[str]) -> list[str]:
    """A filter's values as a list; one bare string is one value (not its characters)."""
    return [values] if isinstance(values, str) else list(values)


def _episodes_where(
    episode_id: Any,
    run: str | None,
    phases: Iterable[str] | None,
    max_iteration: int | None,
    iteration: int | None,
    episode_ids: Iterable[int] | None,
) -> Any:
    """SQL condition: `episode_id` (a column) names an episode passing the filters (see Store.list_clips)."""
    if all(f is None for f in (run, phases, max_iteration, iteration, episode_ids)):
        return true()
    episodes = select(Episode.id)
    if run is not None:
        episodes = episodes.where(Episode.run == run)
    if phases is not None:
        episodes = episodes.where(Episode.phase.in_(_strings(phases)))
    if episode_ids is not None:
        episodes = episodes.where(Episode.id.in_([int(e) for e in episode_ids]))
    if max_iteration is not None or iteration is not None:
        episodes = episodes.outerjoin(Iteration, Iteration.id == Episode.iteration_id)
        if max_iteration is not None:
            episodes = episodes.where(or_(Iteration.number.is_(None), Iteration.number <= int(max_iteration)))
        if iteration is not None:
            episodes = episodes.where(Iteration.number == int(iteration))
    return episode_id.in_(episodes)


def _id_chunks(stmt: Select, column: Any, ids: Iterable[int] | None) -> list[Select]:
    """`stmt` restricted to `ids` (None: unrestricted), split so that no IN list exceeds ID_CHUNK."""
    if ids is None:
        return [stmt]
    wanted = sorted({int(i) for i in ids})
    return [stmt.where(column.in_(wanted[i : i + ID_CHUNK])) for i in range(0, len(wanted), ID_CHUNK)]


def _rows_within_clips(clip_id: np.ndarray) -> np.ndarray:
    """Index of each entry within its run of equal `clip_id`s (frames sorted by clip, then tick).

    row_i = i - first_j, with first_j the first index of entry i's clip.
    """
    n = clip_id.shape[0]
    starts = np.flatnonzero(np.r_[True, clip_id[1:] != clip_id[:-1]]) if n else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, n])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
