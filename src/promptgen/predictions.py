"""Starting predictions and applying what Replicate reports about them."""

import logging
from datetime import datetime, timedelta, timezone

from .extensions import db
from .models import Prediction, utcnow

logger = logging.getLogger(__name__)


def start_prediction(prompt, settings=None):
    """Add a queued prediction for prompt with the given model settings, commit, and
    enqueue the job that sends it.

    The row keeps a copy of the prompt's current text and photo, and the job sends that
    copy, so an edit of the prompt after this call does not change the run.

    Returns the new row. If the job cannot be queued the row is marked failed with the
    reason, so the page never shows a placeholder that nothing will fill.
    """
    from .creation import PREDICTION_QUEUE
    from .queue import enqueue_call

    prediction = Prediction.for_prompt(prompt, settings or {})
    db.session.add(prediction)
    db.session.commit()

    try:
        job_id = enqueue_call(
            "promptgen.jobs:generate_prediction", (prediction.id,), queue=PREDICTION_QUEUE
        )
    except Exception as error:  # the queue file may be missing, full or locked
        logger.exception("prediction %s: could not be queued", prediction.id)
        prediction.status = Prediction.FAILED
        prediction.error = f"Could not queue the prediction ({error})."
        db.session.commit()
        return prediction

    logger.info("prediction %s queued as job %s for prompt %s", prediction.id, job_id, prompt.id)
    return prediction


def apply_remote_state(prediction, remote):
    """Update prediction from a Replicate prediction object or webhook body (a dict).

    Status only moves forward: events that arrive late or twice change nothing. Returns
    True when this call moved the row to succeeded with an output left to download. A
    succeeded prediction whose files Replicate already removed (data_removed) is marked
    as an expired output instead.
    """
    remote_id = remote.get("id")
    if prediction.replicate_id is None and remote_id:
        prediction.replicate_id = remote_id

    if prediction.status in Prediction.TERMINAL:
        return False

    status = remote.get("status")
    if remote.get("logs") is not None:
        prediction.logs = remote["logs"]
    if not prediction.advance(status):
        return False
    _take_remote_times(prediction, remote)

    if status == Prediction.FAILED:
        prediction.error = str(remote.get("error") or "The model run failed without a message.")
    elif status == Prediction.CANCELED:
        prediction.error = None
    elif status == Prediction.SUCCEEDED:
        prediction.output_urls = output_url_list(remote.get("output"))
        if remote.get("data_removed"):
            mark_output_expired(prediction)
            return False
        if not prediction.output_urls:
            prediction.error = "The model finished but returned no image."
            return False
        return True
    return False


def _take_remote_times(prediction, remote):
    """Use Replicate's own start and end times, so a late or lost webhook does not stretch the run time."""
    started = remote_time(remote.get("started_at"))
    if started is not None:
        prediction.started_at = started
    completed = remote_time(remote.get("completed_at"))
    if completed is not None and prediction.status in Prediction.TERMINAL:
        prediction.completed_at = completed


def remote_time(value):
    """Return a Replicate timestamp such as "2024-01-15T09:30:00.123456Z" as naive UTC, or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def mark_output_expired(prediction):
    """Record that Replicate removed the output before it was stored. The caller commits."""
    prediction.output_expired = True
    prediction.error = "The output expired before it could be stored."


def output_outlived(prediction, lifetime):
    """Return True when more than lifetime seconds have passed since the run was sent."""
    sent = prediction.sent_at or prediction.created_at
    return utcnow() - sent > timedelta(seconds=lifetime)


def download_retry_error(prediction, config):
    """Return why the store job may not download the row's missing outputs again, or None.

    A retry is allowed only after the store job gave up on network failures or timeouts
    (DOWNLOAD_MAX_ATTEMPTS attempts and an error) on a succeeded row whose output Replicate
    still keeps (younger than OUTPUT_LIFETIME seconds and never found removed).
    """
    number = prediction.id
    if prediction.status != Prediction.SUCCEEDED or not prediction.output_urls:
        return f"Variation {number} has no output to download."
    if prediction.has_all_images:
        return f"Variation {number} already has all its images."
    if prediction.output_expired or output_outlived(prediction, config["OUTPUT_LIFETIME"]):
        return (
            f"The output of variation {number} has expired on Replicate and can no longer be"
            " downloaded. Use “Generate again” for a new run."
        )
    if prediction.error is None:
        return f"The images of variation {number} are already being downloaded."
    # NOTE: a file rejected on the last attempt (too large, say) also reaches this count,
    # and a retry then rejects it again, at no cost on Replicate.
    if prediction.download_attempts < config["DOWNLOAD_MAX_ATTEMPTS"]:
        return (
            f"Variation {number} failed in a way that downloading again would not fix:"
            f" {prediction.error}"
        )
    return None


def fail_prediction(prediction_id, message):
    """Record message as the row's error in its own transaction; a succeeded row keeps its status."""
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None:
        db.session.rollback()
        return
    if prediction.status != Prediction.SUCCEEDED:
        prediction.advance(Prediction.FAILED)
    prediction.error = message
    db.session.commit()
    logger.warning("prediction %s: failed: %s", prediction_id, message)


def cancel_locally(prediction):
    """Move a pending row to canceled; return its Replicate id to cancel upstream, or None.

    The caller commits. Late webhooks for the row change nothing, because canceled is terminal.
    """
    if not prediction.is_pending:
        return None
    prediction.advance(Prediction.CANCELED)
    prediction.error = None
    return prediction.replicate_id


def output_url_list(output):
    """Return the URLs of a prediction's output (a URL or a list of them), in order."""
    if isinstance(output, str):
        return [output]
    if isinstance(output, list):
        return [item for item in output if isinstance(item, str)]
    return []


def needs_download(prediction):
    """Return True for a succeeded row with outputs still to be stored."""
    return (
        prediction.status == Prediction.SUCCEEDED
        and prediction.error is None
        and bool(prediction.output_urls)
        and not prediction.has_all_images
    )
