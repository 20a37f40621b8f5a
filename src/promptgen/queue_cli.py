"""`flask --app promptgen queue ...`: inspect and manage the job queue file."""

import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from . import queue_admin
from .queue import ENDED_STATUSES, STARTED, get_queue
from .queue_priorities import unlisted_warning

queue_group = AppGroup("queue", help="Inspect and manage the job queue.")

ALL_STATUSES = ("queued", "scheduled", STARTED, *ENDED_STATUSES)


@queue_group.command("stats")
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
def failed_command(limit, show_traceback):
    """List failed jobs with their errors."""
    jobs = queue_admin.failed_jobs(get_queue(), limit=limit)
    if not jobs:
        click.echo("no failed jobs")
        return

    for job in jobs:
        ended = _timestamp(job.ended_at)
        error = f"{job.error_type or 'error'}: {job.error_message or ''}".rstrip()
        click.echo(
            f"{job.id} {job.func} queue {job.queue}, {job.attempts} of {job.max_attempts}"
            f" attempts, failed {ended}: {error}"
        )
        if show_traceback and job.error:
            click.echo(job.error.rstrip())
            click.echo("")


@queue_group.command("retry")
@click.argument("job_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Queue every failed job again.")
@click.option("--queue", "queue_name", help="With --all, only the failed jobs of this queue.")
def retry_command(job_id, retry_all, queue_name):
    """Queue a failed or canceled job again, or every failed job with --all."""
    queue = get_queue()
    if retry_all == (job_id is not None):
        raise click.UsageError("give a job id or --all, not both or neither")

    if retry_all:
        count = queue.requeue_failed(queue=queue_name)
        click.echo(f"queued {count} failed jobs again")
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
def cancel_command(job_id):
    """Cancel a queued or scheduled job."""
    queue = get_queue()
    if not queue.cancel(job_id):
        raise click.ClickException(_not_changed(queue, job_id, "queued or scheduled"))
    click.echo(f"canceled job {job_id}")


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
def purge_command(statuses, queue_name, yes):
    """Delete jobs now, by default every ended job (finished, failed and canceled)."""
    statuses = statuses or ENDED_STATUSES
    where = f" in queue {queue_name}" if queue_name else ""
    if not yes:
        click.confirm(f"Delete every {', '.join(statuses)} job{where}?", abort=True)

    deleted = queue_admin.purge(get_queue(), statuses, queue_name)
    click.echo(f"deleted {deleted} jobs")


@queue_group.command("enqueue")
@click.option("--queue", "queue_name", default="default", show_default=True,
              help="Queue to add the job to.")
@click.option("--delay", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds before the job may start.")
def enqueue_command(queue_name, delay):
    """Add a job that does nothing, to check that workers take jobs from a queue."""
    try:
        job_id = get_queue().enqueue(queue_admin.noop, queue=queue_name, delay=delay)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--queue") from None
    consequence = "only a worker started with --queues naming it takes this job"
    warning = unlisted_warning(current_app.config, [queue_name], consequence)
    if warning:
        click.echo(warning, err=True)
    click.echo(job_id)


@queue_group.command("prune")
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
