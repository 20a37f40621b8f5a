"""Configuration: defaults in code, then instance/config.py, then the environment."""

import os
import secrets
from pathlib import Path

#: Variables read from the environment when set. Each overrides instance/config.py.
ENVIRONMENT_KEYS = (
    "SECRET_KEY",
    "DATABASE_URL",
    "QUEUE_DATABASE",
    "REPLICATE_API_TOKEN",
    "REPLICATE_BASE_URL",
    "REPLICATE_MODEL",
    "REPLICATE_WEBHOOK_SECRET",
    "PUBLIC_URL",
    "PORT",
    "SIMULATOR_PORT",
    "REPLICATE_WEBHOOKS",
)

REPLICATE_API_URL = "https://api.replicate.com"

#: Bearer token sent to the local simulator, which accepts any token.
SIMULATOR_TOKEN = "local-simulator"

DEFAULTS = {
    "PORT": 5000,
    "SIMULATOR_PORT": 5001,
    "REPLICATE_MODEL": "stability-ai/stable-diffusion-img2img",
    #: Upload limit in bytes; larger requests get a 413 page.
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,
    #: Uploaded photos are resized to fit a square of this many pixels.
    "IMAGE_MAX_SIDE": 768,
    #: Largest output image the store job downloads, in bytes.
    "OUTPUT_MAX_BYTES": 20 * 1024 * 1024,
    #: Read timeout of output downloads, in seconds.
    "OUTPUT_TIMEOUT": 30.0,
    #: Connect timeout and total time limit of one output download, in seconds.
    "OUTPUT_CONNECT_TIMEOUT": 10.0,
    "OUTPUT_DEADLINE": 120.0,
    #: Hosts that Replicate serves prediction outputs from; subdomains count too.
    "REPLICATE_OUTPUT_HOSTS": ("replicate.delivery",),
    #: Webhooks whose timestamp is further from now than this, in seconds, are rejected.
    "WEBHOOK_TOLERANCE": 300,
    #: Predictions one account may have queued or running at once; each is a paid run.
    "MAX_PENDING_PREDICTIONS": 8,
    #: Seconds between the requests a pending prediction's placeholder sends for its next state.
    "POLL_INTERVAL": 2,
    #: Job queue weights: a worker takes from a queue with probability weight / total
    #: weight of the queues that have ready jobs (see promptgen.queue_priorities).
    "QUEUE_PRIORITIES": {"critical": 10, "urgent": 5, "default": 1},
    #: Seconds a job's claim lasts; the worker renews it three times per period.
    "QUEUE_LEASE_SECONDS": 60.0,
    #: Seconds a job may run when it was enqueued without timeout=.
    "QUEUE_DEFAULT_TIMEOUT": 600.0,
    #: Seconds SIGTERM or SIGINT waits for running jobs before releasing them.
    "QUEUE_SHUTDOWN_GRACE_SECONDS": 30.0,
    #: PRAGMA synchronous of the queue file: "NORMAL", or "FULL" to fsync every commit.
    "QUEUE_SYNCHRONOUS": "NORMAL",
    #: How long ended jobs stay in the queue file before the prune job deletes them.
    "QUEUE_KEEP_FINISHED_SECONDS": 24 * 3600,
    "QUEUE_KEEP_FAILED_SECONDS": 7 * 24 * 3600,
    #: Jobs that one worker at a time enqueues at fixed intervals (see promptgen.scheduler).
    "PERIODIC_JOBS": [
        {"func": "promptgen.queue_admin:prune_jobs", "interval": 3600},
        {"func": "promptgen.jobs:reconcile_predictions", "interval": 60},
    ],
    #: Events Replicate posts to the webhook: the start, new log lines (at most one request
    #: every 500 ms, which carries the progress bar) and the end of each run.
    "REPLICATE_WEBHOOK_EVENTS": ("start", "logs", "completed"),
    #: "off" for a machine that Replicate cannot reach: the worker polls each prediction.
    "REPLICATE_WEBHOOKS": "on",
    #: Seconds between two polls of one prediction when webhooks are off.
    "REPLICATE_POLL_SECONDS": 2.0,
    #: Read timeout and connect timeout of Replicate API requests, in seconds.
    "REPLICATE_TIMEOUT": 30.0,
    "REPLICATE_CONNECT_TIMEOUT": 5.0,
    #: Create attempts per prediction before it fails, counting throttled ones.
    "CREATE_MAX_ATTEMPTS": 6,
    #: Delay before the second attempt of a create or download, in seconds; it doubles per attempt.
    "RETRY_BASE_SECONDS": 2.0,
    "RETRY_MAX_SECONDS": 300.0,
    #: Pages of GET /v1/predictions searched for a create whose response was lost.
    "LOST_CREATE_PAGES": 3,
    #: Download attempts per output before the row shows a failed download.
    "DOWNLOAD_MAX_ATTEMPTS": 3,
    #: Largest output image the store job decodes, in pixels (width times height).
    "OUTPUT_MAX_PIXELS": 4096 * 4096,
    #: Replicate deletes outputs of API predictions one hour after they are created.
    "OUTPUT_LIFETIME": 3600,
    #: Pending predictions that have not changed for this many seconds are checked by
    #: reconcile_predictions, which requests their state from Replicate.
    "RECONCILE_AFTER": 120,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_SAMESITE": "Lax",
}


def load_config(app, test_config=None):
    """Fill ``app.config`` from defaults, instance/config.py, the environment and test_config."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)

    for key in ENVIRONMENT_KEYS:
        if os.environ.get(key):
            app.config[key] = os.environ[key]

    if test_config is not None:
        app.config.from_mapping(test_config)

    _derive_settings(app)


def _derive_settings(app):
    """Fill settings whose defaults depend on other settings."""
    config = app.config
    instance = Path(app.instance_path)
    config["PORT"] = int(config["PORT"])
    config["SIMULATOR_PORT"] = int(config["SIMULATOR_PORT"])

    # The instance folder contains the databases and secrets, so only its owner may read it.
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = read_or_create_secret_key(instance / "secret_key")

    config.setdefault(
        "SQLALCHEMY_DATABASE_URI",
        config.get("DATABASE_URL") or f"sqlite:///{instance / 'promptgen.sqlite3'}",
    )
    config.setdefault("QUEUE_DATABASE", str(instance / "queue.sqlite3"))
    config.setdefault("PUBLIC_URL", f"http://127.0.0.1:{config['PORT']}")
    config["PUBLIC_URL"] = config["PUBLIC_URL"].rstrip("/")

    config["REPLICATE_LOCAL"] = not config.get("REPLICATE_API_TOKEN")
    if config["REPLICATE_LOCAL"]:
        config["REPLICATE_API_TOKEN"] = SIMULATOR_TOKEN
        config.setdefault(
            "REPLICATE_BASE_URL", f"http://127.0.0.1:{config['SIMULATOR_PORT']}"
        )
    else:
        config.setdefault("REPLICATE_BASE_URL", REPLICATE_API_URL)
    config["REPLICATE_BASE_URL"] = config["REPLICATE_BASE_URL"].rstrip("/")


def read_or_create_secret_key(path):
    """Return the key stored at path, creating it (readable by the owner only) on first use.

    The key is written to a private temporary file and then hard-linked into place, so a
    process that starts at the same moment reads either no file or the whole key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path.read_text().strip()

    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32))

    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_text().strip()
