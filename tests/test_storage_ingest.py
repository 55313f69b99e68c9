"""Episode ingest: round trip, idempotency, atomicity under injected errors and killed writers, concurrency."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from postgres import *  # noqa: F403  (fixtures: db_url, store, clip_root, ...)
from postgres import count_rows, fast_config, make_episode
from sqlalchemy import select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from storage.clip_store import ClipStore
from storage.errors import EpisodeConflictError, RecordError, StorageError
from storage.models import TrainingRound
from storage.records import (
    CheckpointRecord,
    ClipRecord,
    MetricPoint,
    PreferencePairRecord,
    RouteRecord,
    TrainingRoundRecord,
)
from storage.store import Store, _as_utc

EPISODE_TABLES = ("episodes", "takeovers", "clips", "frames")
CHILD_READY_TIMEOUT_S = 30.0
CONCURRENT_OWN_EPISODES = 5  # per writer
CONCURRENT_SHARED_EPISODES = 3  # ingested by both writers (same natural keys)
SHA_A = "a" * 64


def _assert_nothing_written(store: Store, clip_root: Path) -> None:
    for table in (*EPISODE_TABLES, "ingest_attempts"):
        assert count_rows(store, table) == 0, table
    assert ClipStore(str(clip_root)).list_files() == []


def test_round_trip_rows_frames_and_clip_arrays(store: Store) -> None:
    # given an episode with two takeovers and four clips
    episode, takeovers, clips = make_episode(7)
    # when it is ingested
    episode_id = store.ingest_episode(episode, takeovers, clips)
    # then rows, frames and arrays come back as written
    assert count_rows(store, "episodes") == 1
    assert count_rows(store, "takeovers") == 2
    assert count_rows(store, "clips") == 4
    assert count_rows(store, "frames") == sum(len(c.arrays["time_s"]) for c in clips)
    with store.engine.connect() as conn:
        triggers = (
            conn.execute(text("SELECT frame FROM frames WHERE is_takeover ORDER BY frame")).scalars().all()
        )
        expert_ticks = conn.execute(text("SELECT COUNT(*) FROM frames WHERE driver = 1")).scalar_one()
        plan = conn.execute(text("SELECT expert_plan, ttc_s, reason FROM takeovers ORDER BY seq")).first()
    assert triggers == [t.frame for t in takeovers]  # the takeover clips start on the trigger tick
    assert expert_ticks == sum(int(np.sum(c.arrays["driver"])) for c in clips)
    assert plan is not None and plan.ttc_s == pytest.approx(1.0) and plan.reason == takeovers[0].reason
    for clip_id, clip in enumerate(clips, start=1):
        info = store.clip_info(clip_id)
        assert info.episode_id == episode_id and info.kind == clip.kind
        assert info.end_frame - info.start_frame == len(clip.arrays["time_s"])
        loaded = store.load_clip(clip_id)
        assert set(loaded) == set(clip.arrays)
        for key, value in clip.arrays.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype


def test_reingesting_the_same_episode_is_a_no_op(store: Store, clip_root: Path) -> None:
    # given an ingested episode
    records = make_episode(11)
    first = store.ingest_episode(*records)
    files = ClipStore(str(clip_root)).list_files()
    # when the very same episode is ingested again (e.g. a retried flow task)
    second = store.ingest_episode(*records)
    # then the same id comes back and nothing was duplicated
    assert second == first
    assert count_rows(store, "episodes") == 1 and count_rows(store, "clips") == 4
    assert ClipStore(str(clip_root)).list_files() == files
    assert store.episode_id(records[0]) == first


def test_same_key_with_different_content_keeps_or_errors(store: Store) -> None:
    episode, takeovers, clips = make_episode(12)
    first = store.ingest_episode(episode, takeovers, clips)
    changed = make_episode(12, n_takeovers=1)
    # keep (default): the stored episode wins
    assert store.ingest_episode(*changed) == first
    # error: refuses loudly
    with pytest.raises(EpisodeConflictError, match="different content"):
        store.ingest_episode(*changed, on_conflict="error")
    # identical content is fine even with on_conflict="error"
    assert store.ingest_episode(episode, takeovers, clips, on_conflict="error") == first
    assert count_rows(store, "takeovers") == 2


def test_natural_key_separates_seed_phase_iteration_and_checkpoint(store: Store) -> None:
    store.record_checkpoint(CheckpointRecord(path="ckpt/a.pt", sha256=SHA_A))
    ids = {
        store.ingest_episode(*make_episode(1)),
        store.ingest_episode(*make_episode(2)),
        store.ingest_episode(*make_episode(1, phase="eval")),
        store.ingest_episode(*make_episode(1, iteration=1)),
        store.ingest_episode(*make_episode(1, iteration=None)),
        store.ingest_episode(*make_episode(1, checkpoint_sha256=SHA_A)),
    }
    assert len(ids) == 6 and count_rows(store, "episodes") == 6
    assert count_rows(store, "iterations") == 2 and count_rows(store, "routes") == 1


def test_unknown_checkpoint_writes_nothing(store: Store, clip_root: Path) -> None:
    with pytest.raises(RecordError, match="record_checkpoint"):
        store.ingest_episode(*make_episode(4, checkpoint_sha256="b" * 64))
    _assert_nothing_written(store, clip_root)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.update(driver=np.full(a["driver"].shape, 3, np.int8)), "only 0"),
        (lambda a: a.update(actor_kind=a["actor_kind"][:, :2]), "A="),
        (lambda a: a.update(extra=np.array([object()], dtype=object)), "dtype object"),
        (lambda a: a.pop("ego_speed"), "lack"),
    ],
)
def test_invalid_clip_arrays_write_nothing(store: Store, clip_root: Path, mutate: Any, message: str) -> None:
    episode, takeovers, clips = make_episode(5)
    arrays = dict(clips[-1].arrays)
    mutate(arrays)
    clips[-1] = ClipRecord(clips[-1].kind, clips[-1].start_frame, arrays, clips[-1].takeover_index)
    with pytest.raises(RecordError, match=message):
        store.ingest_episode(episode, takeovers, clips)
    _assert_nothing_written(store, clip_root)


def test_clip_outside_the_episode_is_refused(store: Store) -> None:
    episode, takeovers, clips = make_episode(5)
    late = ClipRecord("handback", episode.n_frames - 5, clips[0].arrays)
    with pytest.raises(RecordError, match="outside the episode"):
        store.ingest_episode(episode, takeovers, [*clips, late])


def test_error_between_clip_file_writes_leaves_no_partial_episode(
    store: Store, clip_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a clip store whose second file write fails (disk full, network error, ...)
    real_write = ClipStore.write
    calls = {"n": 0}

    def failing_write(self: ClipStore, relative: str, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_write(self, relative, data)

    monkeypatch.setattr(ClipStore, "write", failing_write)
    # when an episode is ingested, then the error surfaces
    with pytest.raises(OSError, match="No space"):
        store.ingest_episode(*make_episode(9))
    # and neither rows nor the first file nor the journal entry remain
    _assert_nothing_written(store, clip_root)
    monkeypatch.setattr(ClipStore, "write", real_write)
    assert store.ingest_episode(*make_episode(9)) == 1


class _FailBeforeCommit(Store):
    def _before_commit(self, session: Session, episode_id: int) -> None:
        raise RuntimeError("injected failure after every file and row was written")


def test_error_just_before_commit_leaves_no_partial_episode(db_url: URL, clip_root: Path) -> None:
    with _FailBeforeCommit(db_url, str(clip_root), fast_config()) as failing:
        with pytest.raises(RuntimeError, match="injected"):
            failing.ingest_episode(*make_episode(10))
        _assert_nothing_written(failing, clip_root)


class _HangBeforeCommit(Store):
    """Signals the parent, then waits to be killed with every file and row written but not committed."""

    ready_file: Path

    def _before_commit(self, session: Session, episode_id: int) -> None:
        self.ready_file.write_text(str(episode_id))
        time.sleep(CHILD_READY_TIMEOUT_S * 2)


def _ingest_and_hang(url: URL, clip_root: str, ready_file: Path) -> None:
    store = _HangBeforeCommit(url, clip_root, fast_config())
    store.ready_file = ready_file
    store.ingest_episode(*make_episode(21))


def _wait_for(path: Path, process: multiprocessing.process.BaseProcess) -> None:
    deadline = time.monotonic() + CHILD_READY_TIMEOUT_S
    while not path.exists():
        assert process.is_alive(), f"writer exited early with code {process.exitcode}"
        assert time.monotonic() < deadline, "writer never reached the commit"
        time.sleep(0.02)


def test_killed_writer_leaves_no_half_episode_and_recovery_removes_its_files(
    db_url: URL, clip_root: Path, tmp_path: Path
) -> None:
    # given a writer process killed (SIGKILL) after writing every clip file and row, before COMMIT
    ready = tmp_path / "ready"
    process = multiprocessing.get_context("fork").Process(
        target=_ingest_and_hang, args=(db_url, str(clip_root), ready)
    )
    process.start()
    _wait_for(ready, process)
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)
    assert process.exitcode == -signal.SIGKILL
    with Store(db_url, str(clip_root), fast_config()) as store:
        # then no row of the episode exists, only its journal entry and orphan files
        for table in EPISODE_TABLES:
            assert count_rows(store, table) == 0, table
        assert count_rows(store, "ingest_attempts") == 1
        assert ClipStore(str(clip_root)).list_files() != []
        # when recovery runs (the dead writer's pid is gone, so no grace period applies)
        report = store.recover_orphans()
        # then the files and the journal entry are gone, and the episode can be ingested again
        assert len(report.removed_dirs) == 1 and report.in_flight == 0
        _assert_nothing_written(store, clip_root)
        assert store.ingest_episode(*make_episode(21)) == store.episode_id(make_episode(21)[0])
        assert store.verify_clips().ok


def test_next_ingest_recovers_orphans_automatically(db_url: URL, clip_root: Path) -> None:
    # given a journal entry and files of a writer that died long ago on another host
    with Store(db_url, str(clip_root), fast_config()) as store:
        ClipStore(str(clip_root)).write("episodes/ab/abcd/dead-attempt/000-takeover.npz", b"half")
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ingest_attempts (id, natural_key, clip_dir, host, pid, started_at) "
                    "VALUES ('dead-attempt', 'k', 'episodes/ab/abcd/dead-attempt', 'elsewhere', 1, :t)"
                ),
                {"t": "2000-01-01 00:00:00"},
            )
    # when a new store ingests its first episode
    with Store(db_url, str(clip_root), fast_config()) as store:
        store.ingest_episode(*make_episode(30))
        # then the orphan is gone and the new episode is intact
        assert count_rows(store, "ingest_attempts") == 0
        assert not any("dead-attempt" in f for f in ClipStore(str(clip_root)).list_files())
        assert store.verify_clips().ok


def test_recent_unfinished_ingest_of_a_live_writer_is_left_alone(store: Store, clip_root: Path) -> None:
    # given a journal entry of a running writer on another host, started just now
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ingest_attempts (id, natural_key, clip_dir, host, pid, started_at) "
                "VALUES ('live', 'k', 'episodes/cd/cdef/live', 'other-host', 1, :t)"
            ),
            {"t": store_now()},
        )
    ClipStore(str(clip_root)).write("episodes/cd/cdef/live/000-takeover.npz", b"in progress")
    # when recovery runs with the default grace period
    report = store.recover_orphans()
    # then the in-flight ingest keeps its files
    assert report.removed_dirs == [] and report.in_flight == 1
    assert ClipStore(str(clip_root)).list_files() == ["episodes/cd/cdef/live/000-takeover.npz"]
    # but a zero grace period reclaims it
    assert store.recover_orphans(grace_s=0.0).removed_dirs == ["episodes/cd/cdef/live"]


def store_now() -> str:
    from storage.models import utcnow

    return utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")


CONCURRENT_START_TIMEOUT_S = 120.0  # generous: CI machines may be loaded


def _concurrent_writer(url: URL, clip_root: str, writer: int, barrier: Any) -> None:
    store = Store(url, clip_root, fast_config())
    batch = [make_episode(1000 * (writer + 1) + k, n_takeovers=1) for k in range(CONCURRENT_OWN_EPISODES)]
    batch += [make_episode(k, n_takeovers=1) for k in range(CONCURRENT_SHARED_EPISODES)]
    barrier.wait(CONCURRENT_START_TIMEOUT_S)
    for records in batch:
        store.ingest_episode(*records)
    store.close()


def test_two_processes_writing_at_once_lose_nothing(db_url: URL, clip_root: Path) -> None:
    # given two writer processes started together, each with its own episodes plus three shared ones
    # spawn, not fork: the test process may already run torch/numba/OpenMP threads that a fork copies
    # mid-lock.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    writers = [
        context.Process(target=_concurrent_writer, args=(db_url, str(clip_root), w, barrier))
        for w in range(2)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
    # then both finished and every episode is stored exactly once with all its rows and files
    assert [p.exitcode for p in writers] == [0, 0]
    expected = 2 * CONCURRENT_OWN_EPISODES + CONCURRENT_SHARED_EPISODES
    with Store(db_url, str(clip_root), fast_config()) as store:
        assert count_rows(store, "episodes") == expected
        assert count_rows(store, "takeovers") == expected
        assert count_rows(store, "clips") == 2 * expected
        assert count_rows(store, "frames") == 2 * expected * 20
        assert count_rows(store, "ingest_attempts") == 0
        report = store.verify_clips()
        assert report.ok and report.checked == 2 * expected


def test_memory_fsspec_clip_root(db_url: URL) -> None:
    root = f"memory://takeover-test-{os.getpid()}-{time.monotonic_ns()}"
    with Store(db_url, root, fast_config()) as store:
        _, _, clips = records = make_episode(3)
        store.ingest_episode(*records)
        np.testing.assert_array_equal(store.load_clip(2)["ego_pose"], clips[1].arrays["ego_pose"])
        assert store.verify_clips().ok


def test_preference_pairs_are_idempotent(store: Store) -> None:
    episode_id = store.ingest_episode(*make_episode(8))
    pairs = [
        PreferencePairRecord(
            episode_id, frame, frame * 0.05, [[1, 0, 0]], [[2, 0, 5]], takeover_id=1, clip_id=1
        )
        for frame in (100, 101, 102)
    ]
    first = store.add_preference_pairs(pairs)
    assert store.add_preference_pairs(pairs) == first and len(set(first)) == 3
    assert count_rows(store, "preference_pairs") == 3
    with pytest.raises(RecordError, match="not stored"):
        store.add_preference_pairs([PreferencePairRecord(999, 1, 0.05, [[0, 0]], [[1, 1]])])


def test_training_round_upserts_status_metrics_and_curves(store: Store) -> None:
    store.record_checkpoint(CheckpointRecord(path="a.pt", sha256=SHA_A))
    started = TrainingRoundRecord(
        "run-a", "dagger", "dagger-0", 0, SHA_A, None, "running", history=[MetricPoint("loss", 1, 0.9)]
    )
    round_id = store.record_training_round(started)
    store.record_checkpoint(CheckpointRecord(path="b.pt", sha256="b" * 64, parent_sha256=SHA_A))
    finished = TrainingRoundRecord(
        "run-a", "dagger", "dagger-0", 0, SHA_A, "b" * 64, "completed", metrics={"loss": 0.3},
        history=[MetricPoint("loss", 1, 0.8), MetricPoint("loss", 2, 0.3)],
    )  # fmt: skip
    assert store.record_training_round(finished) == round_id
    with store.engine.connect() as conn:
        status, output = conn.execute(text("SELECT status, output_checkpoint_id FROM training_rounds")).one()
        curve = conn.execute(text("SELECT step, value FROM training_metrics ORDER BY step")).all()
    assert status == "completed" and output == 2
    assert [tuple(p) for p in curve] == [(1, 0.8), (2, 0.3)]


def _dagger_1(status: str, started_at: datetime | None, finished_at: datetime | None) -> TrainingRoundRecord:
    return TrainingRoundRecord(
        "run-a", "dagger", "dagger-1", 1, SHA_A, None, status, started_at=started_at, finished_at=finished_at
    )


def test_a_restarted_round_keeps_the_start_of_its_last_attempt(store: Store) -> None:
    # Given a round that started, died with its process and was started again by a resumed iteration
    store.record_checkpoint(CheckpointRecord(path="a.pt", sha256=SHA_A))
    first, second = datetime(2026, 1, 1, 10, 0, tzinfo=UTC), datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    done = second + timedelta(minutes=12)
    store.record_training_round(_dagger_1("running", first, None))
    store.record_training_round(_dagger_1("running", second, None))
    store.record_training_round(_dagger_1("completed", second, done))
    # When a later record carries no start (as a resolved failure row does)
    store.record_training_round(_dagger_1("completed", None, done))
    # Then the row's duration is the last attempt's, not the time since the first one
    with Session(store.engine) as session:
        start, end = session.execute(select(TrainingRound.started_at, TrainingRound.finished_at)).one()
    assert [_as_utc(start), _as_utc(end)] == [second, done]


def test_checkpoint_hash_is_computed_from_the_file(store: Store, tmp_path: Path) -> None:
    weights = tmp_path / "policy.pt"
    weights.write_bytes(b"\x00weights" * 1000)
    first = store.record_checkpoint(CheckpointRecord(path=str(weights)))
    assert store.record_checkpoint(CheckpointRecord(path=str(weights))) == first
    with pytest.raises(RecordError, match="does not exist"):
        store.record_checkpoint(CheckpointRecord(path=str(tmp_path / "missing.pt")))


def test_iterations_are_get_or_create(store: Store) -> None:
    first = store.start_iteration("run-b", 3, config={"lr": 1e-4})
    assert store.start_iteration("run-b", 3) == first
    store.finish_iteration(first, status="promoted")
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM iterations")).scalar_one() == "promoted"


def test_bad_records_are_refused_before_any_write(store: Store, clip_root: Path) -> None:
    episode, takeovers, clips = make_episode(2)
    bad_route = RouteRecord("", "Town01")
    import dataclasses

    with pytest.raises(RecordError, match="route_id"):
        store.ingest_episode(dataclasses.replace(episode, route=bad_route), takeovers, clips)
    with pytest.raises(RecordError, match="outside"):
        store.ingest_episode(episode, [dataclasses.replace(takeovers[0], frame=10_000)], clips)
    with pytest.raises(RecordError, match="finite"):
        store.ingest_episode(dataclasses.replace(episode, distance_m=float("nan")), takeovers, clips)
    _assert_nothing_written(store, clip_root)


def test_storage_errors_are_exceptions_the_cli_catches() -> None:
    from storage.errors import ClipCorruptError, DatabaseUnreachableError, QueryRefusedError

    for error in (
        RecordError,
        EpisodeConflictError,
        ClipCorruptError,
        DatabaseUnreachableError,
        QueryRefusedError,
    ):
        assert issubclass(error, StorageError)
