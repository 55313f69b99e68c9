"""The takeover database and clip store: SQLAlchemy models, Alembic migrations, SQL views, atomic ingest.

Entry point: `Store` (storage.store). Records that cross into storage live in storage.records; the
clip arrays' keys in storage.clip_format; errors in storage.errors. Knows nothing of carla_bridge,
experts, takeover or flows. See storage/README.md for the schema, the views and example queries.
"""

from storage.errors import StorageError
from storage.records import (
    CheckpointRecord,
    ClipInfo,
    ClipRecord,
    EpisodeRecord,
    FrameTable,
    MetricPoint,
    PreferencePairInfo,
    PreferencePairRecord,
    RouteRecord,
    TakeoverInfo,
    TakeoverRecord,
    TrainingRoundRecord,
)
from storage.store import Store

__all__ = [
    "CheckpointRecord",
    "ClipInfo",
    "ClipRecord",
    "EpisodeRecord",
    "FrameTable",
    "MetricPoint",
    "PreferencePairInfo",
    "PreferencePairRecord",
    "RouteRecord",
    "StorageError",
    "Store",
    "TakeoverInfo",
    "TakeoverRecord",
    "TrainingRoundRecord",
]
