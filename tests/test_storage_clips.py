"""Clip store: checksums verified on read, corruption and loss detected, deterministic encoding, sweeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from postgres import *  # noqa: F403  (fixtures: db_url, store, clip_root, ...)
from postgres import make_clip_arrays, make_episode

from storage.clip_format import validate_clip_arrays
from storage.clip_store import ClipStore, decode_arrays, encode_arrays, sha256_hex
from storage.errors import ClipCorruptError, ClipNotFoundError, RecordError
from storage.store import Store


def _clip_file(store: Store, clip_root: Path, clip_id: int) -> Path:
    return clip_root / store.clip_info(clip_id).uri


def test_flipped_byte_is_detected_by_the_checksum(store: Store, clip_root: Path) -> None:
    # given a stored clip whose file then has one byte changed on disk
    store.ingest_episode(*make_episode(1))
    path = _clip_file(store, clip_root, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # when it is loaded, then the corruption is reported with the clip and the fix
    with pytest.raises(ClipCorruptError, match=r"clip 2 file .* is corrupt.*re-run") as info:
        store.load_clip(2)
    assert str(path) in str(info.value)
    # and the other clips still load
    assert set(store.load_clip(1)) >= {"time_s", "ego_pose"}


def test_truncated_and_missing_files_are_reported(store: Store, clip_root: Path) -> None:
    store.ingest_episode(*make_episode(2))
    truncated = _clip_file(store, clip_root, 1)
    truncated.write_bytes(truncated.read_bytes()[:100])
    _clip_file(store, clip_root, 3).unlink()
    with pytest.raises(ClipCorruptError):
        store.load_clip(1)
    with pytest.raises(ClipNotFoundError, match="missing"):
        store.load_clip(3)
    with pytest.raises(ClipNotFoundError, match="no clip with id 99"):
        store.load_clip(99)
    # verify walks every clip and lists both problems
    report = store.verify_clips()
    assert not report.ok and report.checked == 4
    assert [clip_id for clip_id, _ in report.corrupt] == [1]
    assert [clip_id for clip_id, _ in report.missing] == [3]


def test_encoding_is_deterministic_and_lossless() -> None:
    arrays = make_clip_arrays(40, 20, 10, seed=3)
    first, second = encode_arrays(arrays), encode_arrays(dict(reversed(list(arrays.items()))))
    assert first == second and sha256_hex(first) == sha256_hex(second)
    decoded = decode_arrays(first)
    for key, value in arrays.items():
        np.testing.assert_array_equal(decoded[key], value)
        assert decoded[key].dtype == value.dtype
    # deflate earns its keep on the repetitive parts (extents, kinds, validity)
    raw_bytes = sum(v.nbytes for v in arrays.values())
    assert len(encode_arrays(arrays, compression_level=9)) < raw_bytes


def test_sweep_removes_folders_without_rows_and_keeps_stored_ones(store: Store, clip_root: Path) -> None:
    store.ingest_episode(*make_episode(4))
    stray = "episodes/zz/zzzz/stray-attempt/000-takeover.npz"
    ClipStore(str(clip_root)).write(stray, b"left over by a crashed writer")
    assert store.verify_clips().stray_dirs == ["episodes/zz/zzzz/stray-attempt"]
    # recovery without sweep only reads the journal, which does not know the stray folder
    assert store.recover_orphans().removed_dirs == []
    report = store.recover_orphans(sweep=True)
    assert report.removed_dirs == ["episodes/zz/zzzz/stray-attempt"]
    assert store.verify_clips().ok and len(store.load_clip(4)) > 0


def test_clip_paths_cannot_escape_the_root(clip_root: Path) -> None:
    clips = ClipStore(str(clip_root))
    with pytest.raises(ClipNotFoundError, match="escapes"):
        clips.read("../../etc/passwd")


def test_documented_shapes_are_checked_across_keys() -> None:
    arrays = make_clip_arrays(0, 10, 5, seed=1)
    assert validate_clip_arrays(arrays) == 10
    arrays["expert_plan"] = arrays["expert_plan"][:, :3]  # P differs from policy_plan's
    with pytest.raises(RecordError, match="P="):
        validate_clip_arrays(arrays)
    with pytest.raises(RecordError, match="time_s"):
        validate_clip_arrays({"ego_speed": np.zeros(3)})
