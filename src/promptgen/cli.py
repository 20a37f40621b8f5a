"""Command-line entry points: `flask --app promptgen worker` and `replicate-sim`."""

import click
from flask import current_app


def register(app):
    app.cli.add_command(worker_command)
    app.cli.add_command(simulator_command)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit once no job is ready instead of waiting.")
def worker_command(burst):
    """Run queued jobs until SIGINT or SIGTERM."""
    from .extensions import begin_immediate
    from .worker import Worker

    # Jobs write what they read, so their transactions take the write lock up front.
    begin_immediate.set(True)
    Worker(current_app._get_current_object()).work(burst=burst)


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
