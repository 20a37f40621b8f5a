"""Starting predictions and applying what Replicate reports about them."""

import logging

from .extensions import db
from .models import Prediction

logger = logging.getLogger(__name__)


def start_prediction(prompt):
    """Add a queued prediction for prompt, commit, and enqueue the job that sends it.

    Returns the new row. If the job cannot be queued the row is marked failed with the
    reason, so the page never shows a placeholder that nothing will fill.
    """
    from . import jobs
    from .queue import enqueue

    prediction = Prediction(prompt=prompt)
    db.session.add(prediction)
    db.session.commit()

    try:
        job_id = enqueue(jobs.generate_prediction, prediction.id)
    except Exception as error:  # the queue file may be missing, full or locked
        logger.exception("prediction %s: could not be queued", prediction.id)
        prediction.status = Prediction.FAILED
        prediction.error = f"Could not queue the prediction ({error}). Use Generate again."
        db.session.commit()
        return prediction

    logger.info("prediction %s queued as job %s for prompt %s", prediction.id, job_id, prompt.id)
    return prediction


def apply_remote_state(prediction, remote):
    """Update prediction from a Replicate prediction object or webhook body (a dict).

    Status only moves forward: events that arrive late or twice change nothing. Returns
    True when this call moved the row to succeeded with an output left to download.
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

    if status == Prediction.FAILED:
        prediction.error = str(remote.get("error") or "The model run failed without a message.")
    elif status == Prediction.CANCELED:
        prediction.error = None
    elif status == Prediction.SUCCEEDED:
        prediction.output_url = first_output_url(remote.get("output"))
        if prediction.output_url is None:
            prediction.error = "The model finished but returned no image."
            return False
        return True
    return False


def first_output_url(output):
    """Return the first URL of a prediction's output (a URL or a list of them), or None."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return next((item for item in output if isinstance(item, str)), None)
    return None


def needs_download(prediction):
    return (
        prediction.status == Prediction.SUCCEEDED
        and prediction.image is None
        and prediction.error is None
        and prediction.output_url is not None
    )
