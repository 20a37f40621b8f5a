"""Background jobs run by the worker, stored in the queue as "promptgen.jobs:NAME".

generate_prediction, store_output, poll_prediction and cancel_remote go to the "urgent"
queue. reconcile_predictions is meant to run periodically, about once a minute.
"""

import logging

import httpx
from replicate.exceptions import ReplicateError

from . import creation, outputs, reconcile
from .replicate_api import get_client

logger = logging.getLogger(__name__)


def generate_prediction(prediction_id):
    """Create the Replicate prediction for a queued row, once. See creation.generate."""
    creation.generate(prediction_id)


def store_output(prediction_id):
    """Download a succeeded prediction's output image into its row, once. See outputs.store."""
    outputs.store(prediction_id)


def poll_prediction(prediction_id):
    """Poll Replicate about one prediction until it ends; used when webhooks are off."""
    reconcile.poll(prediction_id)


def reconcile_predictions():
    """Ask Replicate about predictions that have not moved for a while; return how many."""
    return reconcile.reconcile()


def cancel_remote(replicate_id):
    """Cancel a prediction on Replicate. A prediction that has ended, or is unknown, is left as is.

    Network failures, 429 and 5xx raise, so the queue retries the job.
    """
    try:
        remote = get_client().predictions.cancel(replicate_id)
    except ReplicateError as error:
        if error.status == 404:
            logger.info("cancel of %s: Replicate has no such prediction", replicate_id)
            return
        raise
    except httpx.TransportError:
        logger.warning("cancel of %s failed to reach Replicate, the queue retries it", replicate_id)
        raise
    logger.info("cancel of %s sent, its status is %s", replicate_id, remote.status)
