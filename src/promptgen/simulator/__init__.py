"""A local stand-in for the Replicate HTTP API, for development and tests without a token.

It serves one model, stability-ai/stable-diffusion-img2img, runs predictions in background
threads with a configurable delay, produces deterministic images with Pillow, and sends
webhooks signed the way Replicate signs them. The official replicate client works against
it with base_url set to the simulator's address.
"""

import logging
from pathlib import Path

from flask import Flask
from werkzeug.serving import run_simple

from .. import PROJECT_ROOT
from . import api
from .service import Simulator

logger = logging.getLogger(__name__)

DEFAULTS = {
    #: Seconds each prediction takes from "starting" to its terminal status.
    "SIMULATOR_DELAY": 1.0,
    #: Signing secret ("whsec_" and base64) to use in place of the one kept in the instance folder.
    "SIMULATOR_WEBHOOK_SECRET": None,
    #: Delivery attempts per webhook event, counting the first one.
    "SIMULATOR_WEBHOOK_ATTEMPTS": 4,
    #: Seconds before the first retry of a webhook. Each later retry waits twice as long.
    "SIMULATOR_WEBHOOK_BACKOFF": 1.0,
    #: Connect and read timeout of one webhook request, in seconds.
    "SIMULATOR_WEBHOOK_TIMEOUT": 10.0,
    #: Predictions per page of GET /v1/predictions.
    "SIMULATOR_PAGE_SIZE": 100,
    #: Largest input image accepted, in pixels (width times height).
    "SIMULATOR_MAX_IMAGE_PIXELS": 4096 * 4096,
    #: Largest input image downloaded from an http(s) URL, in bytes.
    "SIMULATOR_MAX_IMAGE_BYTES": 20 * 1024 * 1024,
    #: Connect and read timeout of an input image download, in seconds.
    "SIMULATOR_IMAGE_TIMEOUT": 30.0,
    #: Largest request body in bytes. A base64 data URL is about 4/3 the size of its image.
    "MAX_CONTENT_LENGTH": 32 * 1024 * 1024,
}


def create_simulator_app(config=None, instance_path=None):
    """Build the simulator's Flask app from DEFAULTS updated with config.

    instance_path is the folder that keeps the webhook signing secret. It defaults to the
    project's instance folder, which the main app uses too.
    """
    # Flask requires an absolute instance path.
    instance_path = Path(instance_path or PROJECT_ROOT / "instance").resolve()
    app = Flask(__name__, instance_path=str(instance_path))
    app.config.from_mapping(DEFAULTS)
    if config:
        app.config.from_mapping(config)

    # Keep Replicate's field order in responses instead of sorting keys.
    app.json.sort_keys = False
    app.extensions["replicate_simulator"] = Simulator.from_config(app.config, app.instance_path)
    api.register(app)
    return app


def serve(host="127.0.0.1", port=5001, delay=1.0, instance_path=None, config=None, faults=None):
    """Serve the simulator with werkzeug until interrupted.

    config overrides DEFAULTS, and faults is a dict of fault switches (see faults.py).
    """
    _configure_logging()
    config = {**(config or {}), "SIMULATOR_DELAY": delay}
    if faults:
        config["SIMULATOR_FAULTS"] = faults
    app = create_simulator_app(config, instance_path)
    logger.info(
        "Replicate simulator serving http://%s:%d with a delay of %.2f s", host, port, delay
    )
    if faults:
        logger.warning("fault switches on: %s", faults)
    run_simple(host, port, app, threaded=True)


def _configure_logging():
    """Send the package's log lines to stderr unless the main app has set that up already."""
    package_logger = logging.getLogger("promptgen")
    if package_logger.handlers:
        return

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
