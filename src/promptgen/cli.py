"""Command-line entry points: `flask --app promptgen worker`, `queue` and `replicate-sim`."""

import sqlite3
import sys

import click
from flask import current_app
from flask.cli import with_appcontext


def register(app):
    from .queue_cli import queue_group

    app.cli.add_command(worker_command)
    app.cli.add_command(queue_group)
    app.cli.add_command(simulator_command)


@click.command("worker")
@click.option(
    "--queues",
    help="Comma-separated queue names to take jobs from, such as urgent,default."
    "  [default: every queue in QUEUE_PRIORITIES]",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of worker processes, each running one job at a time. With 1 the jobs"
    " run in this process.",
)
@click.option("--burst", is_flag=True, help="Exit once no job is ready instead of waiting.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    help="Seconds a stop signal waits for running jobs before releasing them."
    "  [default: QUEUE_SHUTDOWN_GRACE_SECONDS]",
)
@with_appcontext
def worker_command(queues, concurrency, burst, grace):
    """Run queued jobs until SIGINT or SIGTERM, or until none is ready with --burst.

    A first signal lets running jobs finish within the grace period, and a second one
    releases them at once.
    """
    from .extensions import begin_immediate
    from .queue_priorities import UNLISTED_WEIGHT, parse_queue_names, unlisted_warning
    from .worker import DEFAULT_SHUTDOWN_GRACE_SECONDS, ClaimError, Worker
    from .worker_pool import WorkerPool

    app = current_app._get_current_object()
    try:
        names = None if queues is None else parse_queue_names(queues)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--queues") from None
    if names is not None:
        consequence = f"this worker weights it {UNLISTED_WEIGHT:g}"
        warning = unlisted_warning(app.config, names, consequence)
        if warning:
            click.echo(warning, err=True)

    # Jobs write what they read, so their transactions take the write lock up front.
    # Forked worker processes inherit this setting from the main thread's context.
    begin_immediate.set(True)
    queue = open_queue(app)

    if concurrency == 1:
        try:
            Worker(app, queue, queues=names, grace_seconds=grace).work(burst=burst)
        except ClaimError as error:
            raise click.ClickException(str(error)) from None
        return

    # Each worker process opens the queue file itself.
    queue.close()

    def make_worker(slot=0):
        return Worker(app, queues=names, grace_seconds=grace)

    if grace is None:
        grace = float(app.config.get("QUEUE_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS))
    pool = WorkerPool(make_worker, concurrency, burst=burst, grace_seconds=grace)
    sys.exit(pool.run())


def open_queue(app):
    """Open the app's queue file, or raise click.ClickException naming the file and the error."""
    from .queue import queue_path_from_config
    from .worker import queue_for_app

    try:
        path = queue_path_from_config(app.config)
        return queue_for_app(app)
    except RuntimeError as error:
        # These messages name the setting or the file: QUEUE_DATABASE unset, a newer
        # schema version, no WAL mode.
        raise click.ClickException(str(error)) from None
    except (sqlite3.Error, OSError) as error:
        raise click.ClickException(f"cannot open queue file {path}: {error}") from None


@click.command("replicate-sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5001, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--delay",
    default=1.0,
    show_default=True,
    type=float,
    help="Seconds each simulated prediction takes to run.",
)
def simulator_command(host, port, delay):
    """Serve a local stand-in for the Replicate HTTP API."""
    from .simulator import serve

    # A secret configured for the app must be the one the simulator signs with.
    config = {"SIMULATOR_WEBHOOK_SECRET": current_app.config.get("REPLICATE_WEBHOOK_SECRET")}
    serve(host=host, port=port, delay=delay, instance_path=current_app.instance_path, config=config)
