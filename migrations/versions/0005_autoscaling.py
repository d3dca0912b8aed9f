"""model endpoints: last_request_at (the demand signal of scale to zero and back) (created 2026-11-30 01:00:00)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"


def upgrade() -> None:
    op.add_column("model_endpoints", sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_endpoints") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("last_request_at")
