"""Counterfactuals: per takeover, what the policy did in a replay where that takeover was not made.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Frozen: types are spelled out here, not imported from storage.models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "counterfactuals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("takeover_id", sa.Integer(), nullable=False),
        sa.Column("config_sha256", sa.String(length=64), nullable=False),
        sa.Column("horizon_s", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("necessary", sa.Boolean(), nullable=True),
        sa.Column("first_event_s", sa.Float(), nullable=True),
        sa.Column("progress_m", sa.Float(), nullable=False),
        sa.Column("events", JSON_TYPE, nullable=False),
        sa.Column("config", JSON_TYPE, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["takeover_id"],
            ["takeovers.id"],
            name=op.f("fk_counterfactuals_takeover_id_takeovers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counterfactuals")),
        sa.UniqueConstraint(
            "takeover_id", "config_sha256", name=op.f("uq_counterfactuals_takeover_id_config_sha256")
        ),
    )
    op.create_index("ix_counterfactuals_takeover_id", "counterfactuals", ["takeover_id"])


def downgrade() -> None:
    op.drop_index("ix_counterfactuals_takeover_id", table_name="counterfactuals")
    op.drop_table("counterfactuals")
