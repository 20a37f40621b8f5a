"""Module-level job functions that the queue and worker tests enqueue."""

import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

from flask import current_app
from sqlalchemy import text

from promptgen.extensions import db

#: How long a blocking job waits for its release file before it gives up.
BLOCK_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.01


def add(a, b):
    """Return a + b."""
    return a + b


def echo(*args, **kwargs):
    """Return the arguments as received, to check how they survive JSON."""
    return {"args": list(args), "kwargs": kwargs}


def raise_error(message):
    """Raise RuntimeError(message)."""
    raise RuntimeError(message)


def return_object():
    """Return a value that JSON cannot encode."""
    return {1, 2}


def config_value(key):
    """Return current_app.config[key], which needs an app context."""
    return current_app.config[key]


def query_database(then_fail=False):
    """Run a query through db.session, then raise RuntimeError if then_fail."""
    db.session.execute(text("SELECT 1"))
    if then_fail:
        raise RuntimeError("failed after a query")


def record_run(results_dir, number):
    """Append number to a file named after this process's pid."""
    path = Path(results_dir) / f"{os.getpid()}.txt"
    with open(path, "a") as file:
        file.write(f"{number}\n")


def block_until_file(release_path, starts_path):
    """Append this pid to starts_path, then wait until release_path exists."""
    with open(starts_path, "a") as file:
        file.write(f"{os.getpid()}\n")

    deadline = time.monotonic() + BLOCK_TIMEOUT_SECONDS
    while not os.path.exists(release_path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release_path} did not appear in {BLOCK_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)
    return "released"


def send_signal_to_self(signal_name):
    """Send the named signal to this process, then return normally."""
    os.kill(os.getpid(), signal.Signals[signal_name])
    return "signalled"


def wait_for_lease_renewals(queue_path, renewals):
    """Return the lease_until values seen once the started job's lease changed `renewals` times."""
    seen = []
    deadline = time.monotonic() + BLOCK_TIMEOUT_SECONDS
    connection = sqlite3.connect(queue_path)
    try:
        while len(seen) <= renewals:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(seen) - 1} lease renewals, expected {renewals}")
            row = connection.execute(
                "SELECT lease_until FROM jobs WHERE status = 'started'"
            ).fetchone()
            if row is not None and (not seen or row[0] != seen[-1]):
                seen.append(row[0])
            time.sleep(POLL_SECONDS)
    finally:
        connection.close()
    return seen


class Tasks:
    """Class whose static method workers can import as "module:Tasks.multiply"."""

    @staticmethod
    def multiply(a, b):
        """Return a * b."""
        return a * b

    def instance_method(self):
        """Do nothing. Workers cannot import a bound method by name."""


def make_nested_function():
    """Return a function defined inside another, which workers cannot import."""

    def nested():
        return None

    return nested


def record_run_in_thread(results_dir, number):
    """Append number to a file named after this process and thread."""
    path = Path(results_dir) / f"{os.getpid()}-{threading.get_ident()}.txt"
    with open(path, "a") as file:
        file.write(f"{number}\n")


def sleep_for(seconds):
    """Sleep, then return "slept"."""
    time.sleep(seconds)
    return "slept"


def sleep_ignoring_exceptions(seconds):
    """Sleep, catching every Exception on the way, as careless job code does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(POLL_SECONDS)
        except Exception:
            pass
    return "slept"


def stop_then_sleep(signal_name, seconds):
    """Send the named signal to this process, then sleep."""
    os.kill(os.getpid(), signal.Signals[signal_name])
    time.sleep(seconds)
    return "slept"


def stop_repeatedly_then_sleep(signal_names, seconds):
    """Send each named signal to this process in turn, then sleep."""
    for name in signal_names:
        os.kill(os.getpid(), signal.Signals[name])
    time.sleep(seconds)
    return "slept"


def exit_with(code):
    """Call sys.exit(code), as a script turned into a job might."""
    sys.exit(code)


def raise_keyboard_interrupt():
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt


def kill_own_process(starts_path):
    """Append this pid to starts_path, then SIGKILL this process."""
    with open(starts_path, "a") as file:
        file.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def nothing():
    """Do nothing."""


class CustomError(Exception):
    """An exception class defined outside builtins."""
