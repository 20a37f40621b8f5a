"""add session tokens to accounts

Revision ID: 7e4a1b9c3d2f
Revises: 5c2d9e1f7a3b
Create Date: 2026-12-04 17:25:00

"""
from alembic import op
import sqlalchemy as sa


revision = '7e4a1b9c3d2f'
down_revision = '5c2d9e1f7a3b'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_token', sa.String(length=64), nullable=True))
    # Every existing account gets its own random token, which also ends its old sessions.
    op.execute("UPDATE users SET session_token = lower(hex(randomblob(16)))")
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('session_token', existing_type=sa.String(length=64), nullable=False)


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_token')
