"""Queue statistics and clean-up: what `flask --app promptgen queue` reports and deletes.

Pruning deletes ended jobs after they have been kept for a while: finished and
canceled jobs after QUEUE_KEEP_FINISHED_SECONDS (default one day), failed jobs after
QUEUE_KEEP_FAILED_SECONDS (default seven days). ``prune_jobs`` is the periodic job that
does it, registered in PERIODIC_JOBS by default.
"""

import logging
from dataclasses import dataclass, field

from flask import current_app

from .queue import (
    ENDED_STATUSES,
    FAILED,
    FINISHED,
    ID_COLUMN,
    JOB_COLUMNS,
    STARTED,
    WAITING_STATUSES,
    Job,
    get_queue,
)
from .queue_schema import ACTIVE_FILTER

logger = logging.getLogger(__name__)

DEFAULT_KEEP_FINISHED_SECONDS = 24 * 3600.0
DEFAULT_KEEP_FAILED_SECONDS = 7 * 24 * 3600.0

#: The window that throughput and mean times are measured over.
RECENT_SECONDS = 300.0


@dataclass
class QueueStats:
    """Counts and timings of one queue file at one moment."""

    #: {queue name: {status: count}}
    counts: dict = field(default_factory=dict)
    #: (job id, queue, seconds it has waited) of the ready job that has waited longest.
    oldest_waiting: tuple | None = None
    #: Jobs that ended (finished or failed) per minute over the last RECENT_SECONDS.
    jobs_per_minute: float = 0.0
    #: Mean time from ready to started, and from started to ended, over the same jobs.
    mean_wait_seconds: float | None = None
    mean_run_seconds: float | None = None


def collect_stats(queue, now=None):
    """Return the QueueStats of queue at now."""
    now = queue.clock() if now is None else now
    stats = QueueStats()

    for row in queue.read("SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"):
        stats.counts.setdefault(row[0], {})[row[1]] = row[2]

    oldest = queue.read(
        f"SELECT {ID_COLUMN} AS id, queue, run_at FROM jobs WHERE status IN (?, ?) AND run_at <= ?"
        " ORDER BY run_at LIMIT 1",
        (*WAITING_STATUSES, now),
    )
    if oldest:
        stats.oldest_waiting = (oldest[0]["id"], oldest[0]["queue"], now - oldest[0]["run_at"])

    since = now - RECENT_SECONDS
    row = queue.read(
        "SELECT count(*), avg(max(started_at - run_at, 0)), avg(ended_at - started_at)"
        " FROM jobs WHERE status IN (?, ?) AND ended_at >= ? AND started_at IS NOT NULL",
        (FINISHED, FAILED, since),
    )[0]
    stats.jobs_per_minute = row[0] / (RECENT_SECONDS / 60)
    stats.mean_wait_seconds = row[1]
    stats.mean_run_seconds = row[2]
    return stats


def failed_jobs(queue, limit=50):
    """Return the most recently ended failed jobs, newest first."""
    rows = queue.read(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY ended_at DESC LIMIT ?",
        (FAILED, limit),
    )
    return [Job.from_row(row) for row in rows]


def count_failed_with_active_key(queue, queue_name=None):
    """Return how many failed jobs, of all queues or of one, share a waiting or running job's key.

    Queue.requeue_failed leaves such jobs failed, because a key is unique among
    waiting and running jobs.
    """
    # Unqualified columns in ACTIVE_FILTER refer to the inner query's "active" rows.
    sql = (
        "SELECT count(*) FROM jobs AS failed WHERE failed.status = ?"
        " AND failed.unique_key IS NOT NULL AND EXISTS (SELECT 1 FROM jobs AS active"
        f" WHERE active.unique_key = failed.unique_key AND {ACTIVE_FILTER})"
    )
    params = [FAILED]
    if queue_name is not None:
        sql += " AND failed.queue = ?"
        params.append(queue_name)
    return queue.read(sql, params)[0][0]


def prune(queue, keep_finished, keep_failed, now=None):
    """Delete ended jobs older than their keep time, and return {status: deleted count}."""
    now = queue.clock() if now is None else now
    cutoffs = {
        "finished": now - keep_finished,
        "canceled": now - keep_finished,
        "failed": now - keep_failed,
    }
    deleted = {}
    with queue.transaction() as connection:
        for status, cutoff in cutoffs.items():
            cursor = connection.execute(
                "DELETE FROM jobs WHERE status = ? AND ended_at < ?", (status, cutoff)
            )
            if cursor.rowcount:
                deleted[status] = cursor.rowcount
    return deleted


def purge(queue, statuses=ENDED_STATUSES, queue_name=None):
    """Delete every job in the given statuses, or only those of one queue, and return how many.

    Raises ValueError for the started status, because a running job's worker would
    then store its result on a missing row.
    """
    statuses = tuple(statuses)
    if STARTED in statuses:
        raise ValueError("started jobs cannot be purged while their workers run them")
    if not statuses:
        return 0

    placeholders = ", ".join("?" for _ in statuses)
    sql = f"DELETE FROM jobs WHERE status IN ({placeholders})"
    params = list(statuses)
    if queue_name is not None:
        sql += " AND queue = ?"
        params.append(queue_name)

    with queue.transaction() as connection:
        return connection.execute(sql, params).rowcount


def prune_jobs():
    """Delete the current app's old ended jobs. The scheduler runs this periodically."""
    config = current_app.config
    deleted = prune(
        get_queue(),
        keep_finished=config.get("QUEUE_KEEP_FINISHED_SECONDS", DEFAULT_KEEP_FINISHED_SECONDS),
        keep_failed=config.get("QUEUE_KEEP_FAILED_SECONDS", DEFAULT_KEEP_FAILED_SECONDS),
    )
    if deleted:
        logger.info("pruned old jobs: %s", deleted)
    return deleted


def noop():
    """Do nothing. `flask --app promptgen queue enqueue` adds this job to check that workers run."""
    return "ok"
