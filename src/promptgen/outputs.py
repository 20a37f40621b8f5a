"""Storing a succeeded prediction's output image in its row, once."""

import logging

import httpx
from flask import current_app

from .creation import PREDICTION_QUEUE, retry_delay
from .downloads import DownloadRejected, OutputExpired, download_output
from .extensions import db
from .images import PREVIEW_SIDE, make_thumbnail
from .models import Prediction, PredictionImage
from .predictions import fail_prediction, mark_output_expired, needs_download, output_outlived
from .queue import enqueue_call
from .write_lock import database_write_lock

logger = logging.getLogger(__name__)


def enqueue_store(prediction_id, delay=None):
    """Queue the store job of a prediction, after delay seconds if given; return the job id."""
    return enqueue_call("promptgen.jobs:store_output", (prediction_id,), queue=PREDICTION_QUEUE, delay=delay)


def retry_download(prediction):
    """Clear a given-up download's error and attempt count, commit, and queue the store job.

    The caller checks download_retry_error first, inside the same write transaction, so
    a second request reads the cleared error and queues nothing.
    """
    prediction.download_attempts = 0
    prediction.error = None
    db.session.commit()

    try:
        job_id = enqueue_store(prediction.id)
    except Exception:  # the queue file may be missing, full or locked
        # reconcile_predictions queues the store job after RECONCILE_AFTER seconds,
        # because the row has succeeded without an error and still lacks images.
        logger.exception("prediction %s: download retry could not be queued", prediction.id)
        return
    logger.info("prediction %s: download retry queued as job %s", prediction.id, job_id)


def store(prediction_id):
    """Download the outputs of a succeeded row that are not stored yet, unless it is final.

    An output past OUTPUT_LIFETIME, or one whose host returns 404 or 410, is marked expired.
    A rejected URL or file fails the row at once. Network failures and timeouts are retried
    up to DOWNLOAD_MAX_ATTEMPTS times in all, then the row shows a failed download. Images
    stored by an earlier attempt are kept, and each position is stored once.
    """
    config = current_app.config
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or not needs_download(prediction):
        db.session.rollback()
        return

    if output_outlived(prediction, config["OUTPUT_LIFETIME"]):
        mark_output_expired(prediction)
        db.session.commit()
        logger.warning("prediction %s: output expired before it was stored", prediction_id)
        return

    prediction.download_attempts += 1
    attempt = prediction.download_attempts
    stored = {image.position for image in prediction.images}
    missing = [(position, url) for position, url in enumerate(prediction.output_urls) if position not in stored]
    db.session.commit()

    for position, url in missing:
        try:
            data, mime = download_output(url, config)
        except OutputExpired as error:
            _mark_expired(prediction_id, error)
            return
        except DownloadRejected as error:
            logger.warning("prediction %s: output %d rejected: %s", prediction_id, position, error)
            fail_prediction(prediction_id, f"The output could not be stored: {error}")
            return
        except httpx.TransportError as error:
            _retry_or_fail(prediction_id, attempt, error)
            return

        if not _save_image(prediction_id, position, data, mime):
            return


def _save_image(prediction_id, position, data, mime):
    """Store one output image with its preview; return False when the row no longer wants it."""
    preview = make_thumbnail(data, side=PREVIEW_SIDE).data
    with database_write_lock(current_app.config):
        prediction = db.session.get(Prediction, prediction_id)
        if prediction is None or not needs_download(prediction):
            db.session.rollback()
            return False
        if any(image.position == position for image in prediction.images):
            db.session.rollback()
            return True
        prediction.images.append(PredictionImage(position=position, data=data, mime=mime, preview=preview))
        db.session.commit()
    logger.info("prediction %s: stored output %d, %d-byte %s", prediction_id, position, len(data), mime)
    return True


def _mark_expired(prediction_id, error):
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or not needs_download(prediction):
        db.session.rollback()
        return
    mark_output_expired(prediction)
    db.session.commit()
    logger.warning("prediction %s: output expired: %s", prediction_id, error)


def _retry_or_fail(prediction_id, attempt, error):
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if attempt >= current_app.config["DOWNLOAD_MAX_ATTEMPTS"]:
        fail_prediction(
            prediction_id, f"The output download failed after {attempt} attempts ({reason})."
        )
        return

    delay = retry_delay(attempt)
    enqueue_store(prediction_id, delay=delay)
    logger.warning(
        "prediction %s: download attempt %d failed (%s), retrying in %.1f s",
        prediction_id, attempt, reason, delay,
    )
