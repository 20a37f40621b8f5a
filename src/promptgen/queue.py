"""SQLite job queue with leases, retries and an RQ-like API.

Jobs live in their own SQLite database file in WAL mode, apart from the app's
database, so workers polling the queue never lock the tables that web requests use.

Enqueue:

    enqueue(func, *args, **kwargs) -> job id
        Passes every positional and keyword argument to the job. Inside a Flask app
        context it uses the queue file at ``current_app.config["QUEUE_DATABASE"]``.
    enqueue_call(func, args=(), kwargs=None, *, queue="default", priority=0,
                 delay=0, max_attempts=None) -> job id
        Sets the job options as well. They are separate from ``enqueue`` so that no
        option name can clash with a keyword argument of the job.

``Queue(path)`` has the same two methods for use without an app context.
``func`` is a module-level function, stored as "module:qualname", or such a string.
Arguments are stored as JSON, so a job receives lists where it was given tuples.

Claim and lease:

``Queue.claim(worker_id)`` returns the next ready job as a ``Job``, or None when no
job is ready, which means the queue is empty or every job waits for its run_at or has
an unexpired lease. A job is ready when it is queued with run_at <= now, or started
with lease_until <= now. Jobs are claimed by priority (highest first), then run_at,
then enqueue order.

The claim is atomic. One ``UPDATE ... RETURNING`` statement inside ``BEGIN IMMEDIATE``
marks the job started, counts the attempt and sets the lease, so a job is leased to at
most one worker at a time. The worker renews the lease with ``extend_lease`` while the
job runs. If a worker dies, its job is claimed again once the lease expires. When that
happens after the last allowed attempt, the job is marked failed with a "worker died"
error instead. Delivery is therefore at least once, because a job whose worker died
part-way runs again from the start.

Retries: a job that raises is queued again RETRY_BACKOFF_BASE_SECONDS later, doubling
with each attempt up to RETRY_BACKOFF_MAX_SECONDS, until it has made max_attempts
attempts (DEFAULT_MAX_ATTEMPTS unless set). Then it stays failed with its traceback.

Times are seconds since the epoch from the queue's clock (``time.time`` unless
another is given). Every method that reads the clock also takes ``now=``.
"""

import importlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import current_app

logger = logging.getLogger(__name__)

QUEUED = "queued"
STARTED = "started"
FINISHED = "finished"
FAILED = "failed"
#: Reserved for later use. Delayed jobs stay queued with a future run_at.
SCHEDULED = "scheduled"
#: Reserved for later use.
CANCELED = "canceled"

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_SECONDS = 60.0

RETRY_BACKOFF_BASE_SECONDS = 2.0
RETRY_BACKOFF_MAX_SECONDS = 600.0

#: How long a connection waits for another process's write lock before failing.
BUSY_TIMEOUT_SECONDS = 10.0

#: Stored in PRAGMA user_version. Raise it with every change to SCHEMA.
SCHEMA_VERSION = 1

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        queue TEXT NOT NULL,
        func TEXT NOT NULL,
        args TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'scheduled', 'started', 'finished', 'failed', 'canceled')),
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
        lease_until REAL,
        worker_id TEXT,
        result TEXT,
        error TEXT,
        enqueued_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL
    )
    """,
    # The claim query scans this index in order and stops at the first ready job.
    """
    CREATE INDEX IF NOT EXISTS jobs_claim_order
    ON jobs (priority DESC, run_at, seq)
    WHERE status IN ('queued', 'started')
    """,
    """
    CREATE INDEX IF NOT EXISTS jobs_lease_until
    ON jobs (lease_until)
    WHERE status = 'started'
    """,
)

JOB_COLUMNS = (
    "id, queue, func, args, kwargs, status, priority, run_at, attempts, max_attempts,"
    " lease_until, worker_id, result, error, enqueued_at, started_at, ended_at"
)

CLAIM_SQL = f"""
    UPDATE jobs
    SET status = 'started',
        attempts = attempts + 1,
        worker_id = :worker_id,
        lease_until = :now + :lease_seconds,
        started_at = :now
    WHERE seq = (
        SELECT seq FROM jobs
        WHERE status IN ('queued', 'started')
          AND ((status = 'queued' AND run_at <= :now)
               OR (status = 'started' AND lease_until <= :now))
          {{queue_filter}}
        ORDER BY priority DESC, run_at, seq
        LIMIT 1
    )
    RETURNING {JOB_COLUMNS}
"""

FAIL_ABANDONED_SQL = """
    UPDATE jobs
    SET status = 'failed',
        ended_at = :now,
        lease_until = NULL,
        error = printf(
            'worker died: worker %s stopped renewing its lease during attempt %d of %d',
            worker_id, attempts, max_attempts)
    WHERE status = 'started' AND lease_until <= :now AND attempts >= max_attempts
    RETURNING id, func, worker_id, attempts, max_attempts
"""

#: Matches only while the job is still leased under the claim that returned the Job object.
OWNER_FILTER = (
    "id = :id AND status = 'started' AND worker_id = :worker_id AND attempts = :attempts"
)

# Connections inherited through fork are never used or closed in the child, because
# SQLite does not support carrying an open connection across fork().
_inherited_connections = []

_queues_by_path = {}


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, with args, kwargs and result decoded from JSON."""

    id: str
    queue: str
    func: str
    args: list
    kwargs: dict
    status: str
    priority: int
    run_at: float
    attempts: int
    max_attempts: int
    lease_until: float | None
    worker_id: str | None
    result: object
    error: str | None
    enqueued_at: float
    started_at: float | None
    ended_at: float | None

    @classmethod
    def from_row(cls, row):
        """Build a Job from a row selected with JOB_COLUMNS."""
        values = dict(row)
        values["args"] = json.loads(values["args"])
        values["kwargs"] = json.loads(values["kwargs"])
        if values["result"] is not None:
            values["result"] = json.loads(values["result"])
        return cls(**values)

    def perform(self):
        """Import the job function and call it with the stored arguments."""
        return resolve_function(self.func)(*self.args, **self.kwargs)


class Queue:
    """A job queue stored in the SQLite file at path, with one connection per thread."""

    def __init__(self, path, *, lease_seconds=DEFAULT_LEASE_SECONDS, clock=time.time):
        lease_seconds = float(lease_seconds)
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")

        self.path = os.fspath(path)
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._local = threading.local()
        self._schema_ready_pid = None

        # Opening now reports a bad path or an unsupported file at start-up.
        self._connection()

    def __repr__(self):
        return f"Queue({self.path!r})"

    def enqueue(self, func, *args, **kwargs):
        """Add a job that calls func(*args, **kwargs) with default options, and return its id."""
        return self.enqueue_call(func, args, kwargs)

    def enqueue_call(
        self,
        func,
        args=(),
        kwargs=None,
        *,
        queue=DEFAULT_QUEUE,
        priority=0,
        delay=0,
        max_attempts=None,
        now=None,
    ):
        """Add a job that calls func(*args, **kwargs) after delay seconds, and return its id.

        Raises ValueError for a func that workers cannot import or an invalid option,
        and TypeError for arguments that are not JSON data.
        """
        func_path = function_path(func)
        args_json, kwargs_json = encode_arguments(args, kwargs or {})
        _validate_options(queue, priority, delay, max_attempts)

        now = self._now(now)
        job_id = uuid.uuid4().hex
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO jobs (id, queue, func, args, kwargs, status, priority,"
                " run_at, max_attempts, enqueued_at)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                (
                    job_id,
                    queue,
                    func_path,
                    args_json,
                    kwargs_json,
                    priority,
                    now + delay,
                    DEFAULT_MAX_ATTEMPTS if max_attempts is None else max_attempts,
                    now,
                ),
            )
        return job_id

    def fetch_job(self, job_id):
        """Return the job with this id, or None if there is none."""
        row = (
            self._connection()
            .execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return None if row is None else Job.from_row(row)

    def claim(self, worker_id, now=None, *, queues=None):
        """Lease the next ready job to worker_id and return it, or return None if none is ready.

        queues limits the claim to jobs in those queue names. None means any queue.
        """
        now = self._now(now)
        sql, params = _claim_statement(worker_id, now, self.lease_seconds, queues)

        with self._transaction() as connection:
            self._fail_abandoned(connection, now)
            rows = connection.execute(sql, params).fetchall()
        return Job.from_row(rows[0]) if rows else None

    def extend_lease(self, job, now=None):
        """Renew the lease of a claimed job and return True.

        Returns False and changes nothing if the job is no longer leased under this claim.
        """
        now = self._now(now)
        with self._transaction() as connection:
            cursor = connection.execute(
                f"UPDATE jobs SET lease_until = :lease_until WHERE {OWNER_FILTER}",
                {**_owner(job), "lease_until": now + self.lease_seconds},
            )
        return cursor.rowcount == 1

    def finish(self, job, result=None, now=None):
        """Mark a claimed job finished with its result, and return True.

        Returns False and changes nothing if the job is no longer leased under this claim.
        A result that is not JSON data is stored as its repr() string.
        """
        now = self._now(now)
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = 'finished', result = :result, ended_at = :now,"
                f" lease_until = NULL WHERE {OWNER_FILTER}",
                {**_owner(job), "result": _encode_result(job, result), "now": now},
            )
        return cursor.rowcount == 1

    def fail(self, job, error, now=None):
        """Record a failed attempt of a claimed job and return the updated Job.

        error is an exception, a sys.exc_info() tuple or a text, and is stored as
        traceback text. The job is queued again after retry_delay(attempts) seconds
        unless it has used max_attempts, in which case it is marked failed. Returns None
        and changes nothing if the job is no longer leased under this claim.
        """
        now = self._now(now)
        error_text = format_error(error)

        if job.attempts < job.max_attempts:
            assignments = (
                "status = 'queued', run_at = :run_at, lease_until = NULL, worker_id = NULL"
            )
        else:
            assignments = "status = 'failed', ended_at = :now, lease_until = NULL"
        params = {
            **_owner(job),
            "error": error_text,
            "now": now,
            "run_at": now + retry_delay(job.attempts),
        }

        with self._transaction() as connection:
            rows = connection.execute(
                f"UPDATE jobs SET {assignments}, error = :error WHERE {OWNER_FILTER}"
                f" RETURNING {JOB_COLUMNS}",
                params,
            ).fetchall()
        return Job.from_row(rows[0]) if rows else None

    def counts(self):
        """Return the number of jobs in each status that has any."""
        rows = self._connection().execute(
            "SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status"
        )
        return {status: count for status, count in rows}

    def close(self):
        """Close the calling thread's connection. The next call in this thread opens a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            connection.close()
        self._local.connection = None
        self._local.pid = None

    def _now(self, now):
        return self.clock() if now is None else now

    def _connection(self):
        """Return this thread's connection, opening one in a new thread or process."""
        local = self._local
        pid = os.getpid()
        if getattr(local, "connection", None) is not None and local.pid == pid:
            return local.connection

        if getattr(local, "connection", None) is not None:
            _inherited_connections.append(local.connection)
            local.connection = None

        connection = open_connection(self.path)
        if self._schema_ready_pid != pid:
            try:
                create_schema(connection, self.path)
            except BaseException:
                connection.close()
                raise
            self._schema_ready_pid = pid

        local.connection = connection
        local.pid = pid
        return connection

    @contextmanager
    def _transaction(self):
        """Run the block in a BEGIN IMMEDIATE transaction, which takes the write lock first."""
        connection = self._connection()
        with _immediate_transaction(connection):
            yield connection

    def _fail_abandoned(self, connection, now):
        """Mark failed the expired jobs that have no attempts left."""
        for row in connection.execute(FAIL_ABANDONED_SQL, {"now": now}).fetchall():
            logger.warning(
                "job %s %s failed: worker %s stopped renewing its lease during attempt"
                " %d of %d",
                row["id"],
                row["func"],
                row["worker_id"],
                row["attempts"],
                row["max_attempts"],
            )


def enqueue(func, *args, **kwargs):
    """Add a job to the current app's queue with default options, and return its id."""
    return get_queue().enqueue(func, *args, **kwargs)


def enqueue_call(
    func,
    args=(),
    kwargs=None,
    *,
    queue=DEFAULT_QUEUE,
    priority=0,
    delay=0,
    max_attempts=None,
):
    """Add a job to the current app's queue with the given options, and return its id."""
    return get_queue().enqueue_call(
        func,
        args,
        kwargs,
        queue=queue,
        priority=priority,
        delay=delay,
        max_attempts=max_attempts,
    )


def get_queue():
    """Return the Queue for current_app.config["QUEUE_DATABASE"], one per path per process."""
    path = queue_path_from_config(current_app.config)
    queue = _queues_by_path.get(path)
    if queue is None:
        queue = _queues_by_path.setdefault(path, Queue(path))
    return queue


def queue_path_from_config(config):
    """Return config["QUEUE_DATABASE"] as a path string, or raise RuntimeError if it is unset."""
    path = config.get("QUEUE_DATABASE")
    if not path:
        raise RuntimeError(
            "QUEUE_DATABASE is not set. Set it to the path of the queue's SQLite file."
        )
    return os.fspath(path)


def retry_delay(attempts):
    """Return the seconds to wait before the attempt after attempt number `attempts`."""
    return min(RETRY_BACKOFF_BASE_SECONDS * 2 ** (attempts - 1), RETRY_BACKOFF_MAX_SECONDS)


def open_connection(path):
    """Open path as a WAL-mode SQLite database, creating the file and its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    connection.row_factory = sqlite3.Row

    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    journal_mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if journal_mode != "wal":
        connection.close()
        raise RuntimeError(
            f"queue database {path} cannot use WAL mode (journal_mode is {journal_mode})."
            " Set QUEUE_DATABASE to a file on a local disk."
        )

    # In WAL mode NORMAL still keeps the file consistent after a crash. A power
    # loss can undo the last few commits.
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def create_schema(connection, path):
    """Create the jobs table and its indexes unless they exist."""
    with _immediate_transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"queue database {path} has schema version {version}, newer than"
                f" version {SCHEMA_VERSION} that this code supports. Upgrade promptgen."
            )

        for statement in SCHEMA:
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def function_path(func):
    """Return "module:qualname" for a module-level callable, or check and return such a string."""
    if isinstance(func, str):
        _validate_function_string(func)
        return func

    if not callable(func):
        raise TypeError(
            "job function must be a callable or a 'module:qualname' string,"
            f" not {type(func).__name__}"
        )

    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname:
        raise ValueError(
            f"job function {func!r} has no module and qualified name."
            " Pass a module-level function."
        )

    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(
            f"job function {module}.{qualname} is a lambda or nested function, which"
            " workers cannot import. Define it at module level."
        )
    if module == "__main__":
        raise ValueError(
            f"job function {qualname} is defined in __main__, which workers cannot"
            " import. Move it into a module."
        )

    path = f"{module}:{qualname}"
    try:
        resolved = resolve_function(path)
    except (ImportError, AttributeError):
        resolved = None
    if resolved != func:
        raise ValueError(
            f"job function {func!r} cannot be imported as {path}."
            " Pass a module-level function."
        )
    return path


def resolve_function(path):
    """Import and return the callable named by "module:qualname"."""
    _validate_function_string(path)
    module_name, _, qualname = path.partition(":")

    target = importlib.import_module(module_name)
    for name in qualname.split("."):
        target = getattr(target, name)
    return target


def encode_arguments(args, kwargs):
    """Return args and kwargs as JSON texts, or raise TypeError if a value is not JSON data."""
    if not isinstance(kwargs, dict):
        raise TypeError(f"job kwargs must be a dict, not {type(kwargs).__name__}")

    for index, value in enumerate(args):
        _check_json_value(value, f"args[{index}]")
    for name, value in kwargs.items():
        _check_json_value(value, f"kwargs[{name!r}]")

    return json.dumps(list(args)), json.dumps(kwargs)


def format_error(error):
    """Return traceback text for an exception or exc_info tuple, and a text unchanged."""
    if isinstance(error, str):
        return error
    if isinstance(error, tuple):
        return "".join(traceback.format_exception(*error))
    if isinstance(error, BaseException):
        return "".join(traceback.format_exception(error))
    raise TypeError(
        "error must be an exception, an exc_info tuple or a text,"
        f" not {type(error).__name__}"
    )


def _validate_function_string(path):
    module_name, separator, qualname = path.partition(":")
    if not separator or not module_name or not qualname:
        raise ValueError(
            f"invalid job function {path!r}: expected 'module:qualname',"
            " for example 'promptgen.jobs:store_output'"
        )


def _validate_options(queue, priority, delay, max_attempts):
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"queue must be a non-empty string, got {queue!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an integer, got {priority!r}")
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise ValueError(f"delay must be a number of seconds, got {delay!r}")
    if not (math.isfinite(delay) and delay >= 0):
        raise ValueError(f"delay must be zero or more seconds, got {delay!r}")
    if max_attempts is None:
        return
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer of 1 or more, got {max_attempts!r}")


def _check_json_value(value, where):
    """Raise TypeError unless value is JSON data that round-trips without changing keys."""
    if value is None or isinstance(value, (bool, int, str)):
        return

    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"job argument {where} is {value!r}, which JSON cannot represent")
        return

    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return

    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"job argument {where} has key {key!r} of type {type(key).__name__},"
                    " but JSON object keys must be strings"
                )
            _check_json_value(item, f"{where}[{key!r}]")
        return

    raise TypeError(
        f"job argument {where} is a {type(value).__name__}, which is not JSON-serializable."
        " Pass ids or plain data (str, int, float, bool, None, list, dict) instead."
    )


def _encode_result(job, result):
    try:
        return json.dumps(result, allow_nan=False)
    except (TypeError, ValueError):
        logger.warning(
            "job %s %s returned a %s, which is not JSON-serializable, so its repr() is stored",
            job.id,
            job.func,
            type(result).__name__,
        )
        return json.dumps(repr(result))


def _claim_statement(worker_id, now, lease_seconds, queues):
    """Return the claim SQL and its parameters, filtered to the given queue names."""
    params = {"worker_id": worker_id, "now": now, "lease_seconds": lease_seconds}
    if queues is None:
        return CLAIM_SQL.format(queue_filter=""), params

    names = list(queues)
    if not names:
        raise ValueError("queues must name at least one queue, or be None for all queues")
    placeholders = ", ".join(f":queue_{index}" for index in range(len(names)))
    params.update({f"queue_{index}": name for index, name in enumerate(names)})
    return CLAIM_SQL.format(queue_filter=f"AND queue IN ({placeholders})"), params


def _owner(job):
    return {"id": job.id, "worker_id": job.worker_id, "attempts": job.attempts}


@contextmanager
def _immediate_transaction(connection):
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        # SQLite ends the transaction by itself after some errors.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
