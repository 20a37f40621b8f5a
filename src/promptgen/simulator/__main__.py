"""Run the simulator with fault switches: python -m promptgen.simulator --help."""

import argparse
import os
from dataclasses import fields

from . import serve
from .faults import FaultSettings

#: Help text of each fault switch's command-line flag.
FLAG_HELP = {
    "duplicate_webhooks": "copies of each webhook delivery, sent at once with one webhook-id",
    "reorder_webhooks": "send each prediction's earlier events after its completed event",
    "webhook_delay": "seconds to wait before each webhook delivery",
    "unsigned_webhooks": "send webhooks without the webhook-signature header",
    "drop_webhooks": "send no webhooks at all",
    "fail_predictions": "end every prediction as failed",
    "throttle_creates": "answer this many next creates with HTTP 429",
    "retry_after": "seconds in the Retry-After header of a throttled create",
    "fail_creates": "answer this many next creates with HTTP 503",
    "stall_creates": "create this many next predictions but answer late (see --create-stall)",
    "create_stall": "seconds a stalled create holds its response",
    "expire_outputs": "remove output files as soon as each prediction succeeds",
    "output_delay": "seconds an output file request waits before it is answered",
}


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m promptgen.simulator",
        description="Serve a local stand-in for the Replicate HTTP API, with optional faults.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5001, help="port to listen on")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds each prediction runs")
    parser.add_argument("--instance-path", help="folder that keeps the webhook signing secret")
    parser.add_argument("--webhook-secret", help="signing secret (whsec_...) to use instead")

    defaults = FaultSettings()
    for field in fields(FaultSettings):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=FLAG_HELP[field.name])
        else:
            parser.add_argument(
                flag, type=type(default), default=default, help=f"{FLAG_HELP[field.name]} (default {default})"
            )
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    defaults = FaultSettings()
    faults = {
        field.name: getattr(arguments, field.name)
        for field in fields(FaultSettings)
        if getattr(arguments, field.name) != getattr(defaults, field.name)
    }
    config = {"SIMULATOR_WEBHOOK_SECRET": arguments.webhook_secret}
    serve(
        host=arguments.host,
        port=arguments.port,
        delay=arguments.delay,
        instance_path=arguments.instance_path or os.environ.get("PROMPTGEN_INSTANCE_PATH"),
        config=config,
        faults=faults,
    )


if __name__ == "__main__":
    main()
