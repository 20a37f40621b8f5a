"""keep a copy of the prompt's text and photo in each prediction

Revision ID: 7b78a3efd429
Revises: b2c8d4e6f1a9
Create Date: 2026-12-05 10:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '7b78a3efd429'
down_revision = 'b2c8d4e6f1a9'
branch_labels = None
depends_on = None

#: Batch mode copies the table, and the copy must keep AUTOINCREMENT.
KEEP_AUTOINCREMENT = {'sqlite_autoincrement': True}


def upgrade():
    # Existing rows keep NULL: the app then uses the prompt's current text and photo for them.
    with op.batch_alter_table('predictions', table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column('input_text', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('input_image', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('input_mime', sa.String(length=32), nullable=True))


def downgrade():
    with op.batch_alter_table('predictions', table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_column('input_mime')
        batch_op.drop_column('input_image')
        batch_op.drop_column('input_text')
