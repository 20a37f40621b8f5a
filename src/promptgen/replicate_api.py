"""The app's use of the official Replicate client: versions, predictions and webhook secret."""

import logging
import threading
import time

import replicate
from flask import current_app
from replicate.webhook import WebhookSigningSecret

from .tokens import sign_prediction_id

logger = logging.getLogger(__name__)

#: How long a looked-up "latest version" of the model is reused, in seconds.
VERSION_CACHE_SECONDS = 600

_lock = threading.Lock()
_versions = {}
_webhook_secrets = {}


def get_client():
    config = current_app.config
    return replicate.Client(
        api_token=config["REPLICATE_API_TOKEN"], base_url=config["REPLICATE_BASE_URL"]
    )


def latest_version_id(client, model):
    """Return the id of model's latest version, looked up at most every few minutes."""
    key = (current_app.config["REPLICATE_BASE_URL"], model)
    with _lock:
        cached = _versions.get(key)
    if cached and time.monotonic() - cached[1] < VERSION_CACHE_SECONDS:
        return cached[0]

    version = client.models.get(model).latest_version
    if version is None:
        raise LookupError(f"model {model} has no published version")
    with _lock:
        _versions[key] = (version.id, time.monotonic())
    return version.id


def webhook_secret():
    """Return the signing secret for webhooks: configured, or fetched once from Replicate."""
    config = current_app.config
    if config.get("REPLICATE_WEBHOOK_SECRET"):
        return WebhookSigningSecret(key=config["REPLICATE_WEBHOOK_SECRET"])

    base_url = config["REPLICATE_BASE_URL"]
    with _lock:
        if base_url not in _webhook_secrets:
            key = get_client().webhooks.default.secret().key
            _webhook_secrets[base_url] = WebhookSigningSecret(key=key)
            logger.info("webhook signing secret fetched from %s", base_url)
        return _webhook_secrets[base_url]


def webhook_url(prediction_id):
    """Return the URL Replicate posts this prediction's events to, with its signed token."""
    base = current_app.config["PUBLIC_URL"]
    return f"{base}/replicate/webhook?token={sign_prediction_id(prediction_id)}"
