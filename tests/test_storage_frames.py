"""Frame numbering of strided clips (demonstrations stored every n-th tick)."""

from __future__ import annotations

import numpy as np
from postgres import *  # noqa: F403  (fixtures: db_url, store, clip_root, ...)
from postgres import make_clip_arrays, make_episode
from sqlalchemy import text

from storage.records import ClipRecord
from storage.store import Store

STRIDE = 5


def test_strided_clip_frames_keep_their_simulator_ticks(store: Store) -> None:
    # Given an episode whose only clip holds every 5th tick from tick 100, with a `frame` array
    episode, _, _ = make_episode(seed=7, n_takeovers=0)
    arrays = make_clip_arrays(start_frame=100, n_frames=12, expert_from=0, seed=7)
    arrays["frame"] = 100 + STRIDE * np.arange(12)
    clip = ClipRecord(kind="demo", start_frame=100, arrays=arrays)

    # When it is ingested
    store.ingest_episode(episode, (), [clip])

    # Then the frames table and the clip's end frame carry the real ticks, not 100..111
    with store.engine.connect() as conn:
        frames = [r[0] for r in conn.execute(text("SELECT frame FROM frames ORDER BY frame"))]
        end_frame = conn.execute(text("SELECT end_frame FROM clips")).scalar_one()
    assert frames == list(range(100, 160, STRIDE))
    assert end_frame == 156
