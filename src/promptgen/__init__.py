"""promptgen: upload a photo with a prompt and watch variations of it appear."""

import logging
import os
from pathlib import Path

from flask import Flask
from werkzeug.routing import IntegerConverter

#: The repository root, which contains templates/, static/ and instance/.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def create_app(test_config=None, instance_path=None):
    """Build the web application; the worker and the CLI use the same factory.

    instance_path holds runtime data (databases, generated secrets, instance/config.py);
    it defaults to $PROMPTGEN_INSTANCE_PATH, else instance/ in the repository.
    """
    instance_path = (
        instance_path or os.environ.get("PROMPTGEN_INSTANCE_PATH") or PROJECT_ROOT / "instance"
    )
    app = Flask(
        __name__,
        instance_path=str(instance_path),
        instance_relative_config=True,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )

    from .config import load_config

    load_config(app, test_config)
    app.url_map.converters["int"] = DatabaseIdConverter
    _configure_logging(app)

    from .extensions import csrf, db, limiter, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    limiter.init_app(app)

    from . import accounts, cli, errors, filters, headers, prompts, webhooks

    app.register_blueprint(accounts.bp)
    app.register_blueprint(prompts.bp)
    app.register_blueprint(webhooks.bp)
    errors.register(app)
    filters.register(app)
    headers.register(app)
    cli.register(app)
    app.before_request(_choose_transaction_mode)
    app.teardown_request(_reset_transaction_mode)
    return app


def _choose_transaction_mode():
    """Let requests that may write take SQLite's write lock when their transaction begins."""
    from flask import g, request

    from .extensions import begin_immediate

    writes = request.method not in ("GET", "HEAD", "OPTIONS")
    g.transaction_mode_token = begin_immediate.set(writes)


def _reset_transaction_mode(error):
    from flask import g

    from .extensions import begin_immediate

    token = g.pop("transaction_mode_token", None)
    if token is not None:
        begin_immediate.reset(token)


class DatabaseIdConverter(IntegerConverter):
    """Integer URL parts that fit a 64-bit database id; larger numbers are a 404, not a 500."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)


def _configure_logging(app):
    """Send the package's log lines to stderr once per process, with time and level."""
    logger = logging.getLogger(__name__)
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if app.debug else logging.INFO)
