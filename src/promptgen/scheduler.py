"""Periodic jobs: the app's own jobs that run at fixed intervals, enqueued by one worker.

Register a periodic job by adding an entry to the PERIODIC_JOBS setting:

    PERIODIC_JOBS = [
        {"func": "promptgen.queue_admin:prune_jobs", "interval": 3600},
        {"func": "promptgen.jobs:reconcile_predictions", "interval": 60, "queue": "default"},
    ]

Each entry names a module-level function as "module:qualname", an interval in seconds,
and optionally a queue (default "default") and a name (default the function path).
The job gets no arguments.

Every worker runs a PeriodicScheduler in its maintenance thread, but only the one that
holds the "scheduler" lock enqueues. The lock is a row in the queue file that expires
LOCK_SECONDS after its holder last renewed it, so another worker takes over within that
time when the leader stops or dies. Each periodic job is enqueued with the unique key
"periodic:<name>", so a run that is still waiting or running is not queued twice.
"""

import logging
import sqlite3

from .queue_encoding import function_path

logger = logging.getLogger(__name__)

#: How often a worker checks whether a periodic job is due.
TICK_SECONDS = 1.0
#: How long the scheduler lock lasts unless its holder renews it.
LOCK_SECONDS = 10.0
LOCK_NAME = "scheduler"


class PeriodicEntry:
    """A function to enqueue every interval seconds."""

    def __init__(self, func, interval, queue="default", name=None):
        self.func = function_path(func)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(
                f"interval of periodic job {self.func} must be a positive number of seconds,"
                f" got {interval!r}"
            )
        self.interval = float(interval)
        self.queue = queue
        self.name = name or self.func

    def __repr__(self):
        return f"PeriodicEntry({self.func!r}, {self.interval:g}, queue={self.queue!r})"

    @property
    def key(self):
        """Unique key of this entry's jobs."""
        return f"periodic:{self.name}"


class PeriodicScheduler:
    """Enqueues due periodic jobs while it holds the scheduler lock in the queue file."""

    tick_seconds = TICK_SECONDS

    def __init__(self, queue, entries, owner):
        self.queue = queue
        self.entries = list(entries)
        self.owner = owner
        self.is_leader = False

    def tick(self, now=None):
        """Take or renew the lock, enqueue the jobs that are due, and return their ids."""
        now = self.queue.clock() if now is None else now
        with self.queue.transaction() as connection:
            leader = self._take_lock(connection, now)
            due = self._claim_due_entries(connection, now) if leader else []

        if leader != self.is_leader:
            logger.info(
                "worker %s %s the periodic scheduler",
                self.owner,
                "now leads" if leader else "no longer leads",
            )
            self.is_leader = leader

        return [self._enqueue(entry, now) for entry in due]

    def tick_logging_errors(self):
        """Run tick(), logging a database error instead of raising it."""
        try:
            return self.tick()
        except sqlite3.Error:
            logger.exception("periodic scheduler of worker %s failed, retrying", self.owner)
            return []

    def resign(self):
        """Give up the lock if this scheduler holds it, so another worker takes over at once."""
        try:
            with self.queue.transaction() as connection:
                connection.execute(
                    "DELETE FROM locks WHERE name = ? AND owner = ?", (LOCK_NAME, self.owner)
                )
        except sqlite3.Error:
            logger.exception("worker %s could not release the scheduler lock", self.owner)
        self.is_leader = False

    def _take_lock(self, connection, now):
        """Take the lock if it is free, expired or already ours, and return whether we hold it."""
        row = connection.execute(
            "INSERT INTO locks (name, owner, expires_at) VALUES (:name, :owner, :expires_at)"
            " ON CONFLICT (name) DO UPDATE SET owner = :owner, expires_at = :expires_at"
            " WHERE locks.owner = :owner OR locks.expires_at <= :now"
            " RETURNING owner",
            {"name": LOCK_NAME, "owner": self.owner, "expires_at": now + LOCK_SECONDS, "now": now},
        ).fetchone()
        return row is not None

    def _claim_due_entries(self, connection, now):
        """Return the entries due at now, and move each one's next run one interval on."""
        due = []
        for entry in self.entries:
            row = connection.execute(
                "SELECT next_run_at FROM periodic_jobs WHERE name = ?", (entry.name,)
            ).fetchone()
            next_run_at = now if row is None else row["next_run_at"]
            if next_run_at > now:
                continue

            due.append(entry)
            following = next_run_at + entry.interval
            if following <= now:
                # After a pause, skip the missed runs instead of running them all at once.
                following = now + entry.interval
            connection.execute(
                "INSERT INTO periodic_jobs (name, next_run_at) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET next_run_at = excluded.next_run_at",
                (entry.name, following),
            )
        return due

    def _enqueue(self, entry, now):
        job_id = self.queue.enqueue_call(entry.func, queue=entry.queue, key=entry.key, now=now)
        logger.info("periodic job %s enqueued as job %s", entry.name, job_id)
        return job_id


def periodic_entries(configured):
    """Return PeriodicEntry objects for the PERIODIC_JOBS setting, or raise ValueError."""
    entries = []
    for item in configured:
        if isinstance(item, PeriodicEntry):
            entries.append(item)
        elif isinstance(item, dict):
            entries.append(PeriodicEntry(**item))
        elif isinstance(item, (tuple, list)):
            entries.append(PeriodicEntry(*item))
        else:
            raise ValueError(
                "each PERIODIC_JOBS entry must be a dict such as"
                f' {{"func": "module:function", "interval": 60}}, got {item!r}'
            )

    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"PERIODIC_JOBS names these jobs twice: {', '.join(duplicates)}")
    return entries
