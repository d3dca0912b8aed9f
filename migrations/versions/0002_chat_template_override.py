"""model endpoints: chat_template_override (created 2026-11-29 22:00:00)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"


def upgrade() -> None:
    op.add_column("model_endpoints", sa.Column("chat_template_override", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_endpoints") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("chat_template_override")
