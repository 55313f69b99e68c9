"""Errors of the takeover database and clip store, each one clear line naming the problem and the fix.

`storage` may not import `carla_bridge`, so `StorageError` derives from `Exception`; the `takeover`
command line catches it beside `TakeoverError`. Every message that names a database URL masks the
password (see `storage.url.mask_url`).
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage error reported to a user as one line."""


class ConfigError(StorageError):
    """The storage configuration is unusable (bad URL, password in a committed file, bad clip root)."""


class DatabaseUnreachableError(StorageError):
    """The database server or file cannot be opened."""


class SchemaError(StorageError):
    """The database schema is missing, behind, or ahead of this code's migrations."""


class RecordError(StorageError):
    """An ingest record is invalid (bad arrays, unknown checkpoint, inconsistent frame ranges)."""


class EpisodeConflictError(StorageError):
    """An episode with the same natural key exists and the caller asked not to keep it."""


class ClipNotFoundError(StorageError):
    """No clip row with that id, or the clip's file is missing from the clip store."""


class ClipCorruptError(StorageError):
    """A clip file's bytes do not match the checksum recorded in the database."""


class QueryRefusedError(StorageError):
    """`takeover db query` refused or failed a statement (writes are not allowed, SQL error)."""
