"""Initial schema: every table of storage.models as of the first release, plus the V1 SQL views.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Frozen: types are spelled out here (not imported from storage.models) and the views come from the
frozen `VIEWS_V1` constant, so later changes to the models or views never rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from storage.views import VIEWS_V1

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("config", JSON_TYPE, nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["checkpoints.id"], name=op.f("fk_checkpoints_parent_id_checkpoints")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
        sa.UniqueConstraint("sha256", name=op.f("uq_checkpoints_sha256")),
    )
    op.create_index("ix_checkpoints_parent_id", "checkpoints", ["parent_id"])
    op.create_table(
        "ingest_attempts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("natural_key", sa.String(length=512), nullable=False),
        sa.Column("clip_dir", sa.String(length=1024), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_attempts")),
    )
    op.create_index("ix_ingest_attempts_started_at", "ingest_attempts", ["started_at"])
    op.create_table(
        "routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("route_set", sa.String(length=128), nullable=False),
        sa.Column("route_id", sa.String(length=64), nullable=False),
        sa.Column("town", sa.String(length=64), nullable=False),
        sa.Column("scenario_type", sa.String(length=128), nullable=False),
        sa.Column("scenario_types", JSON_TYPE, nullable=False),
        sa.Column("length_m", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routes")),
        sa.UniqueConstraint("route_set", "route_id", name=op.f("uq_routes_route_set_route_id")),
    )
    op.create_index("ix_routes_scenario_type", "routes", ["scenario_type"])
    op.create_index("ix_routes_town", "routes", ["town"])
    op.create_table(
        "iterations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run", sa.String(length=128), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("config", JSON_TYPE, nullable=False),
        sa.Column("base_checkpoint_id", sa.Integer(), nullable=True),
        sa.Column("promoted_checkpoint_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["base_checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_iterations_base_checkpoint_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["promoted_checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_iterations_promoted_checkpoint_id_checkpoints"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iterations")),
        sa.UniqueConstraint("run", "number", name=op.f("uq_iterations_run_number")),
    )
    op.create_table(
        "episodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("natural_key", sa.String(length=512), nullable=False),
        sa.Column("run", sa.String(length=128), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=True),
        sa.Column("route_pk", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=True),
        sa.Column("backend", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("repetition", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("driving_score", sa.Float(), nullable=True),
        sa.Column("route_completion", sa.Float(), nullable=True),
        sa.Column("infraction_penalty", sa.Float(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("scores", JSON_TYPE, nullable=False),
        sa.Column("infractions", JSON_TYPE, nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("n_takeovers", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"], ["checkpoints.id"], name=op.f("fk_episodes_checkpoint_id_checkpoints")
        ),
        sa.ForeignKeyConstraint(
            ["iteration_id"], ["iterations.id"], name=op.f("fk_episodes_iteration_id_iterations")
        ),
        sa.ForeignKeyConstraint(["route_pk"], ["routes.id"], name=op.f("fk_episodes_route_pk_routes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_episodes")),
        sa.UniqueConstraint("natural_key", name=op.f("uq_episodes_natural_key")),
    )
    op.create_index("ix_episodes_checkpoint_id", "episodes", ["checkpoint_id"])
    op.create_index("ix_episodes_iteration_id", "episodes", ["iteration_id"])
    op.create_index("ix_episodes_route_pk", "episodes", ["route_pk"])
    op.create_table(
        "training_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("natural_key", sa.String(length=512), nullable=False),
        sa.Column("iteration_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("input_checkpoint_id", sa.Integer(), nullable=True),
        sa.Column("output_checkpoint_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("config", JSON_TYPE, nullable=False),
        sa.Column("metrics", JSON_TYPE, nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["input_checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_training_rounds_input_checkpoint_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["iteration_id"], ["iterations.id"], name=op.f("fk_training_rounds_iteration_id_iterations")
        ),
        sa.ForeignKeyConstraint(
            ["output_checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_training_rounds_output_checkpoint_id_checkpoints"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_rounds")),
        sa.UniqueConstraint("natural_key", name=op.f("uq_training_rounds_natural_key")),
    )
    op.create_index("ix_training_rounds_iteration_id", "training_rounds", ["iteration_id"])
    op.create_index("ix_training_rounds_output_checkpoint_id", "training_rounds", ["output_checkpoint_id"])
    op.create_table(
        "takeovers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("x_m", sa.Float(), nullable=False),
        sa.Column("y_m", sa.Float(), nullable=False),
        sa.Column("yaw_rad", sa.Float(), nullable=True),
        sa.Column("speed_mps", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("scenario_type", sa.String(length=128), nullable=True),
        sa.Column("ttc_s", sa.Float(), nullable=True),
        sa.Column("severity", JSON_TYPE, nullable=False),
        sa.Column("plan_frame", sa.String(length=16), nullable=False),
        sa.Column("policy_plan", JSON_TYPE, nullable=False),
        sa.Column("expert_plan", JSON_TYPE, nullable=False),
        sa.Column("handback_frame", sa.Integer(), nullable=True),
        sa.Column("handback_time_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["episodes.id"], name=op.f("fk_takeovers_episode_id_episodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_takeovers")),
        sa.UniqueConstraint("episode_id", "seq", name=op.f("uq_takeovers_episode_id_seq")),
    )
    op.create_index("ix_takeovers_episode_id", "takeovers", ["episode_id"])
    op.create_index("ix_takeovers_reason_speed", "takeovers", ["reason", "speed_mps"])
    op.create_table(
        "training_metrics",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["training_rounds.id"],
            name=op.f("fk_training_metrics_round_id_training_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("round_id", "name", "step", name=op.f("pk_training_metrics")),
    )
    op.create_table(
        "clips",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("takeover_id", sa.Integer(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("start_frame", sa.Integer(), nullable=False),
        sa.Column("end_frame", sa.Integer(), nullable=False),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("uri", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("arrays", JSON_TYPE, nullable=False),
        sa.ForeignKeyConstraint(
            ["episode_id"], ["episodes.id"], name=op.f("fk_clips_episode_id_episodes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["takeover_id"], ["takeovers.id"], name=op.f("fk_clips_takeover_id_takeovers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clips")),
        sa.UniqueConstraint("episode_id", "seq", name=op.f("uq_clips_episode_id_seq")),
        sa.UniqueConstraint("uri", name=op.f("uq_clips_uri")),
    )
    op.create_index("ix_clips_episode_id", "clips", ["episode_id"])
    op.create_index("ix_clips_kind", "clips", ["kind"])
    op.create_index("ix_clips_takeover_id", "clips", ["takeover_id"])
    op.create_table(
        "frames",
        sa.Column("clip_id", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("ego_speed_mps", sa.Float(), nullable=False),
        sa.Column("driver", sa.SmallInteger(), nullable=False),
        sa.Column("is_takeover", sa.Boolean(), nullable=False),
        sa.Column("x_m", sa.Float(), nullable=True),
        sa.Column("y_m", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["clip_id"], ["clips.id"], name=op.f("fk_frames_clip_id_clips"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("clip_id", "frame", name=op.f("pk_frames")),
    )
    op.create_table(
        "preference_pairs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("episode_id", sa.Integer(), nullable=False),
        sa.Column("takeover_id", sa.Integer(), nullable=True),
        sa.Column("clip_id", sa.Integer(), nullable=True),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("chosen", JSON_TYPE, nullable=False),
        sa.Column("rejected", JSON_TYPE, nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clip_id"], ["clips.id"], name=op.f("fk_preference_pairs_clip_id_clips"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["episode_id"],
            ["episodes.id"],
            name=op.f("fk_preference_pairs_episode_id_episodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["takeover_id"],
            ["takeovers.id"],
            name=op.f("fk_preference_pairs_takeover_id_takeovers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preference_pairs")),
        sa.UniqueConstraint(
            "episode_id", "frame", "source", name=op.f("uq_preference_pairs_episode_id_frame_source")
        ),
    )
    op.create_index("ix_preference_pairs_clip_id", "preference_pairs", ["clip_id"])
    op.create_index("ix_preference_pairs_episode_id", "preference_pairs", ["episode_id"])
    op.create_index("ix_preference_pairs_takeover_id", "preference_pairs", ["takeover_id"])
    for view in VIEWS_V1:
        op.execute(view.create_sql())


def downgrade() -> None:
    for view in reversed(VIEWS_V1):
        op.execute(view.drop_sql())
    op.drop_index("ix_preference_pairs_takeover_id", table_name="preference_pairs")
    op.drop_index("ix_preference_pairs_episode_id", table_name="preference_pairs")
    op.drop_index("ix_preference_pairs_clip_id", table_name="preference_pairs")
    op.drop_table("preference_pairs")
    op.drop_table("frames")
    op.drop_index("ix_clips_takeover_id", table_name="clips")
    op.drop_index("ix_clips_kind", table_name="clips")
    op.drop_index("ix_clips_episode_id", table_name="clips")
    op.drop_table("clips")
    op.drop_table("training_metrics")
    op.drop_index("ix_takeovers_reason_speed", table_name="takeovers")
    op.drop_index("ix_takeovers_episode_id", table_name="takeovers")
    op.drop_table("takeovers")
    op.drop_index("ix_training_rounds_output_checkpoint_id", table_name="training_rounds")
    op.drop_index("ix_training_rounds_iteration_id", table_name="training_rounds")
    op.drop_table("training_rounds")
    op.drop_index("ix_episodes_route_pk", table_name="episodes")
    op.drop_index("ix_episodes_iteration_id", table_name="episodes")
    op.drop_index("ix_episodes_checkpoint_id", table_name="episodes")
    op.drop_table("episodes")
    op.drop_table("iterations")
    op.drop_index("ix_routes_town", table_name="routes")
    op.drop_index("ix_routes_scenario_type", table_name="routes")
    op.drop_table("routes")
    op.drop_index("ix_ingest_attempts_started_at", table_name="ingest_attempts")
    op.drop_table("ingest_attempts")
    op.drop_index("ix_checkpoints_parent_id", table_name="checkpoints")
    op.drop_table("checkpoints")
