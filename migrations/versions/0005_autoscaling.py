"""model endpoints: last_request_at (the demand signal of scale to zero and back)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_endpoints", sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_endpoints") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("last_request_at")
