"""The endpoint Replicate posts prediction events to."""

import json
import logging

import httpx

from flask import Blueprint, current_app, request
from replicate.exceptions import ReplicateError
from replicate.webhook import Webhooks
from sqlalchemy.exc import IntegrityError

from .extensions import begin_immediate, csrf, db
from .models import Prediction, WebhookDelivery
from .outputs import enqueue_store
from .predictions import apply_remote_state
from .replicate_api import webhook_secret
from .tokens import InvalidToken, load_prediction_id
from .write_lock import database_write_lock

bp = Blueprint("webhooks", __name__)
logger = logging.getLogger(__name__)

#: Statuses a webhook may report; "queued" is the app's own and never comes from Replicate.
REMOTE_STATUSES = frozenset(Prediction.ORDER) - {Prediction.QUEUED}


# The Standard Webhooks signature and the signed token replace the CSRF token here.
@bp.post("/replicate/webhook")
@csrf.exempt
def receive():
    """Verify a Replicate event, record it once and apply it; leave downloads to a job."""
    webhook_id = request.headers.get("webhook-id", "")
    body = request.get_data(as_text=True)

    # The token is checked first: it needs no network, so a request without a valid one
    # never makes the app fetch the signing secret.
    try:
        prediction_id = load_prediction_id(request.args.get("token", ""))
    except InvalidToken as error:
        logger.warning("webhook %r from %s rejected: %s", webhook_id, request.remote_addr, error)
        return {"error": "Invalid or missing token."}, 403

    try:
        secret = webhook_secret()
    except (ReplicateError, httpx.HTTPError) as error:
        logger.error("webhook %r for prediction %s: signing secret unavailable: %s", webhook_id, prediction_id, error)
        return {"error": "The webhook signing secret could not be fetched; retry later."}, 503

    timestamp = request.headers.get("webhook-timestamp", "")
    if timestamp and not (timestamp.isascii() and timestamp.isdigit()):
        logger.warning(
            "webhook %r from %s rejected: webhook-timestamp %r is not a number",
            webhook_id, request.remote_addr, timestamp[:40],
        )
        return {
            "error": "Webhook verification failed: the webhook-timestamp header must be"
            " whole seconds since the epoch."
        }, 401

    try:
        Webhooks.validate(
            headers=dict(request.headers),
            body=body,
            secret=secret,
            tolerance=current_app.config["WEBHOOK_TOLERANCE"],
        )
    except ValueError as error:
        logger.warning("webhook %r from %s rejected: %s", webhook_id, request.remote_addr, error)
        return {"error": f"Webhook verification failed: {error}"}, 401

    payload = _parse_payload(body)
    if payload is None:
        logger.warning("webhook %r for prediction %s: invalid body", webhook_id, prediction_id)
        return {"error": "The body must be a prediction object with a known status."}, 400

    return _record(webhook_id, prediction_id, payload)


def _parse_payload(body):
    """Return the webhook body as a dict with a known status and a string id, or None."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    if payload.get("status") not in REMOTE_STATUSES or not isinstance(payload.get("id"), str):
        return None
    return payload


def _record(webhook_id, prediction_id, payload):
    """Apply a verified event in one write transaction and return the response for Replicate.

    A repeat is recognized by a read that takes no write lock, and the write transaction
    runs under database_write_lock, so concurrent deliveries queue without sleeping.
    """
    if _is_recorded(webhook_id):
        logger.info("webhook %s for prediction %s is a repeat", webhook_id, prediction_id)
        return {"result": "duplicate"}, 200

    with database_write_lock(current_app.config):
        try:
            response, store = _apply(webhook_id, prediction_id, payload)
        finally:
            db.session.rollback()

    if store:
        enqueue_store(prediction_id)
    return response


def _is_recorded(webhook_id):
    token = begin_immediate.set(False)
    try:
        found = db.session.scalar(db.select(WebhookDelivery.id).filter_by(webhook_id=webhook_id))
        db.session.rollback()
    finally:
        begin_immediate.reset(token)
    return found is not None


def _apply(webhook_id, prediction_id, payload):
    """Record the delivery and apply its state; return (response, whether to store the output)."""
    remote_id = payload["id"]
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        logger.info("webhook %s for deleted prediction %s (%s) ignored", webhook_id, prediction_id, remote_id)
        return ({"result": "prediction deleted"}, 200), False

    if prediction.replicate_id not in (None, remote_id):
        logger.warning(
            "webhook %s names %s but prediction %s is %s",
            webhook_id, remote_id, prediction_id, prediction.replicate_id,
        )
        return ({"error": "The token belongs to another prediction."}, 409), False

    # Checked again inside the write transaction, for a repeat that arrived meanwhile.
    if _is_recorded_in_transaction(webhook_id):
        logger.info("webhook %s for prediction %s is a concurrent repeat", webhook_id, prediction_id)
        return ({"result": "duplicate"}, 200), False

    event = WebhookDelivery.event_for(payload)
    db.session.add(
        WebhookDelivery(
            webhook_id=webhook_id, prediction_id=prediction_id, event=event, status=payload["status"]
        )
    )
    old_status = prediction.status
    store = apply_remote_state(prediction, payload)
    try:
        db.session.commit()
    except IntegrityError:
        # Only a transaction that did not begin immediate can get here, when another
        # process stored the same webhook-id first.
        db.session.rollback()
        logger.info("webhook %s for prediction %s is a concurrent repeat", webhook_id, prediction_id)
        return ({"result": "duplicate"}, 200), False

    logger.info(
        "webhook %s (%s): prediction %s (%s) %s -> %s",
        webhook_id, event, prediction_id, remote_id, old_status, prediction.status,
    )
    return ({"result": "accepted"}, 200), store


def _is_recorded_in_transaction(webhook_id):
    found = db.session.scalar(db.select(WebhookDelivery.id).filter_by(webhook_id=webhook_id))
    return found is not None
