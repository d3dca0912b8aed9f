"""registry: endpoints, api keys, async tasks (created 2026-11-22 02:24:14)."""

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_owner"), ["owner"], unique=False)

    op.create_table(
        "model_endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("available_workers", sa.Integer(), nullable=False),
        sa.Column("unavailable_workers", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("inference_framework", sa.String(length=64), nullable=False),
        sa.Column("inference_framework_image_tag", sa.String(length=128), nullable=False),
        sa.Column("num_shards", sa.Integer(), nullable=False),
        sa.Column("quantize", sa.String(length=32), nullable=True),
        sa.Column("checkpoint_path", sa.Text(), nullable=True),
        sa.Column("endpoint_type", sa.String(length=16), nullable=False),
        sa.Column("cpus", sa.String(length=32), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("memory", sa.String(length=32), nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=True),
        sa.Column("storage", sa.String(length=32), nullable=True),
        sa.Column("nodes_per_worker", sa.Integer(), nullable=False),
        sa.Column("min_workers", sa.Integer(), nullable=False),
        sa.Column("max_workers", sa.Integer(), nullable=False),
        sa.Column("per_worker", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("public_inference", sa.Boolean(), nullable=False),
        sa.Column("high_priority", sa.Boolean(), nullable=False),
        sa.Column("post_inference_hooks", sa.JSON(), nullable=False),
        sa.Column("default_callback_url", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('UPDATE_PENDING', 'UPDATE_IN_PROGRESS', 'READY', 'UPDATE_FAILED', 'DELETE_IN_PROGRESS')",
            name="ck_model_endpoints_status",
        ),
        sa.CheckConstraint("gpus >= 0", name="ck_model_endpoints_gpus"),
        sa.CheckConstraint("max_workers >= min_workers AND max_workers >= 1", name="ck_model_endpoints_max_workers"),
        sa.CheckConstraint("min_workers >= 0", name="ck_model_endpoints_min_workers"),
        sa.CheckConstraint("num_shards >= 1", name="ck_model_endpoints_num_shards"),
        sa.CheckConstraint("per_worker >= 1", name="ck_model_endpoints_per_worker"),
        sa.CheckConstraint("revision >= 1", name="ck_model_endpoints_revision"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("model_endpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_endpoints_owner"), ["owner"], unique=False)

    op.create_table(
        "async_tasks",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=True),
        sa.Column("endpoint_name", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["model_endpoints.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("async_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_async_tasks_endpoint_id"), ["endpoint_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_async_tasks_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_async_tasks_owner"), ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("async_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_async_tasks_owner"))
        batch_op.drop_index(batch_op.f("ix_async_tasks_expires_at"))
        batch_op.drop_index(batch_op.f("ix_async_tasks_endpoint_id"))

    op.drop_table("async_tasks")
    with op.batch_alter_table("model_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_endpoints_owner"))

    op.drop_table("model_endpoints")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_owner"))

    op.drop_table("api_keys")
