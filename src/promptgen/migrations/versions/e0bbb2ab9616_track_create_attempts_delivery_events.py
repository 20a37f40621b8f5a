"""track create attempts, delivery events and expired outputs

Revision ID: e0bbb2ab9616
Revises: c0be8872f669
Create Date: 2026-12-04 16:56:34.448304

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e0bbb2ab9616'
down_revision = 'c0be8872f669'
branch_labels = None
depends_on = None


#: Placeholder for updated_at in rows that exist before the upgrade; the upgrade replaces it.
EPOCH = "1970-01-01 00:00:00"

NEW_PREDICTION_COLUMNS = ("sent_at", "create_attempts", "download_attempts", "output_expired", "updated_at")


# The columns are added with plain ALTER TABLE statements, not batch mode: batch mode copies
# and drops the predictions table, and with foreign keys on, dropping it would delete every
# webhook delivery through ON DELETE CASCADE.
def upgrade():
    op.add_column('predictions', sa.Column('sent_at', sa.DateTime(), nullable=True))
    op.add_column('predictions', sa.Column('create_attempts', sa.Integer(), server_default='0', nullable=False))
    op.add_column('predictions', sa.Column('download_attempts', sa.Integer(), server_default='0', nullable=False))
    op.add_column('predictions', sa.Column('output_expired', sa.Boolean(), server_default='0', nullable=False))
    op.add_column('predictions', sa.Column('updated_at', sa.DateTime(), server_default=EPOCH, nullable=False))
    op.create_index('ix_predictions_status_updated_at', 'predictions', ['status', 'updated_at'], unique=False)
    op.add_column('webhook_deliveries', sa.Column('event', sa.String(length=16), server_default='completed', nullable=False))

    op.execute("UPDATE predictions SET updated_at = COALESCE(completed_at, started_at, created_at)")
    op.execute("UPDATE predictions SET sent_at = created_at WHERE replicate_id IS NOT NULL")
    op.execute(
        "UPDATE webhook_deliveries SET event = CASE status"
        " WHEN 'starting' THEN 'start' WHEN 'processing' THEN 'logs' ELSE 'completed' END"
    )


def downgrade():
    op.drop_index('ix_predictions_status_updated_at', table_name='predictions')
    for column in NEW_PREDICTION_COLUMNS:
        op.execute(f"ALTER TABLE predictions DROP COLUMN {column}")
    op.execute("ALTER TABLE webhook_deliveries DROP COLUMN event")
