"""Minimal Flask app that runs promptgen workers, for tests that need worker processes.

Usage: python -m tests.queue_app QUEUE_FILE [--lease-seconds N] [--burst]
       [--grace N] [--concurrency N]
"""

import argparse
import logging
import sys

from flask import Flask

from promptgen.worker import Worker
from promptgen.worker_pool import WorkerPool


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
    parser.add_argument("--grace", type=float, default=30.0, help="shutdown grace in seconds")
    parser.add_argument("--concurrency", type=int, default=1, help="number of worker processes")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(args.queue_path, args.lease_seconds)

    def make_worker(slot=0):
        return Worker(app, grace_seconds=args.grace)

    if args.concurrency == 1:
        make_worker().work(burst=args.burst)
        return
    pool = WorkerPool(make_worker, args.concurrency, burst=args.burst, grace_seconds=args.grace)
    sys.exit(pool.run())


if __name__ == "__main__":
    main()
