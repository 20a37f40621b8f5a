"""A lock that web threads and processes take around write transactions on the SQLite file.

SQLite lets one connection write at a time. A connection that finds the write lock taken
waits in SQLite's busy handler, which sleeps in steps of up to 100 ms, so under load a
short write can wait a hundred times longer than it runs. Writers that take this lock
first queue on a thread lock and then on flock(2) on a file beside the database, and both
wake the next waiter as soon as the lock is released. Writers that skip it still get the
busy handler, so the lock is an optimization, never needed for correctness.
"""

import fcntl
import os
import threading
from contextlib import contextmanager

from sqlalchemy.engine import make_url

_thread_lock = threading.Lock()
_files = {}


@contextmanager
def database_write_lock(config):
    """Hold the write lock of the app's SQLite database; do nothing for other databases."""
    path = _lock_path(config["SQLALCHEMY_DATABASE_URI"])
    if path is None:
        yield
        return

    with _thread_lock:
        descriptor = _files.get(path)
        if descriptor is None:
            descriptor = _files[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)


def _lock_path(uri):
    url = make_url(uri)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return f"{url.database}.write-lock"
