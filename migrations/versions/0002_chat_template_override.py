"""model endpoints: chat_template_override

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_endpoints", sa.Column("chat_template_override", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_endpoints") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("chat_template_override")
