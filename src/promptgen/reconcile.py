"""Catching up with Replicate without webhooks: polling one prediction, reconciling stale rows."""

import logging
from datetime import timedelta

import httpx
from flask import current_app
from replicate.exceptions import ReplicateError

from .creation import PREDICTION_QUEUE
from .extensions import db
from .models import Prediction, utcnow
from .outputs import enqueue_store
from .predictions import apply_remote_state, fail_prediction, needs_download
from .queue import enqueue_call
from .replicate_api import get_client

logger = logging.getLogger(__name__)

#: Rows checked by one reconcile run; the rest wait for the next run.
RECONCILE_BATCH = 200

RUNNING = (Prediction.STARTING, Prediction.PROCESSING)


def refresh(prediction_id):
    """Ask Replicate for the row's prediction and apply it through the state machine.

    Returns True while the row is still pending afterwards, False once it is final or gone.
    Raises ReplicateError (other than 404) and httpx.TransportError, with nothing written.
    """
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or not prediction.is_pending or prediction.replicate_id is None:
        db.session.rollback()
        return False
    replicate_id = prediction.replicate_id
    db.session.commit()

    try:
        remote = get_client().predictions.get(replicate_id)
    except ReplicateError as error:
        if error.status != 404:
            raise
        fail_prediction(prediction_id, f"Replicate has no prediction {replicate_id}.")
        return False

    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        db.session.rollback()
        return False
    old_status = prediction.status
    body = {
        "id": remote.id,
        "status": remote.status,
        "logs": remote.logs,
        "output": remote.output,
        "error": remote.error,
        "data_removed": getattr(remote, "data_removed", False),
        "started_at": remote.started_at,
        "completed_at": remote.completed_at,
    }
    store = apply_remote_state(prediction, body)
    # Touch the row, so the next reconcile run skips it for RECONCILE_AFTER seconds.
    prediction.updated_at = utcnow()
    pending = prediction.is_pending
    db.session.commit()

    if prediction.status != old_status:
        logger.info(
            "prediction %s (%s): %s -> %s from Replicate",
            prediction_id, replicate_id, old_status, prediction.status,
        )
    if store:
        enqueue_store(prediction_id)
    return pending


def poll(prediction_id):
    """Refresh one prediction and poll it again after REPLICATE_POLL_SECONDS until it ends."""
    interval = current_app.config["REPLICATE_POLL_SECONDS"]
    try:
        pending = refresh(prediction_id)
    except (ReplicateError, httpx.TransportError) as error:
        logger.warning("prediction %s: poll failed (%s), polling again in %g s", prediction_id, error, interval)
        pending = True

    if pending:
        enqueue_call(
            "promptgen.jobs:poll_prediction", (prediction_id,), queue=PREDICTION_QUEUE, delay=interval
        )


def reconcile():
    """Check rows that have not changed for RECONCILE_AFTER seconds, and return their count.

    Running rows are refreshed from Replicate. Succeeded rows whose output is not stored get
    another store job. Queued rows get another generate job once no retry of theirs can
    still be waiting (RETRY_MAX_SECONDS later), which is safe because that job looks for a
    prediction an earlier attempt created before it creates one.
    """
    config = current_app.config
    now = utcnow()
    stale = now - timedelta(seconds=config["RECONCILE_AFTER"])
    lost = stale - timedelta(seconds=config["RETRY_MAX_SECONDS"])

    rows = db.session.execute(
        db.select(Prediction.id, Prediction.status, Prediction.replicate_id, Prediction.updated_at)
        .where(
            Prediction.updated_at < stale,
            Prediction.status.in_([Prediction.QUEUED, *RUNNING, Prediction.SUCCEEDED]),
            Prediction.lacks_images(),
            Prediction.error.is_(None),
        )
        .order_by(Prediction.updated_at)
        .limit(RECONCILE_BATCH)
    ).all()
    db.session.commit()

    for prediction_id, status, replicate_id, updated_at in rows:
        if status in RUNNING and replicate_id is not None:
            _refresh_logged(prediction_id)
        elif status == Prediction.SUCCEEDED:
            _requeue(prediction_id, "promptgen.jobs:store_output", "store")
        elif status == Prediction.QUEUED and updated_at < lost:
            _requeue(prediction_id, "promptgen.jobs:generate_prediction", "generate")

    logger.info("reconcile: checked %d predictions", len(rows))
    return len(rows)


def _refresh_logged(prediction_id):
    try:
        refresh(prediction_id)
    except (ReplicateError, httpx.TransportError) as error:
        logger.warning("reconcile: prediction %s could not be checked: %s", prediction_id, error)


def _requeue(prediction_id, function, name):
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        db.session.rollback()
        return
    prediction.updated_at = utcnow()
    db.session.commit()
    enqueue_call(function, (prediction_id,), queue=PREDICTION_QUEUE)
    logger.info("reconcile: prediction %s has not moved, queued its %s job again", prediction_id, name)
