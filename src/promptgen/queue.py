"""SQLite job queue with named queues, delays, leases, retries and unique keys.

Jobs live in their own SQLite database file in WAL mode, apart from the app's
database, so workers polling the queue never lock the tables that web requests use.

Enqueue:

    enqueue(func, *args, queue=None, at=None, delay=None, retries=None,
            timeout=None, key=None, **kwargs) -> job id
        Passes every other positional and keyword argument to the job. The six
        names above are job options, so a job cannot receive a keyword argument of
        one of those names through ``enqueue``. Use ``enqueue_call`` for such a job.
        Inside a Flask app context it uses ``current_app.config["QUEUE_DATABASE"]``.
    enqueue_call(func, args=(), kwargs=None, *, queue=None, priority=0, at=None,
                 delay=None, retries=None, max_attempts=None, timeout=None,
                 key=None) -> job id
        Takes the job's arguments as a tuple and a dict, so no option name can clash
        with them.

Options:

    queue      queue name, "default" unless given. Workers weight queues by the
               QUEUE_PRIORITIES setting (see promptgen.queue_priorities).
    at         when the job may start: epoch seconds or a timezone-aware datetime.
    delay      seconds (or a timedelta) from now until the job may start. Give at
               most one of at and delay. A job that waits has status "scheduled".
    retries    how many times a failing job runs again, so it makes retries + 1
               attempts. max_attempts in enqueue_call sets the total directly.
               DEFAULT_MAX_ATTEMPTS when neither is given.
    timeout    seconds a single attempt may run before the worker stops it. None
               uses the worker's default (QUEUE_DEFAULT_TIMEOUT).
    key        unique key. While a job with this key is queued, scheduled or
               started, enqueueing another returns the existing job's id instead.

``Queue(path)`` has the same methods for use without an app context.
A job id is "<seq>-<token>", such as "20417-5f0c9a1e7b3d": the row's integer key and 12
random hex digits. ``fetch_job``, ``cancel`` and ``requeue`` find nothing for a text of
another form.
``func`` is a module-level function, stored as "module:qualname", or such a string.
Arguments are stored as JSON, so a job receives lists where it was given tuples.

Statuses, named as RQ names them: queued (ready to run), scheduled (waiting for its
run_at, after a delay or before a retry), started, finished, failed, canceled.

Claim and lease:

``Queue.claim(worker_id, queues=[...])`` tries the named queues in the order given and
returns the first ready job as a ``Job``, or None. Within a queue, jobs are claimed by
priority (highest first), then run_at, then enqueue order. One ``UPDATE ... RETURNING``
inside ``BEGIN IMMEDIATE`` marks the job started, counts the attempt and sets the lease,
so a job is leased to at most one worker at a time. The worker renews the lease while
the job runs. If a worker dies, its job is queued again once the lease expires, or
marked failed with a "worker died" error when that was its last allowed attempt.
Delivery is therefore at least once, because a job whose worker died part-way runs
again from the start. A finished job is never claimed again.

Retries: a job that raises is scheduled again after ``retry_delay(attempts)`` seconds:
RETRY_BACKOFF_BASE_SECONDS doubling with each attempt, plus up to RETRY_JITTER of
random jitter, at most RETRY_BACKOFF_MAX_SECONDS. After its last attempt it stays
failed with the exception type, message and traceback.

Times are seconds since the epoch from the queue's clock (``time.time`` unless
another is given). Every method that reads the clock also takes ``now=``.
"""

import datetime
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields

from flask import current_app

from .queue_encoding import encode_arguments, format_error, function_path, resolve_function
from .queue_schema import (
    ACTIVE_FILTER,
    BUSY_TIMEOUT_SECONDS,
    SCHEMA_VERSION,
    create_schema,
    immediate_transaction,
    open_connection,
)

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "SCHEMA_VERSION",
    "Job",
    "Queue",
    "enqueue",
    "enqueue_call",
    "fetch_job",
    "get_queue",
    "retry_delay",
]

logger = logging.getLogger(__name__)

QUEUED = "queued"
SCHEDULED = "scheduled"
STARTED = "started"
FINISHED = "finished"
FAILED = "failed"
CANCELED = "canceled"

WAITING_STATUSES = (QUEUED, SCHEDULED)
ENDED_STATUSES = (FINISHED, FAILED, CANCELED)

#: Keyword arguments of ``enqueue`` that set job options instead of reaching the job.
RESERVED_OPTIONS = ("queue", "at", "delay", "retries", "timeout", "key")

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_SECONDS = 60.0

RETRY_BACKOFF_BASE_SECONDS = 2.0
RETRY_BACKOFF_MAX_SECONDS = 600.0
#: A retry waits up to this fraction longer than the doubled delay, at random, so
#: jobs that failed together do not all retry at the same moment.
RETRY_JITTER = 0.5

#: Maximum time between two checks for expired leases by one Queue object, unless
#: the last check took more than 1/SWEEP_COST_FACTOR of it.
LEASE_SWEEP_INTERVAL_SECONDS = 1.0
SWEEP_COST_FACTOR = 100

#: The last second of the year 9999 UTC. A later run time cannot be shown as a datetime.
LATEST_RUN_AT = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC).timestamp()

#: Error type stored for a job whose worker stopped renewing its lease.
WORKER_DIED = "WorkerDied"

#: A job's id as the queue shows it: "<seq>-<token>" (see queue_schema.JOBS_TABLE).
ID_COLUMN = "seq || '-' || token"

JOB_COLUMNS = (
    f"{ID_COLUMN}, queue, func, args, kwargs, status, priority, run_at, attempts,"
    " max_attempts, lease_until, worker_id, result, error, enqueued_at, started_at,"
    " ended_at, timeout, unique_key, error_type, error_message, seq, token"
)

#: Columns that a claim returns. Job.claimed fills in the others, which the claim
#: sets to values the worker already has. Each column returned costs time while the
#: write lock is held.
CLAIMED_COLUMNS = (
    "seq, token, queue, func, args, kwargs, priority, run_at, attempts, max_attempts,"
    " enqueued_at, timeout, unique_key, error, error_type, error_message"
)

# Parameters: ?1 worker id, ?2 now, ?3 lease seconds, ?4 queue name. Positional
# parameters bind faster than named ones, and these run once per job.
CLAIM_FROM_QUEUE_SQL = f"""
    UPDATE jobs
    SET status = 'started',
        attempts = attempts + 1,
        worker_id = ?1,
        lease_until = ?2 + ?3,
        started_at = ?2,
        ended_at = NULL,
        result = NULL
    WHERE seq = (
        SELECT seq FROM jobs
        WHERE queue = ?4 AND {ACTIVE_FILTER} AND status IN ('queued', 'scheduled')
            AND run_at <= ?2
        ORDER BY priority DESC, run_at, seq
        LIMIT 1
    )
    RETURNING {CLAIMED_COLUMNS}
"""

# Without a queue filter SQLite sorts every ready job, so workers always name queues.
CLAIM_FROM_ANY_QUEUE_SQL = CLAIM_FROM_QUEUE_SQL.replace("queue = ?4 AND ", "")

#: Started jobs, found through the jobs_active index.
STARTED_FILTER = f"{ACTIVE_FILTER} AND status = 'started'"

#: Error columns of a job whose worker stopped renewing its lease. SQLite evaluates
#: every SET expression with the row's old values, so worker_id is the dead worker's.
ABANDONED_ERROR_ASSIGNMENTS = f"""
        error_type = '{WORKER_DIED}',
        error_message = printf(
            'worker %s stopped renewing its lease during attempt %d of %d',
            worker_id, attempts, max_attempts),
        error = printf(
            'worker died: worker %s stopped renewing its lease during attempt %d of %d',
            worker_id, attempts, max_attempts)
"""

FAIL_ABANDONED_SQL = f"""
    UPDATE jobs
    SET status = 'failed', ended_at = :now, lease_until = NULL, {ABANDONED_ERROR_ASSIGNMENTS}
    WHERE {STARTED_FILTER} AND lease_until <= :now AND attempts >= max_attempts
    RETURNING {ID_COLUMN} AS id, func, worker_id, attempts, max_attempts
"""

REQUEUE_ABANDONED_SQL = f"""
    UPDATE jobs
    SET status = 'queued', lease_until = NULL, worker_id = NULL, {ABANDONED_ERROR_ASSIGNMENTS}
    WHERE {STARTED_FILTER} AND lease_until <= :now
    RETURNING {ID_COLUMN} AS id, func, error_message
"""

#: The earliest lease of a started job, and whether any has expired by ?1. The
#: covering index scan reads every waiting and started job's entry.
LEASES_SQL = f"SELECT min(lease_until), max(lease_until <= ?1) FROM jobs WHERE {STARTED_FILTER}"

INSERT_JOB_SQL = (
    "INSERT INTO jobs (token, queue, func, args, kwargs, status, priority, run_at,"
    " max_attempts, enqueued_at, timeout, unique_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Matches only while the job is still leased under the claim that returned the Job
#: object. Parameters: ?1 seq, ?2 token, ?3 worker id, ?4 attempts (see _owner).
OWNER_FILTER = (
    "seq = ?1 AND token = ?2 AND status = 'started' AND worker_id = ?3 AND attempts = ?4"
)

#: Finishes a job under its claim. ?5 is the result and ?6 the time.
FINISH_SQL = (
    "UPDATE jobs SET status = 'finished', result = ?5, ended_at = ?6, lease_until = NULL"
    f" WHERE {OWNER_FILTER}"
)

#: Finds a job by the seq and token of its id.
ID_FILTER = "seq = :seq AND token = :token"

# Connections inherited through fork are never used or closed in the child, because
# SQLite does not support carrying an open connection across fork().
_inherited_connections = []

_queues_by_path = {}

# Calling the decoder's method skips the keyword checks of json.loads on every row.
_decode_json = json.JSONDecoder().decode


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, with args, kwargs and result decoded from JSON.

    error, error_type and error_message describe the latest failed attempt. They stay
    on a job that finished on a later attempt, as a record of why it ran again.
    """

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
    timeout: float | None = None
    key: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    #: The row's integer primary key and the random token, the two parts of id.
    seq: int | None = field(default=None, compare=False, repr=False)
    token: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_row(cls, row):
        """Build a Job from a row selected with JOB_COLUMNS, whose order matches the fields."""
        values = list(row)
        values[3] = _decode_json(values[3])
        # Most jobs have no keyword arguments, and enqueue stores those as "{}".
        values[4] = {} if values[4] == "{}" else _decode_json(values[4])
        if values[12] is not None:
            values[12] = _decode_json(values[12])
        # Filling __dict__ skips the generated __init__, which sets each of the 23
        # fields through object.__setattr__ because the class is frozen.
        job = object.__new__(cls)
        job.__dict__.update(zip(_JOB_FIELD_NAMES, values))
        return job

    @classmethod
    def claimed(cls, row, worker_id, now, lease_seconds):
        """Build the Job that a claim by worker_id at now returned as a CLAIMED_COLUMNS row."""
        (seq, token, queue, func, args, kwargs, priority, run_at, attempts, max_attempts,
         enqueued_at, timeout, key, error, error_type, error_message) = row  # fmt: skip
        job = object.__new__(cls)
        job.__dict__.update(
            id=format_job_id(seq, token),
            queue=queue,
            func=func,
            args=_decode_json(args),
            kwargs={} if kwargs == "{}" else _decode_json(kwargs),
            status=STARTED,
            priority=priority,
            run_at=run_at,
            attempts=attempts,
            max_attempts=max_attempts,
            lease_until=now + lease_seconds,
            worker_id=worker_id,
            result=None,
            error=error,
            enqueued_at=enqueued_at,
            started_at=now,
            ended_at=None,
            timeout=timeout,
            key=key,
            error_type=error_type,
            error_message=error_message,
            seq=seq,
            token=token,
        )
        return job

    @property
    def wait_seconds(self):
        """Time from when the job could start to when its latest attempt started, or None."""
        if self.started_at is None:
            return None
        return max(0.0, self.started_at - self.run_at)

    @property
    def duration_seconds(self):
        """Run time of the latest attempt once the job has ended, or None."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def perform(self):
        """Import the job function and call it with the stored arguments."""
        return resolve_function(self.func)(*self.args, **self.kwargs)


_JOB_FIELD_NAMES = tuple(job_field.name for job_field in fields(Job))


class Queue:
    """A job queue stored in the SQLite file at path, with one connection per thread.

    synchronous is the PRAGMA synchronous setting, "NORMAL" or "FULL" (see
    queue_schema.SYNCHRONOUS_MODES). rng supplies the retry jitter.
    """

    def __init__(
        self,
        path,
        *,
        lease_seconds=DEFAULT_LEASE_SECONDS,
        clock=time.time,
        synchronous="NORMAL",
        rng=None,
    ):
        lease_seconds = float(lease_seconds)
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")

        self.path = os.fspath(path)
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.synchronous = synchronous
        self.rng = rng if rng is not None else random.Random()
        self._local = threading.local()
        self._schema_ready_pid = None
        self._next_sweep_at = -math.inf

        # Opening now reports a bad path or an unsupported file at start-up.
        self._connection()

    def __repr__(self):
        return f"Queue({self.path!r})"

    def enqueue(
        self,
        func,
        *args,
        queue=None,
        at=None,
        delay=None,
        retries=None,
        timeout=None,
        key=None,
        **kwargs,
    ):
        """Add a job that calls func(*args, **kwargs), and return its id.

        queue, at, delay, retries, timeout and key are job options, described in the
        module docstring.
        """
        return self.enqueue_call(
            func,
            args,
            kwargs,
            queue=queue,
            at=at,
            delay=delay,
            retries=retries,
            timeout=timeout,
            key=key,
        )

    def enqueue_call(
        self,
        func,
        args=(),
        kwargs=None,
        *,
        queue=None,
        priority=0,
        at=None,
        delay=None,
        retries=None,
        max_attempts=None,
        timeout=None,
        key=None,
        now=None,
    ):
        """Add a job that calls func(*args, **kwargs) with the given options, and return its id.

        With a key that a queued, scheduled or started job already has, adds nothing and
        returns that job's id. Raises ValueError for a func that workers cannot import or
        an invalid option, and TypeError for arguments that are not JSON data.
        """
        func_path = function_path(func)
        args_json, kwargs_json = encode_arguments(args, kwargs or {})
        now = self._now(now)
        options = job_options(
            now,
            queue=queue,
            priority=priority,
            at=at,
            delay=delay,
            retries=retries,
            max_attempts=max_attempts,
            timeout=timeout,
            key=key,
        )

        token = new_token()
        status = SCHEDULED if options["run_at"] > now else QUEUED
        values = (
            token,
            options["queue"],
            func_path,
            args_json,
            kwargs_json,
            status,
            options["priority"],
            options["run_at"],
            options["max_attempts"],
            now,
            options["timeout"],
            key,
        )

        if key is None:
            # A single statement outside a transaction is its own write transaction,
            # which saves the round trips of BEGIN and COMMIT.
            seq = self._connection().execute(INSERT_JOB_SQL, values).lastrowid
            return format_job_id(seq, token)

        with self._transaction() as connection:
            existing = _active_job_with_key(connection, key)
            if existing is not None:
                logger.debug("job %s with key %r is already waiting or running", existing, key)
                return existing
            seq = connection.execute(INSERT_JOB_SQL, values).lastrowid
        return format_job_id(seq, token)

    def fetch_job(self, job_id):
        """Return the job with this id, or None if there is none."""
        params = parse_job_id(job_id)
        if params is None:
            return None
        row = (
            self._connection()
            .execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {ID_FILTER}", params)
            .fetchone()
        )
        return None if row is None else Job.from_row(row)

    def claim(self, worker_id, now=None, *, queues=None):
        """Lease the next ready job to worker_id and return it, or return None if none is ready.

        queues lists queue names to try in that order. None means any queue, which
        sorts every ready job and suits small queues only.
        """
        now = self._now(now)
        names = _queue_names(queues)
        with self._transaction() as connection:
            row = self._claim_in_transaction(connection, worker_id, now, names)
        return None if row is None else Job.claimed(row, worker_id, now, self.lease_seconds)

    def finish(self, job, result=None, now=None):
        """Mark a claimed job finished with its result, and return True.

        Returns False and changes nothing if the job is no longer leased under this claim.
        A result that is not JSON data is stored as its repr() string.
        """
        stored, _ = self.finish_and_claim(job, result, now=now)
        return stored

    def finish_and_claim(self, job, result=None, *, worker_id=None, queues=None, now=None):
        """Mark a claimed job finished, then claim the next job, in one transaction.

        Returns (stored, next job or None), where stored is False if the job was no
        longer leased under this claim. No next job is claimed unless worker_id is
        given. One commit for both halves is what lets a worker drain about as fast
        as a bare claim.
        """
        now = self._now(now)
        names = _queue_names(queues) if worker_id is not None else None
        params = (*_owner(job), _encode_result(job, result), now)

        with self._transaction() as connection:
            cursor = connection.execute(FINISH_SQL, params)
            row = None
            if worker_id is not None:
                row = self._claim_in_transaction(connection, worker_id, now, names)
        if row is None:
            return cursor.rowcount == 1, None
        return cursor.rowcount == 1, Job.claimed(row, worker_id, now, self.lease_seconds)

    def fail(self, job, error, now=None):
        """Record a failed attempt of a claimed job and return the updated Job.

        error is an exception, a sys.exc_info() tuple or a text, and is stored as
        traceback text, with the exception's type and message. The job is scheduled
        again after retry_delay(attempts) seconds unless it has used max_attempts, in
        which case it is marked failed. Returns None and changes nothing if the job is
        no longer leased under this claim.
        """
        now = self._now(now)
        error_text = format_error(error)
        error_type, error_message = error_summary(error)

        # ?8 is when the retry may start, or when the job failed for good.
        if job.attempts < job.max_attempts:
            assignments = (
                "status = 'scheduled', run_at = ?8, lease_until = NULL, worker_id = NULL"
            )
            when = now + retry_delay(job.attempts, self.rng.random())
        else:
            assignments = "status = 'failed', ended_at = ?8, lease_until = NULL"
            when = now
        params = (*_owner(job), error_text, error_type, error_message, when)

        with self._transaction() as connection:
            rows = connection.execute(
                f"UPDATE jobs SET {assignments}, error = ?5, error_type = ?6,"
                f" error_message = ?7 WHERE {OWNER_FILTER} RETURNING {JOB_COLUMNS}",
                params,
            ).fetchall()
        return Job.from_row(rows[0]) if rows else None

    def release(self, job):
        """Queue a claimed job again without counting its attempt, and return True.

        A worker that shuts down releases the job it could not finish. Returns False
        if the job is no longer leased under this claim.
        """
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1,"
                f" lease_until = NULL, worker_id = NULL, started_at = NULL WHERE {OWNER_FILTER}",
                _owner(job),
            )
        return cursor.rowcount == 1

    def extend_lease(self, job, now=None):
        """Renew the lease of a claimed job and return True.

        Returns False and changes nothing if the job is no longer leased under this claim.
        """
        now = self._now(now)
        lease_until = now + self.lease_seconds
        with self._transaction() as connection:
            cursor = connection.execute(
                f"UPDATE jobs SET lease_until = ?5 WHERE {OWNER_FILTER}",
                (*_owner(job), lease_until),
            )
        self._next_sweep_at = min(self._next_sweep_at, lease_until)
        return cursor.rowcount == 1

    def cancel(self, job_id, now=None):
        """Mark a waiting job canceled and return True, or return False.

        A started job can be canceled only after its lease has expired, because a worker
        that still renews the lease is running the job and cannot be interrupted from
        here. Canceling it then keeps it from being taken again.
        """
        now = self._now(now)
        params = parse_job_id(job_id)
        if params is None:
            return False
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = 'canceled', ended_at = :now, lease_until = NULL"
                f" WHERE {ID_FILTER} AND (status IN ('queued', 'scheduled')"
                " OR (status = 'started' AND lease_until <= :now))",
                {**params, "now": now},
            )
        return cursor.rowcount == 1

    def requeue(self, job_id, now=None):
        """Queue a failed or canceled job again with fresh attempts, and return True.

        Returns False if the job does not exist or is in another status. Raises
        ValueError if another job with the same key is waiting or running.
        """
        now = self._now(now)
        params = parse_job_id(job_id)
        if params is None:
            return False
        try:
            with self._transaction() as connection:
                cursor = connection.execute(
                    f"UPDATE jobs SET {REQUEUE_ASSIGNMENTS}"
                    f" WHERE {ID_FILTER} AND status IN ('failed', 'canceled')",
                    {**params, "now": now},
                )
        except sqlite3.IntegrityError:
            raise ValueError(
                f"job {job_id} was not queued again, because another job with its key"
                " is waiting or running"
            ) from None
        return cursor.rowcount == 1

    def requeue_failed(self, now=None, *, queue=None):
        """Queue every failed job again, or those of one queue, and return how many.

        A failed job whose key another waiting or running job has stays failed.
        """
        now = self._now(now)
        queue_filter = "" if queue is None else " AND queue = :queue"
        with self._transaction() as connection:
            cursor = connection.execute(
                f"UPDATE OR IGNORE jobs SET {REQUEUE_ASSIGNMENTS}"
                f" WHERE status = 'failed'{queue_filter}",
                {"now": now, "queue": queue},
            )
        return cursor.rowcount

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

    def transaction(self):
        """Return a context manager that runs its block in a BEGIN IMMEDIATE transaction."""
        return immediate_transaction(self._connection())

    def read(self, sql, params=()):
        """Run a read-only statement on this thread's connection and return all rows."""
        return self._connection().execute(sql, params).fetchall()

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

        connection = open_connection(self.path, self.synchronous)
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

    def _transaction(self):
        return immediate_transaction(self._connection())

    def _claim_in_transaction(self, connection, worker_id, now, names):
        """Sweep expired leases if due, then claim from the first queue with a ready job.

        Returns the claimed row, which the caller decodes after the commit so that the
        write lock is held as briefly as possible.
        """
        if now >= self._next_sweep_at:
            self._sweep_expired_leases(connection, now)

        params = (worker_id, now, self.lease_seconds)
        if names is None:
            rows = connection.execute(CLAIM_FROM_ANY_QUEUE_SQL, params).fetchall()
        else:
            rows = []
            for name in names:
                rows = connection.execute(CLAIM_FROM_QUEUE_SQL, (*params, name)).fetchall()
                if rows:
                    break

        if not rows:
            return None
        self._next_sweep_at = min(self._next_sweep_at, now + self.lease_seconds)
        return rows[0]

    def _sweep_expired_leases(self, connection, now):
        """Fail or queue again the started jobs whose lease has expired, and plan the next sweep.

        Finding them reads the index entry of every waiting and started job, so a sweep
        takes longer as the backlog grows. The next sweep therefore waits SWEEP_COST_FACTOR
        times as long as this one took, unless the earliest lease it saw expires sooner.
        """
        started = time.perf_counter()
        earliest, any_expired = connection.execute(LEASES_SQL, (now,)).fetchone()
        if any_expired:
            self._end_expired_leases(connection, now)
            earliest = connection.execute(LEASES_SQL, (now,)).fetchone()[0]

        cost = time.perf_counter() - started
        next_sweep = now + max(LEASE_SWEEP_INTERVAL_SECONDS, SWEEP_COST_FACTOR * cost)
        self._next_sweep_at = next_sweep if earliest is None else min(earliest, next_sweep)

    def _end_expired_leases(self, connection, now):
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
        for row in connection.execute(REQUEUE_ABANDONED_SQL, {"now": now}).fetchall():
            logger.warning(
                "job %s %s queued again: %s", row["id"], row["func"], row["error_message"]
            )


REQUEUE_ASSIGNMENTS = (
    "status = 'queued', attempts = 0, run_at = :now, lease_until = NULL, worker_id = NULL,"
    " result = NULL, error = NULL, error_type = NULL, error_message = NULL,"
    " started_at = NULL, ended_at = NULL"
)


def enqueue(func, *args, queue=None, at=None, delay=None, retries=None, timeout=None, key=None, **kwargs):
    """Add a job to the current app's queue, and return its id. See Queue.enqueue."""
    return get_queue().enqueue(
        func,
        *args,
        queue=queue,
        at=at,
        delay=delay,
        retries=retries,
        timeout=timeout,
        key=key,
        **kwargs,
    )


def enqueue_call(func, args=(), kwargs=None, **options):
    """Add a job to the current app's queue with the given options, and return its id."""
    return get_queue().enqueue_call(func, args, kwargs, **options)


def fetch_job(job_id):
    """Return the job with this id from the current app's queue, or None."""
    return get_queue().fetch_job(job_id)


def get_queue():
    """Return the Queue for current_app.config["QUEUE_DATABASE"], one per path per process."""
    return queue_for_config(current_app.config)


def queue_for_config(config):
    """Return the Queue that config names, opening it once per path per process."""
    path = queue_path_from_config(config)
    queue = _queues_by_path.get(path)
    if queue is None:
        opened = Queue(
            path,
            lease_seconds=config.get("QUEUE_LEASE_SECONDS", DEFAULT_LEASE_SECONDS),
            synchronous=config.get("QUEUE_SYNCHRONOUS", "NORMAL"),
        )
        queue = _queues_by_path.setdefault(path, opened)
    return queue


def queue_path_from_config(config):
    """Return config["QUEUE_DATABASE"] as a path string, or raise RuntimeError if it is unset."""
    path = config.get("QUEUE_DATABASE")
    if not path:
        raise RuntimeError(
            "QUEUE_DATABASE is not set. Set it to the path of the queue's SQLite file."
        )
    return os.fspath(path)


def new_token():
    """Return the random part of a new job id: 12 hex digits."""
    return os.urandom(6).hex()


def format_job_id(seq, token):
    """Return the id of the job in row seq with this token, as ID_COLUMN writes it in SQL."""
    return f"{seq}-{token}"


def parse_job_id(job_id):
    """Return {"seq": ..., "token": ...} for a job id "<seq>-<token>", or None if it is not one."""
    if not isinstance(job_id, str):
        return None
    seq, separator, token = job_id.partition("-")
    # str.isdigit() is also true for digits such as "²" that int() rejects.
    if not separator or not token or not seq.isascii() or not seq.isdigit() or len(seq) > 18:
        return None
    return {"seq": int(seq), "token": token}


def retry_delay(attempts, jitter=0.0):
    """Return the seconds to wait before the attempt after attempt number `attempts`.

    jitter, from 0 to 1, adds that share of RETRY_JITTER to the doubled delay.
    """
    doubled = RETRY_BACKOFF_BASE_SECONDS * 2 ** (attempts - 1)
    return min(doubled * (1 + RETRY_JITTER * jitter), RETRY_BACKOFF_MAX_SECONDS)


def job_options(
    now, *, queue, priority, at, delay, retries, max_attempts, timeout, key
):
    """Check the job options and return them as column values, or raise ValueError."""
    queue = DEFAULT_QUEUE if queue is None else queue
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"queue must be a non-empty string, got {queue!r}")
    if "," in queue or queue != queue.strip():
        raise ValueError(
            "queue name must not contain a comma or start or end with whitespace,"
            f" because worker --queues could not name it, got {queue!r}"
        )
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"priority must be an integer, got {priority!r}")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"key must be a non-empty string, got {key!r}")

    return {
        "queue": queue,
        "priority": priority,
        "run_at": _run_at(now, at, delay),
        "max_attempts": _max_attempts(retries, max_attempts),
        "timeout": _timeout(timeout),
        "key": key,
    }


def error_summary(error):
    """Return (exception type name, message) for what Queue.fail accepts."""
    if isinstance(error, tuple):
        error = error[1]
    if isinstance(error, BaseException):
        error_type = type(error)
        name = error_type.__qualname__
        if error_type.__module__ != "builtins":
            name = f"{error_type.__module__}.{name}"
        return name, str(error)
    return None, error if isinstance(error, str) else None


def _run_at(now, at, delay):
    if at is not None and delay is not None:
        raise ValueError("give at or delay, not both")

    if at is not None:
        if isinstance(at, datetime.datetime):
            if at.tzinfo is None:
                raise ValueError(f"at must be timezone-aware, got naive datetime {at!r}")
            return at.timestamp()
        _check_seconds("at", at)
        return _check_run_at("at", at, float(at))

    if delay is None:
        return now
    if isinstance(delay, datetime.timedelta):
        delay = delay.total_seconds()
    _check_seconds("delay", delay)
    if delay < 0:
        raise ValueError(f"delay must be zero or more seconds, got {delay!r}")
    return _check_run_at("delay", delay, now + delay)


def _check_run_at(name, value, run_at):
    """Return run_at, or raise ValueError if it lies past the last time a datetime can show."""
    if run_at > LATEST_RUN_AT:
        raise ValueError(
            f"{name} puts the job's start after the year 9999, when it would never run,"
            f" got {value!r}"
        )
    return run_at


def _max_attempts(retries, max_attempts):
    if retries is not None and max_attempts is not None:
        raise ValueError("give retries or max_attempts, not both")
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer of 0 or more, got {retries!r}")
        return retries + 1
    if max_attempts is None:
        return DEFAULT_MAX_ATTEMPTS
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer of 1 or more, got {max_attempts!r}")
    return max_attempts


def _timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    _check_seconds("timeout", timeout)
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _check_seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")


def _queue_names(queues):
    if queues is None:
        return None
    names = list(queues)
    if not names:
        raise ValueError("queues must name at least one queue, or be None for all queues")
    return names


def _active_job_with_key(connection, key):
    row = connection.execute(
        f"SELECT {ID_COLUMN} FROM jobs WHERE unique_key = ? AND {ACTIVE_FILTER}",
        (key,),
    ).fetchone()
    return None if row is None else row[0]


def _encode_result(job, result):
    if result is None:
        return "null"
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


def _owner(job):
    """Return the parameters ?1 to ?4 of OWNER_FILTER for job."""
    return (job.seq, job.token, job.worker_id, job.attempts)
