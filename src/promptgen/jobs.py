"""Background jobs run by the worker: send a prediction to Replicate, store its output."""

import logging

from flask import current_app
from replicate.exceptions import ReplicateError

from .downloads import DownloadRejected, download_output
from .extensions import db
from .images import data_url
from .models import Prediction
from .predictions import apply_remote_state, needs_download
from .replicate_api import get_client, latest_version_id, webhook_url

logger = logging.getLogger(__name__)

#: Events Replicate sends to the webhook: when the run starts and when it ends.
WEBHOOK_EVENTS = ["start", "completed"]


def generate_prediction(prediction_id):
    """Create the Replicate prediction for a queued row, once.

    A row that already has a Replicate id, or has left "queued", is skipped, so a retried
    job never pays for a second run. Input errors (4xx other than 429) fail the row at
    once; throttling, server errors and timeouts raise, and the queue retries the job.
    """
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        logger.info("prediction %s: deleted before it was sent", prediction_id)
        return
    if prediction.replicate_id is not None or prediction.status != Prediction.QUEUED:
        logger.info("prediction %s: already sent as %s", prediction_id, prediction.replicate_id)
        return

    prompt = prediction.prompt
    model_input = {"prompt": prompt.title, "image": data_url(prompt.image, prompt.image_mime)}
    # End the transaction so no database lock is held during the HTTP calls.
    db.session.commit()

    client = get_client()
    try:
        version = latest_version_id(client, current_app.config["REPLICATE_MODEL"])
        remote = client.predictions.create(
            version=version,
            input=model_input,
            webhook=webhook_url(prediction_id),
            webhook_events_filter=WEBHOOK_EVENTS,
        )
    except ReplicateError as error:
        if error.status is None or error.status == 429 or error.status >= 500:
            raise
        _fail(prediction_id, f"Replicate rejected the request: {error.detail or error}")
        return

    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        logger.warning("prediction %s: deleted while %s was created", prediction_id, remote.id)
        return
    apply_remote_state(prediction, {"id": remote.id, "status": remote.status, "logs": remote.logs})
    db.session.commit()
    logger.info("prediction %s: created %s (%s)", prediction_id, remote.id, prediction.status)


def store_output(prediction_id):
    """Download a succeeded prediction's output image into its row, once."""
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or not needs_download(prediction):
        return
    url = prediction.output_url
    db.session.commit()

    try:
        data, mime = download_output(url, current_app.config)
    except DownloadRejected as error:
        logger.warning("prediction %s: output rejected: %s", prediction_id, error)
        _fail(prediction_id, f"The output could not be stored: {error}")
        return

    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or not needs_download(prediction):
        return
    prediction.image = data
    prediction.image_mime = mime
    db.session.commit()
    logger.info("prediction %s: stored %d-byte %s", prediction_id, len(data), mime)


def _fail(prediction_id, message):
    """Record message as the row's error; a succeeded row keeps its status."""
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        return
    if prediction.status != Prediction.SUCCEEDED:
        prediction.advance(Prediction.FAILED)
    prediction.error = message
    db.session.commit()
    logger.warning("prediction %s: failed: %s", prediction_id, message)
