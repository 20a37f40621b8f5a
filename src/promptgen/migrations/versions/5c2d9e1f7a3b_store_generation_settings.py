"""store generation settings per prediction

Revision ID: 5c2d9e1f7a3b
Revises: e0bbb2ab9616
Create Date: 2026-12-04 17:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '5c2d9e1f7a3b'
down_revision = 'e0bbb2ab9616'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings', sa.JSON(), server_default='{}', nullable=False))


def downgrade():
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('settings')
