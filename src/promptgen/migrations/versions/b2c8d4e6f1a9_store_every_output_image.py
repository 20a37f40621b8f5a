"""store every output image of a prediction, with a preview

Revision ID: b2c8d4e6f1a9
Revises: 9a3f6c2e8b1d
Create Date: 2026-12-04 17:50:00

"""
import io
import json

from alembic import op
import sqlalchemy as sa
from PIL import Image


revision = 'b2c8d4e6f1a9'
down_revision = '9a3f6c2e8b1d'
branch_labels = None
depends_on = None

#: Batch mode copies the table, and the copy must keep AUTOINCREMENT.
KEEP_AUTOINCREMENT = {'sqlite_autoincrement': True}

#: Longest side of the previews made for images stored before this revision, in pixels.
PREVIEW_SIDE = 512


def make_preview(data):
    image = Image.open(io.BytesIO(data)).convert('RGB')
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', quality=85)
    return buffer.getvalue()


def upgrade():
    op.create_table(
        'prediction_images',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('prediction_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('mime', sa.String(length=32), nullable=False),
        sa.Column('preview', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['prediction_id'], ['predictions.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('prediction_id', 'position'),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table('predictions', table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column('output_urls', sa.JSON(), server_default='[]', nullable=False))

    connection = op.get_bind()
    rows = connection.execute(
        sa.text('SELECT id, output_url, image, image_mime, completed_at, created_at FROM predictions')
    ).all()
    for row in rows:
        if row.output_url is not None:
            connection.execute(
                sa.text('UPDATE predictions SET output_urls = :urls WHERE id = :id'),
                {'urls': json.dumps([row.output_url]), 'id': row.id},
            )
        if row.image is not None:
            connection.execute(
                sa.text(
                    'INSERT INTO prediction_images (prediction_id, position, data, mime, preview, created_at)'
                    ' VALUES (:id, 0, :data, :mime, :preview, :created_at)'
                ),
                {
                    'id': row.id,
                    'data': row.image,
                    'mime': row.image_mime,
                    'preview': make_preview(row.image),
                    'created_at': row.completed_at or row.created_at,
                },
            )

    with op.batch_alter_table('predictions', table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_column('output_url')
        batch_op.drop_column('image')
        batch_op.drop_column('image_mime')


def downgrade():
    with op.batch_alter_table('predictions', table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column('output_url', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('image', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('image_mime', sa.String(length=32), nullable=True))

    op.execute(
        'UPDATE predictions SET output_url = json_extract(output_urls, \'$[0]\'),'
        ' image = (SELECT data FROM prediction_images i WHERE i.prediction_id = predictions.id AND i.position = 0),'
        ' image_mime = (SELECT mime FROM prediction_images i WHERE i.prediction_id = predictions.id AND i.position = 0)'
    )
    with op.batch_alter_table('predictions', table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_column('output_urls')
    op.drop_table('prediction_images')
