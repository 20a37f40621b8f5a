"""never reuse the ids of accounts, prompts and predictions

Revision ID: 9a3f6c2e8b1d
Revises: 7e4a1b9c3d2f
Create Date: 2026-12-04 17:30:00

"""
from alembic import op


revision = '9a3f6c2e8b1d'
down_revision = '7e4a1b9c3d2f'
branch_labels = None
depends_on = None

TABLES = ('users', 'prompts', 'predictions')


def upgrade():
    # SQLite only sets AUTOINCREMENT when a table is created, so batch mode copies each
    # table into a new one that has it.
    for table in TABLES:
        with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_autoincrement': True}):
            pass


def downgrade():
    for table in reversed(TABLES):
        with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_autoincrement': False}):
            pass
