"""Minimal Flask app that runs a promptgen Worker, for tests that need worker processes.

Usage: python -m tests.queue_app QUEUE_FILE [--lease-seconds N] [--burst]
"""

import argparse
import logging

from flask import Flask

from promptgen.worker import Worker


def create_app(queue_path, lease_seconds):
    """Return a bare Flask app that has only the queue settings."""
    app = Flask(__name__)
    app.config["QUEUE_DATABASE"] = queue_path
    app.config["QUEUE_LEASE_SECONDS"] = lease_seconds
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queue_path", help="path of the queue's SQLite file")
    parser.add_argument(
        "--lease-seconds", type=float, default=60.0, help="lease length in seconds"
    )
    parser.add_argument("--burst", action="store_true", help="exit once no job is ready")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    Worker(create_app(args.queue_path, args.lease_seconds)).work(burst=args.burst)


if __name__ == "__main__":
    main()
