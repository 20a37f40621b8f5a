"""Flask extension objects, bound to the app in create_app."""

from contextvars import ContextVar

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "accounts.login"
login_manager.login_message = "Log in to see your prompts."
login_manager.login_message_category = "info"

# NOTE: counts live in each process's memory, so N web processes allow N times the limit.
limiter = Limiter(get_remote_address, storage_uri="memory://")


#: Whether a transaction that starts now takes SQLite's write lock at once (BEGIN IMMEDIATE).
#: A deferred transaction that reads and then writes fails with "database is locked" when
#: another connection committed in between, so every request and job that writes begins
#: immediate and waits for the lock (busy_timeout) instead.
begin_immediate = ContextVar("begin_immediate", default=False)


@event.listens_for(Engine, "connect")
def _configure_sqlite(connection, record):
    """Turn on foreign keys and WAL for SQLite, and let SQLAlchemy issue BEGIN itself."""
    if type(connection).__module__ != "sqlite3":
        return
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


@event.listens_for(Engine, "begin")
def _begin_sqlite(connection):
    if connection.dialect.name != "sqlite":
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE" if begin_immediate.get() else "BEGIN")
