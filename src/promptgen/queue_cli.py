"""`flask --app promptgen queue ...`: inspect and manage the job queue file."""

import datetime
import functools
import json
import math
import os
import sqlite3

import click
from flask import current_app
from flask.cli import AppGroup

from . import queue_admin
from .queue import ENDED_STATUSES, STARTED, get_queue, queue_path_from_config
from .queue_priorities import unlisted_warning

queue_group = AppGroup("queue", help="Inspect and manage the job queue.")

ALL_STATUSES = ("queued", "scheduled", STARTED, *ENDED_STATUSES)

#: Next step to suggest after an SQLite error, keyed by its primary result code.
SQLITE_ERROR_HINTS = {
    sqlite3.SQLITE_NOTADB: "Check that QUEUE_DATABASE names the queue's SQLite file.",
    sqlite3.SQLITE_CANTOPEN: (
        "Check that QUEUE_DATABASE names a file, not a folder, and that this user can read it."
    ),
    sqlite3.SQLITE_READONLY: "Check that this user can write the file and its folder.",
    sqlite3.SQLITE_BUSY: "Another process holds the write lock, so try again later.",
}


def requires_queue_file(command):
    """Run command only if the app's queue file exists and opens.

    The web app and the worker create a missing queue file, but these commands
    reject one, because a mistyped QUEUE_DATABASE would otherwise create an empty
    file that shows no jobs. SQLite errors and an unsupported schema version become
    one-line messages that name the file, with exit status 1.
    """

    @functools.wraps(command)
    def run_with_queue_file(*args, **kwargs):
        path = _existing_queue_path()
        try:
            _open_queue()
            return command(*args, **kwargs)
        except sqlite3.Error as error:
            raise click.ClickException(_sqlite_error_message(path, error)) from None

    return run_with_queue_file


def _existing_queue_path():
    try:
        path = queue_path_from_config(current_app.config)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    if not os.path.exists(path):
        raise click.ClickException(
            f"queue file {path} not found. Check QUEUE_DATABASE, or start a worker once"
            " to create it."
        )
    return path


def _open_queue():
    """Open the calling thread's connection, which checks the file's schema version."""
    try:
        get_queue().read("SELECT 1")
    except RuntimeError as error:
        # A schema version newer than this code, or a file that cannot use WAL mode.
        # Both messages name the file and the fix.
        raise click.ClickException(str(error)) from None


def _sqlite_error_message(path, error):
    # Errors that Python raises itself, such as a closed connection, have no code.
    code = getattr(error, "sqlite_errorcode", None)
    primary_code = None if code is None else code & 0xFF
    hint = SQLITE_ERROR_HINTS.get(primary_code, "Check QUEUE_DATABASE.")
    return f"queue file {path} failed: {error}. {hint}"


@queue_group.command("stats")
@requires_queue_file
def stats_command():
    """Show job counts per queue and status, the oldest waiting job and recent throughput."""
    queue = get_queue()
    stats = queue_admin.collect_stats(queue)

    click.echo(f"queue file: {queue.path}")
    statuses = [status for status in ALL_STATUSES if any(status in c for c in stats.counts.values())]
    header = ["queue", *statuses]
    rows = [
        [name, *(str(counts.get(status, 0)) for status in statuses)]
        for name, counts in sorted(stats.counts.items())
    ]
    for line in _format_table(header, rows):
        click.echo(line)
    if not rows:
        click.echo("(no jobs)")

    click.echo("")
    if stats.oldest_waiting is None:
        click.echo("oldest waiting job: none")
    else:
        job_id, name, waited = stats.oldest_waiting
        click.echo(f"oldest waiting job: {job_id} in {name}, waiting {_seconds(waited)}")
    minutes = queue_admin.RECENT_SECONDS / 60
    click.echo(f"jobs per minute (last {minutes:g} min): {stats.jobs_per_minute:.1f}")
    click.echo(f"mean wait (last {minutes:g} min): {_seconds(stats.mean_wait_seconds)}")
    click.echo(f"mean run time (last {minutes:g} min): {_seconds(stats.mean_run_seconds)}")


@queue_group.command("failed")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Number of failed jobs to list, newest first.")
@click.option("--traceback", "show_traceback", is_flag=True, help="Print each job's traceback.")
@requires_queue_file
def failed_command(limit, show_traceback):
    """List failed jobs with their errors."""
    jobs = queue_admin.failed_jobs(get_queue(), limit=limit)
    if not jobs:
        click.echo("no failed jobs")
        return

    for job in jobs:
        ended = _timestamp(job.ended_at)
        click.echo(
            f"{job.id} {job.func} queue {job.queue}, {job.attempts} of {job.max_attempts}"
            f" attempts, failed {ended}: {_error_line(job)}"
        )
        if show_traceback and job.error:
            click.echo(job.error.rstrip())
            click.echo("")


@queue_group.command("show")
@click.argument("job_id")
@requires_queue_file
def show_command(job_id):
    """Show one job: its call, status, attempts, times, worker, result and error."""
    job = get_queue().fetch_job(job_id)
    if job is None:
        raise click.ClickException(f"job {job_id} not found")

    fields = [
        ("id", job.id),
        ("status", job.status),
        ("queue", job.queue),
        ("function", job.func),
        ("args", json.dumps(job.args)),
        ("kwargs", json.dumps(job.kwargs)),
        ("key", job.key or "none"),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("timeout", "worker default" if job.timeout is None else _seconds(job.timeout)),
        ("enqueued", _timestamp(job.enqueued_at)),
        ("run at", _timestamp(job.run_at)),
        ("started", _timestamp(job.started_at)),
        ("ended", _timestamp(job.ended_at)),
        ("worker", job.worker_id or "none"),
        ("lease until", _timestamp(job.lease_until)),
        ("result", json.dumps(job.result)),
    ]
    if job.error_type or job.error_message:
        fields.append(("error", _error_line(job)))
    for name, value in fields:
        click.echo(f"{name + ':':<13}{value}")
    if job.error:
        click.echo("")
        click.echo(job.error.rstrip())


@queue_group.command("retry")
@click.argument("job_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Queue every failed job again.")
@click.option("--queue", "queue_name", help="With --all, only the failed jobs of this queue.")
@requires_queue_file
def retry_command(job_id, retry_all, queue_name):
    """Queue a failed or canceled job again, or every failed job with --all."""
    queue = get_queue()
    if retry_all == (job_id is not None):
        raise click.UsageError("give a job id or --all, not both or neither")

    if retry_all:
        count = queue.requeue_failed(queue=queue_name)
        click.echo(f"queued {count} failed jobs again")
        # Counted after the requeue, so a failed job that lost to another failed job
        # with the same key, queued again just now, is counted too.
        stayed_failed = queue_admin.count_failed_with_active_key(queue, queue_name)
        if stayed_failed:
            click.echo(
                f"{stayed_failed} failed jobs stayed failed, because another waiting or running job"
                " has the same key"
            )
        return

    try:
        requeued = queue.requeue(job_id)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if not requeued:
        raise click.ClickException(_not_changed(queue, job_id, "failed or canceled"))
    click.echo(f"queued job {job_id} again")


@queue_group.command("cancel")
@click.argument("job_id")
@requires_queue_file
def cancel_command(job_id):
    """Cancel a queued or scheduled job, or a started one whose lease expired."""
    queue = get_queue()
    if queue.cancel(job_id):
        click.echo(f"canceled job {job_id}")
        return

    job = queue.fetch_job(job_id)
    if job is not None and job.status == STARTED:
        raise click.ClickException(
            f"job {job_id} is started and its worker renews the lease until"
            f" {_timestamp(job.lease_until)}. Stop that worker, or cancel the job after"
            " the lease has expired."
        )
    raise click.ClickException(_not_changed(queue, job_id, "queued or scheduled"))


@queue_group.command("purge")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([status for status in ALL_STATUSES if status != STARTED]),
    help="Delete jobs in this status. Repeat the option for several statuses."
    "  [default: finished, failed, canceled]",
)
@click.option("--queue", "queue_name", help="Only delete jobs of this queue.")
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
@requires_queue_file
def purge_command(statuses, queue_name, yes):
    """Delete jobs now, by default every ended job (finished, failed and canceled)."""
    statuses = statuses or ENDED_STATUSES
    where = f" in queue {queue_name}" if queue_name else ""
    if not yes:
        click.confirm(f"Delete every {', '.join(statuses)} job{where}?", abort=True)

    deleted = queue_admin.purge(get_queue(), statuses, queue_name)
    click.echo(f"deleted {deleted} jobs")


def _check_delay(context, parameter, delay):
    if not math.isfinite(delay) or delay < 0:
        raise click.BadParameter(
            f"delay must be a finite number of seconds, zero or more, got {delay!r}",
            param_hint="--delay",
        )
    return delay


def _option_for_error(message):
    """Return the enqueue option that a ValueError message from Queue.enqueue concerns, or None."""
    if message.startswith("queue"):
        return "--queue"
    if message.startswith(("delay", "at ")):
        return "--delay"
    return None


@queue_group.command("enqueue")
@click.option("--queue", "queue_name", default="default", show_default=True,
              help="Queue to add the job to.")
@click.option("--delay", type=float, default=0, show_default=True, callback=_check_delay,
              help="Seconds before the job may start, zero or more.")
@requires_queue_file
def enqueue_command(queue_name, delay):
    """Add a job that does nothing, to check that workers take jobs from a queue."""
    try:
        job_id = get_queue().enqueue(queue_admin.noop, queue=queue_name, delay=delay)
    except ValueError as error:
        message = str(error)
        option = _option_for_error(message)
        if option is None:
            raise click.ClickException(message) from None
        raise click.BadParameter(message, param_hint=option) from None
    consequence = "only a worker started with --queues naming it takes this job"
    warning = unlisted_warning(current_app.config, [queue_name], consequence)
    if warning:
        click.echo(warning, err=True)
    click.echo(job_id)


@queue_group.command("prune")
@requires_queue_file
def prune_command():
    """Delete ended jobs older than QUEUE_KEEP_FINISHED_SECONDS or QUEUE_KEEP_FAILED_SECONDS."""
    deleted = queue_admin.prune_jobs()
    total = sum(deleted.values())
    click.echo(f"deleted {total} old jobs")


def _not_changed(queue, job_id, expected):
    job = queue.fetch_job(job_id)
    if job is None:
        return f"job {job_id} not found"
    return f"job {job_id} is {job.status}, not {expected}"


def _format_table(header, rows):
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return lines


def _error_line(job):
    return f"{job.error_type or 'error'}: {job.error_message or ''}".rstrip()


def _seconds(value):
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"


def _timestamp(epoch_seconds):
    if epoch_seconds is None:
        return "n/a"
    moment = datetime.datetime.fromtimestamp(epoch_seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
