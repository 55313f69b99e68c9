"""SQLAlchemy 2.x ORM models of the takeover database (the schema the migrations create).

Tables: iterations, checkpoints, routes, episodes, takeovers, counterfactuals, clips, frames,
preference_pairs, training_rounds, training_metrics, ingest_attempts (the journal that makes episode writes atomic
with their clip files). Units are in the column names (`_m`, `_s`, `_mps`, `_rad`); times in UTC.
Changing anything here needs a new migration in storage/migrations/versions (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so that migrations can name what they alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(JSONB(), "postgresql")
KEY_LEN = 512  # natural keys: printable, built by storage.records
NAME_LEN = 128
CODE_LEN = 64
SHA256_HEX_LEN = 64
URI_LEN = 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JsonType, list[Any]: JsonType}


class Iteration(Base):
    """One DAgger/DPO iteration of a run: collect, train, evaluate, maybe promote."""

    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("run", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run: Mapped[str] = mapped_column(String(NAME_LEN))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(CODE_LEN), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    base_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    promoted_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notes: Mapped[str | None] = mapped_column(Text)


class Checkpoint(Base):
    """A policy's weights file, identified by its content (sha256); `parent` is what it was tuned from."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), unique=True)
    path: Mapped[str] = mapped_column(String(URI_LEN))
    kind: Mapped[str] = mapped_column(String(CODE_LEN), default="policy")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Route(Base):
    """A route of a route set (file), e.g. Bench2Drive route 1711 of routes_dev."""

    __tablename__ = "routes"
    __table_args__ = (UniqueConstraint("route_set", "route_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    route_set: Mapped[str] = mapped_column(String(NAME_LEN))
    route_id: Mapped[str] = mapped_column(String(CODE_LEN))
    town: Mapped[str] = mapped_column(String(CODE_LEN), index=True)
    scenario_type: Mapped[str] = mapped_column(String(NAME_LEN), index=True)  # first scenario, or "none"
    scenario_types: Mapped[list[Any]] = mapped_column(default=list)
    length_m: Mapped[float | None] = mapped_column(Float)


class Episode(Base):
    """One closed-loop drive of a route; `natural_key` makes re-ingesting it a no-op."""

    __tablename__ = "episodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    natural_key: Mapped[str] = mapped_column(String(KEY_LEN), unique=True)
    run: Mapped[str] = mapped_column(String(NAME_LEN))
    iteration_id: Mapped[int | None] = mapped_column(ForeignKey("iterations.id"), index=True)
    route_pk: Mapped[int] = mapped_column(ForeignKey("routes.id"), index=True)
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    backend: Mapped[str] = mapped_column(String(CODE_LEN))
    phase: Mapped[str] = mapped_column(String(CODE_LEN))
    seed: Mapped[int] = mapped_column(BigInteger)
    repetition: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(CODE_LEN))
    driving_score: Mapped[float | None] = mapped_column(Float)
    route_completion: Mapped[float | None] = mapped_column(Float)  # percent
    infraction_penalty: Mapped[float | None] = mapped_column(Float)
    success: Mapped[bool | None] = mapped_column(Boolean)
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    infractions: Mapped[list[Any]] = mapped_column(default=list)
    distance_m: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    n_frames: Mapped[int] = mapped_column(Integer)
    n_takeovers: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    route: Mapped[Route] = relationship()
    takeovers: Mapped[list[Takeover]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", passive_deletes=True, order_by="Takeover.seq"
    )
    clips: Mapped[list[Clip]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", passive_deletes=True, order_by="Clip.seq"
    )


class Takeover(Base):
    """One disengagement: the expert took over from the policy at `frame`."""

    __tablename__ = "takeovers"
    __table_args__ = (
        UniqueConstraint("episode_id", "seq"),
        Index("ix_takeovers_reason_speed", "reason", "speed_mps"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # order within the episode, from 0
    frame: Mapped[int] = mapped_column(Integer)
    time_s: Mapped[float] = mapped_column(Float)
    x_m: Mapped[float] = mapped_column(Float)
    y_m: Mapped[float] = mapped_column(Float)
    yaw_rad: Mapped[float | None] = mapped_column(Float)
    speed_mps: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(CODE_LEN))
    scenario_type: Mapped[str | None] = mapped_column(String(NAME_LEN))  # scenario active at the trigger
    ttc_s: Mapped[float | None] = mapped_column(Float)  # time to collision, when the monitor computed one
    severity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    plan_frame: Mapped[str] = mapped_column(String(16))  # "ego" or "world"
    policy_plan: Mapped[list[Any]] = mapped_column(default=list)  # [[x, y, speed], ...]
    expert_plan: Mapped[list[Any]] = mapped_column(default=list)
    handback_frame: Mapped[int | None] = mapped_column(Integer)
    handback_time_s: Mapped[float | None] = mapped_column(Float)

    episode: Mapped[Episode] = relationship(back_populates="takeovers")


class Counterfactual(Base):
    """What the policy did, in a replay of its episode, when one takeover was not carried out.

    The replay drives the episode again up to the takeover's trigger and lets the policy keep the
    wheel for `horizon_s` (takeover/counterfactual.py). `necessary` is None when the replay did not
    reach the same trigger (a simulator that does not replay deterministically).
    """

    __tablename__ = "counterfactuals"
    __table_args__ = (UniqueConstraint("takeover_id", "config_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    takeover_id: Mapped[int] = mapped_column(ForeignKey("takeovers.id", ondelete="CASCADE"), index=True)
    config_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))  # of the replay's settings
    horizon_s: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(
        String(CODE_LEN)
    )  # an infraction kind, "standing", "clear", "diverged"
    necessary: Mapped[bool | None] = mapped_column(Boolean)
    first_event_s: Mapped[float | None] = mapped_column(Float)  # seconds after the trigger
    progress_m: Mapped[float] = mapped_column(Float)  # metres the policy drove in the window
    events: Mapped[list[Any]] = mapped_column(default=list)  # [{"kind": ..., "after_s": ...}, ...]
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Clip(Base):
    """A window of frames whose arrays live in the clip store at `uri` (relative to the clip root)."""

    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("episode_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    takeover_id: Mapped[int | None] = mapped_column(
        ForeignKey("takeovers.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(CODE_LEN), index=True)
    start_frame: Mapped[int] = mapped_column(Integer)
    end_frame: Mapped[int] = mapped_column(Integer)  # exclusive
    n_frames: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(String(URI_LEN), unique=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    arrays: Mapped[dict[str, Any]] = mapped_column(default=dict)  # name -> {"shape": [...], "dtype": str}

    episode: Mapped[Episode] = relationship(back_populates="clips")


class Frame(Base):
    """One simulator tick inside a clip, for SQL over time, speed and who drove."""

    __tablename__ = "frames"

    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True)
    frame: Mapped[int] = mapped_column(Integer, primary_key=True)  # episode tick index
    time_s: Mapped[float] = mapped_column(Float)
    ego_speed_mps: Mapped[float] = mapped_column(Float)
    driver: Mapped[int] = mapped_column(SmallInteger)  # 0 policy, 1 expert
    is_takeover: Mapped[bool] = mapped_column(Boolean)  # a takeover triggered on this tick
    x_m: Mapped[float | None] = mapped_column(Float)
    y_m: Mapped[float | None] = mapped_column(Float)


class PreferencePair(Base):
    """A DPO pair at one state: `chosen` (e.g. the expert's plan) preferred over `rejected` (the policy's)."""

    __tablename__ = "preference_pairs"
    __table_args__ = (UniqueConstraint("episode_id", "frame", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    takeover_id: Mapped[int | None] = mapped_column(
        ForeignKey("takeovers.id", ondelete="CASCADE"), index=True
    )
    clip_id: Mapped[int | None] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    frame: Mapped[int] = mapped_column(Integer)
    time_s: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(CODE_LEN))  # how the pair was made, e.g. "expert_vs_policy"
    chosen: Mapped[list[Any]] = mapped_column()
    rejected: Mapped[list[Any]] = mapped_column()
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRound(Base):
    """One BC / DAgger / DPO training job: checkpoint in, checkpoint out, its metrics."""

    __tablename__ = "training_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    natural_key: Mapped[str] = mapped_column(String(KEY_LEN), unique=True)
    iteration_id: Mapped[int | None] = mapped_column(ForeignKey("iterations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(CODE_LEN))
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    input_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    output_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    status: Mapped[str] = mapped_column(String(CODE_LEN))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # final values, name -> float
    n_samples: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingMetric(Base):
    """One point of a training curve (e.g. loss at step 1200) of a round."""

    __tablename__ = "training_metrics"

    round_id: Mapped[int] = mapped_column(
        ForeignKey("training_rounds.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class IngestAttempt(Base):
    """Journal of an episode ingest in progress: its clip folder, until the episode's rows commit.

    The row is committed before the first clip file is written and deleted in the same transaction as
    the episode's rows. A row left behind means the writer died between writing files and committing;
    recovery claims the row, deletes the folder, then the row (see Store.recover_orphans).
    """

    __tablename__ = "ingest_attempts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4 hex with dashes
    natural_key: Mapped[str] = mapped_column(String(KEY_LEN))
    clip_dir: Mapped[str] = mapped_column(String(URI_LEN))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # Set by recovery before it deletes the folder; the writer's commit then finds its row claimed and
    # rolls back, so an episode never commits rows whose files recovery is deleting.
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
