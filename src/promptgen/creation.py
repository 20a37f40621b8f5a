"""Sending a queued prediction to Replicate once, through throttling, errors and lost responses."""

import logging
from datetime import datetime, timedelta

import httpx
from flask import current_app
from replicate.exceptions import ReplicateError

from . import settings
from .extensions import db
from .images import data_url
from .models import Prediction, utcnow
from .predictions import apply_remote_state, fail_prediction
from .queue import enqueue_call
from .replicate_api import (
    Throttled,
    get_client,
    is_retryable,
    latest_version_id,
    webhook_url,
    webhooks_enabled,
)

logger = logging.getLogger(__name__)

#: Queue for the jobs that create, poll, cancel and store predictions.
PREDICTION_QUEUE = "urgent"

#: How much earlier than sent_at Replicate's clock may date a prediction that the first
#: attempt created, in seconds.
CLOCK_SKEW = timedelta(minutes=2)


def generate(prediction_id):
    """Create the Replicate prediction for a queued row, once.

    Each attempt is counted and the time of the first one is kept in the row. An attempt
    after the first looks for the prediction an earlier one may have created (its response
    lost to a timeout) before it creates another, so one request pays for one run.
    """
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        logger.info("prediction %s: deleted before it was sent", prediction_id)
        return
    if prediction.replicate_id is None and prediction.status != Prediction.QUEUED:
        logger.info("prediction %s: %s before it was sent", prediction_id, prediction.status)
        return
    if prediction.replicate_id is not None:
        logger.info("prediction %s: already sent as %s", prediction_id, prediction.replicate_id)
        return

    image, mime = prediction.photo
    model_input = {
        "prompt": prediction.prompt_text,
        "image": data_url(image, mime),
        **settings.model_input(prediction.settings),
    }
    request = {"input": model_input}
    if webhooks_enabled():
        request["webhook"] = webhook_url(prediction_id)
        request["webhook_events_filter"] = list(current_app.config["REPLICATE_WEBHOOK_EVENTS"])
    earlier_attempt = prediction.sent_at is not None
    prediction.sent_at = prediction.sent_at or utcnow()
    prediction.create_attempts += 1
    attempt = prediction.create_attempts
    sent_at = prediction.sent_at
    # End the transaction so no database lock is held during the HTTP calls.
    db.session.commit()

    try:
        remote = None
        if earlier_attempt:
            remote = find_earlier_prediction(prediction_id, request, sent_at)
        if remote is None:
            remote = _create(request)
    except (ReplicateError, httpx.TransportError) as error:
        _handle_error(prediction_id, attempt, error)
        return

    _record_created(prediction_id, remote)


def _create(request):
    client = get_client()
    version = latest_version_id(client, current_app.config["REPLICATE_MODEL"])
    remote = client.predictions.create(version=version, **request)
    return {"id": remote.id, "status": remote.status, "logs": remote.logs}


def find_earlier_prediction(prediction_id, request, sent_at):
    """Return the prediction an earlier create for this row made, as JSON, or None.

    Searches the newest LOST_CREATE_PAGES pages of GET /v1/predictions back to sent_at. A
    prediction matches by its webhook URL when the listing includes it, and otherwise by
    an equal input that no other row has claimed.
    """
    config = current_app.config
    url = f"{config['REPLICATE_BASE_URL']}/v1/predictions"
    headers = {"Authorization": f"Bearer {config['REPLICATE_API_TOKEN']}"}
    timeout = httpx.Timeout(config["REPLICATE_TIMEOUT"], connect=config["REPLICATE_CONNECT_TIMEOUT"])
    oldest = sent_at - CLOCK_SKEW

    with httpx.Client(timeout=timeout, trust_env=False) as client:
        for _ in range(config["LOST_CREATE_PAGES"]):
            response = client.get(url, headers=headers)
            if response.status_code != 200:
                raise ReplicateError.from_response(response)
            page = response.json()

            for remote in page.get("results", []):
                if _created_before(remote, oldest):
                    return None
                if _matches(remote, request):
                    logger.info(
                        "prediction %s: found %s from an earlier create attempt",
                        prediction_id, remote["id"],
                    )
                    return remote
            url = page.get("next")
            if not url:
                return None
    return None


def _matches(remote, request):
    webhook = request.get("webhook")
    if webhook and "webhook" in remote:
        return remote["webhook"] == webhook

    # NOTE: input matching assumes Replicate lists the input as it was sent. Two rows of
    # one prompt send equal inputs, so a prediction that another row already has never matches.
    if remote.get("input") != request["input"]:
        return False
    claimed = db.session.scalar(db.select(Prediction.id).filter_by(replicate_id=remote["id"]))
    db.session.rollback()
    return claimed is None


def _created_before(remote, moment):
    try:
        created = datetime.fromisoformat(remote["created_at"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return False
    return created.replace(tzinfo=None) < moment


def _handle_error(prediction_id, attempt, error):
    """Fail the row for errors in the request, else queue another attempt while some are left."""
    if not is_retryable(error):
        message = error.detail or error.title or str(error)
        fail_prediction(prediction_id, f"Replicate rejected the request: {message}")
        return

    config = current_app.config
    reason = _describe(error)
    if attempt >= config["CREATE_MAX_ATTEMPTS"]:
        fail_prediction(
            prediction_id,
            f"Replicate could not be reached after {attempt} attempts ({reason}).",
        )
        return

    retry_after = error.retry_after if isinstance(error, Throttled) else None
    delay = retry_delay(attempt, retry_after)
    enqueue_call(
        "promptgen.jobs:generate_prediction", (prediction_id,), queue=PREDICTION_QUEUE, delay=delay
    )
    logger.warning(
        "prediction %s: create attempt %d failed (%s), retrying in %.1f s",
        prediction_id, attempt, reason, delay,
    )


def retry_delay(attempt, retry_after=None):
    """Return the seconds before the attempt after attempt number attempt.

    The delay doubles from RETRY_BASE_SECONDS, is at least what a Retry-After header asked
    for, and is at most RETRY_MAX_SECONDS, which reconcile_predictions relies on.
    """
    config = current_app.config
    backoff = config["RETRY_BASE_SECONDS"] * 2 ** (attempt - 1)
    return min(max(backoff, retry_after or 0.0), config["RETRY_MAX_SECONDS"])


def _describe(error):
    if isinstance(error, httpx.TransportError):
        return f"{type(error).__name__}: {error}"
    return f"HTTP {error.status}: {error.detail or error.title}"


def _record_created(prediction_id, remote):
    """Store the new Replicate id, or cancel the prediction upstream if the row went away."""
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or prediction.status == Prediction.CANCELED:
        db.session.rollback()
        logger.warning(
            "prediction %s: deleted or canceled while %s was created, canceling it",
            prediction_id, remote["id"],
        )
        enqueue_call("promptgen.jobs:cancel_remote", (remote["id"],), queue=PREDICTION_QUEUE)
        return

    store = apply_remote_state(prediction, remote)
    db.session.commit()
    logger.info("prediction %s: created %s (%s)", prediction_id, remote["id"], prediction.status)

    if store:
        from .outputs import enqueue_store  # outputs imports this module

        enqueue_store(prediction_id)
    if not webhooks_enabled() and prediction.is_pending:
        enqueue_call(
            "promptgen.jobs:poll_prediction",
            (prediction_id,),
            queue=PREDICTION_QUEUE,
            delay=current_app.config["REPLICATE_POLL_SECONDS"],
        )
