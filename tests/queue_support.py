"""Shared helpers of the queue and worker tests: a fake clock, fixed randomness, worker processes."""

import sys
from pathlib import Path

import pytest
from flask import Flask

from promptgen.queue import Queue

from .support import Process, flask_command

REPOSITORY = Path(__file__).resolve().parents[1]

#: The fake clock's start time, in seconds since the epoch.
START = 1_700_000_000.0
LEASE = 30.0


class FakeClock:
    """A clock that stays at `now` until a test moves it."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class FixedRandom:
    """A random source whose random() always returns `value`, for exact retry delays."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


@pytest.fixture
def clock():
    """A FakeClock at START."""
    return FakeClock(START)


@pytest.fixture
def queue_path(tmp_path):
    return tmp_path / "queue.sqlite3"


@pytest.fixture
def queue(queue_path, clock):
    """A Queue on the fake clock, whose retries wait exactly the doubled delay."""
    queue = Queue(queue_path, lease_seconds=LEASE, clock=clock, rng=FixedRandom(0.0))
    yield queue
    queue.close()


@pytest.fixture(name="queue")
def real_clock_queue(queue_path):
    """A Queue on the system clock, for workers whose leases and heartbeats need real time.

    Its fixture name is also `queue`, so a test module imports either this fixture or
    the fake-clock one, not both.
    """
    queue = Queue(queue_path, lease_seconds=LEASE)
    yield queue
    queue.close()


@pytest.fixture
def app(queue_path):
    """A bare Flask app whose only setting is QUEUE_DATABASE, for Workers in the test process."""
    app = Flask(__name__)
    app.config["QUEUE_DATABASE"] = str(queue_path)
    return app


def start_worker(name, queue_path, log_dir, *options):
    """Start `python -m tests.queue_app` on queue_path; the caller stops it."""
    return Process(
        name,
        [sys.executable, "-m", "tests.queue_app", str(queue_path), *options],
        env={"PYTHONPATH": str(REPOSITORY)},
        log_dir=log_dir,
    )


def start_flask_worker(name, queue_path, tmp_dir, *options):
    """Start `flask --app promptgen worker` on queue_path; the caller stops it.

    Its log and a throwaway app database go in tmp_dir.
    """
    return Process(
        name,
        flask_command("worker", *options),
        env={
            "PYTHONPATH": str(REPOSITORY),
            "QUEUE_DATABASE": str(queue_path),
            "DATABASE_URL": f"sqlite:///{Path(tmp_dir) / 'app.sqlite3'}",
            "SECRET_KEY": "test secret key",
        },
        log_dir=tmp_dir,
    )


@pytest.fixture
def processes():
    """Collect started processes and stop each one, by its own pid, after the test."""
    started = []
    yield started
    for process in started:
        process.stop()
