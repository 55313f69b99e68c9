"""Storage configuration schema (OmegaConf structured config; YAML of the same in conf/storage.yaml).

`storage` cannot import `carla_bridge`, so the schema lives here and callers load it with
`carla_bridge.config.load_config(StorageConfig, "storage", overrides)`. The environment variables
`TAKEOVER_DB_URL` and `TAKEOVER_CLIP_ROOT` override `db_url` and `clip_root` (see `storage.url`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Zero set-up defaults: a SQLite file and a clip folder under the (git-ignored) runs/ directory.
DEFAULT_DB_URL = "sqlite:///runs/takeover.db"
DEFAULT_CLIP_ROOT = "runs/clips"


@dataclass
class ClipVideoConfig:
    """Top-down rendering of a clip by `takeover db export-clip --video`."""

    width_px: int = 640
    height_px: int = 640
    px_per_m: float = 8.0  # pixels per metre of world
    ahead_m: float = 12.0  # the view centre lies this far ahead of the ego, metres
    fps: float = 20.0  # video frames per second; 20 = real time at the 20 Hz simulator tick
    codec: str = "mp4v"  # OpenCV fourcc; mp4v is available in every opencv-python build
    plan_line_px: int = 2  # thickness of the policy / expert plan polylines, pixels


@dataclass
class StorageConfig:
    # SQLAlchemy URL; no password here (a committed file): use TAKEOVER_DB_URL, PGPASSWORD or ~/.pgpass.
    db_url: str = DEFAULT_DB_URL
    clip_root: str = DEFAULT_CLIP_ROOT  # local folder or any fsspec URL (s3://..., memory://...)
    auto_upgrade: bool = True  # bring an empty or older database to the head migration on open
    connect_timeout_s: int = 5  # PostgreSQL connect timeout, seconds
    sqlite_busy_timeout_s: float = 60.0  # how long a SQLite writer waits for another writer, seconds
    query_timeout_s: float = 60.0  # statement timeout of `takeover db query`, seconds
    query_max_rows: int = 200  # rows printed by `takeover db query` as a table (CSV prints all)
    clip_compression_level: int = 6  # zlib level 0-9 of clip .npz members
    fsync_clips: bool = True  # flush clip files to disk before the episode's rows commit
    orphan_grace_s: float = 3600.0  # unfinished ingests older than this are cleaned up, seconds
    video: ClipVideoConfig = field(default_factory=ClipVideoConfig)
