"""The app's use of the official Replicate client: versions, predictions and webhook secret."""

import logging
import threading
import time
from email.utils import parsedate_to_datetime

import httpx
import replicate
from flask import current_app
from replicate.exceptions import ReplicateError
from replicate.webhook import WebhookSigningSecret

from .tokens import sign_prediction_id

logger = logging.getLogger(__name__)

#: How long a looked-up "latest version" of the model is reused, in seconds.
VERSION_CACHE_SECONDS = 600

_lock = threading.Lock()
_versions = {}
_webhook_secrets = {}


class Throttled(ReplicateError):
    """HTTP 429 from Replicate, with the seconds to wait from its Retry-After header, or None."""

    def __init__(self, retry_after=None, **fields):
        super().__init__(**fields)
        self.retry_after = retry_after


def get_client():
    """Return a client with the configured timeouts that raises Throttled for HTTP 429.

    The client's own transport retries GET requests on 429, 503 and 504, but never POST,
    so creates and cancels are retried by the jobs that send them.
    """
    config = current_app.config
    timeout = httpx.Timeout(
        config["REPLICATE_TIMEOUT"], connect=config["REPLICATE_CONNECT_TIMEOUT"]
    )
    return replicate.Client(
        api_token=config["REPLICATE_API_TOKEN"],
        base_url=config["REPLICATE_BASE_URL"],
        timeout=timeout,
        transport=TimeoutTransport(timeout),
        event_hooks={"response": [_raise_throttled]},
    )


class TimeoutTransport(httpx.HTTPTransport):
    """An HTTP transport that applies default timeouts to requests sent without any.

    replicate 1.0.7 sends predictions.create with timeout=None, which turns every timeout
    off, unless the call sets wait. Without this a create could hang for good.
    """

    def __init__(self, timeout, **kwargs):
        super().__init__(**kwargs)
        self.default_timeout = timeout.as_dict()

    def handle_request(self, request):
        timeouts = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            name: self.default_timeout[name] if timeouts.get(name) is None else timeouts[name]
            for name in self.default_timeout
        }
        return super().handle_request(request)


def _raise_throttled(response):
    if response.status_code != 429:
        return
    response.read()
    error = ReplicateError.from_response(response)
    raise Throttled(
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        type=error.type,
        title=error.title,
        status=error.status,
        detail=error.detail,
        instance=error.instance,
    )


def parse_retry_after(value):
    """Return the seconds to wait from a Retry-After value (a delay or an HTTP date), or None."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def is_retryable(error):
    """Return True for failures worth repeating: no response, HTTP 429 or HTTP 5xx."""
    if isinstance(error, httpx.TransportError):
        return True
    return error.status is None or error.status == 429 or error.status >= 500


def webhooks_enabled():
    """Return False when REPLICATE_WEBHOOKS is off, so the worker polls each prediction."""
    return str(current_app.config["REPLICATE_WEBHOOKS"]).strip().lower() not in ("off", "0", "false", "no")


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
    """Return the URL Replicate posts this prediction's events to, with its signed token.

    The token has no timestamp, so the URL is the same every time, which lets a retried
    create recognize the prediction an earlier attempt created.
    """
    base = current_app.config["PUBLIC_URL"]
    return f"{base}/replicate/webhook?token={sign_prediction_id(prediction_id)}"
