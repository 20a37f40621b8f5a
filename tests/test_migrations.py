"""Upgrading a database that already has data, as `flask db upgrade` does."""

import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from promptgen import create_app
from promptgen.extensions import db
from promptgen.models import Prediction


def test_upgrade_keeps_existing_rows(tmp_path):
    database = tmp_path / "app.sqlite3"
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "k", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}"},
        instance_path=tmp_path / "instance",
    )
    with app.app_context():
        upgrade(revision="c0be8872f669")
    with sqlite3.connect(database) as connection:
        connection.executescript(
            """
            INSERT INTO users (id, email, password_hash, created_at) VALUES (1, 'a@example.com', 'x', '2026-01-01');
            INSERT INTO prompts (id, user_id, title, description, image, image_mime, thumbnail, created_at, updated_at)
                VALUES (1, 1, 't', '', x'00', 'image/jpeg', x'00', '2026-01-01', '2026-01-01');
            INSERT INTO predictions (id, prompt_id, replicate_id, status, created_at, started_at)
                VALUES (1, 1, 'r8a', 'processing', '2026-01-02 10:00:00', '2026-01-02 10:00:05');
            INSERT INTO webhook_deliveries (webhook_id, prediction_id, status, received_at)
                VALUES ('msg_1', 1, 'starting', '2026-01-02 10:00:05'), ('msg_2', 1, 'succeeded', '2026-01-02 10:01:00');
            """
        )

    with app.app_context():
        upgrade()
        from promptgen.extensions import db

        db.engine.dispose()

    with sqlite3.connect(database) as connection:
        prediction = connection.execute(
            "SELECT sent_at, create_attempts, download_attempts, output_expired, updated_at FROM predictions"
        ).fetchone()
        deliveries = connection.execute("SELECT webhook_id, event FROM webhook_deliveries ORDER BY id").fetchall()
        input_copy = connection.execute("SELECT input_text, input_image, input_mime FROM predictions").fetchone()
    assert prediction == ("2026-01-02 10:00:00", 0, 0, 0, "2026-01-02 10:00:05")
    assert deliveries == [("msg_1", "start"), ("msg_2", "completed")]
    assert input_copy == (None, None, None)

    with app.app_context():
        old_row = db.session.get(Prediction, 1)
        assert old_row.prompt_text == "t"
        assert old_row.photo == (b"\x00", "image/jpeg")
        db.session.rollback()
        db.engine.dispose()

    with app.app_context():
        downgrade(revision="c0be8872f669")
        from promptgen.extensions import db

        db.engine.dispose()
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (2,)


FIRST_REVISION = "c0be8872f669"


def make_app(tmp_path):
    return create_app(
        {"SECRET_KEY": "test", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.sqlite3'}"},
        instance_path=tmp_path,
    )


def test_migrations_match_models(tmp_path):
    app = make_app(tmp_path)
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        db.engine.dispose()

    assert differences == []


def test_upgrade_keeps_existing_accounts(tmp_path):
    app = make_app(tmp_path)
    with app.app_context():
        upgrade(revision=FIRST_REVISION)
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (email, password_hash, created_at)"
                    " VALUES ('old@example.com', 'hash', '2026-01-01 00:00:00')"
                )
            )

        upgrade()

        with db.engine.connect() as connection:
            token = connection.execute(text("SELECT session_token FROM users")).scalar_one()
        db.engine.dispose()

    assert len(token) == 32


def test_ids_of_deleted_rows_never_return(tmp_path):
    app = make_app(tmp_path)
    with app.app_context():
        upgrade()
        with db.engine.begin() as connection:
            sql = connection.execute(text("SELECT sql FROM sqlite_master WHERE name = 'predictions'")).scalar_one()
        db.engine.dispose()

    assert "AUTOINCREMENT" in sql
