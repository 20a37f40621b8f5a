"""The simulator's operations on models and predictions, called by the routes in api.py."""

import logging
import threading
import time
from dataclasses import dataclass

from . import catalog
from .errors import ApiError, not_found
from .faults import Faults, Stats
from .inputs import check_input, check_request, describe
from .runner import PredictionRun
from .signing import check_secret, load_or_create_secret
from .store import PredictionStore
from ..downloads import url_without_query
from .webhooks import WebhookSender

logger = logging.getLogger(__name__)

#: Maximum time, in seconds, that a create request with "Prefer: wait" waits for the prediction.
MAX_PREFER_WAIT = 60


@dataclass(frozen=True)
class Settings:
    """Run settings read from the app config. DEFAULTS in __init__.py gives their units."""

    delay: float
    page_size: int
    max_image_pixels: int
    max_image_bytes: int
    image_timeout: float

    @classmethod
    def from_config(cls, config):
        return cls(
            delay=float(config["SIMULATOR_DELAY"]),
            page_size=int(config["SIMULATOR_PAGE_SIZE"]),
            max_image_pixels=int(config["SIMULATOR_MAX_IMAGE_PIXELS"]),
            max_image_bytes=int(config["SIMULATOR_MAX_IMAGE_BYTES"]),
            image_timeout=float(config["SIMULATOR_IMAGE_TIMEOUT"]),
        )


class Simulator:
    """The store, the webhook sender and the settings, with the operations the routes call."""

    def __init__(self, settings, sender, faults=None, stats=None):
        self.settings = settings
        self.sender = sender
        self.faults = faults or Faults()
        self.stats = stats or Stats()
        self.store = PredictionStore()

    @classmethod
    def from_config(cls, config, instance_path):
        """Build a simulator whose signing secret comes from the config or the instance folder."""
        if config.get("SIMULATOR_WEBHOOK_SECRET"):
            secret = check_secret(
                config["SIMULATOR_WEBHOOK_SECRET"], source="SIMULATOR_WEBHOOK_SECRET"
            )
        else:
            secret = load_or_create_secret(instance_path)

        faults = Faults(config.get("SIMULATOR_FAULTS"))
        stats = Stats()
        sender = WebhookSender(
            secret,
            attempts=int(config["SIMULATOR_WEBHOOK_ATTEMPTS"]),
            backoff=float(config["SIMULATOR_WEBHOOK_BACKOFF"]),
            timeout=float(config["SIMULATOR_WEBHOOK_TIMEOUT"]),
            faults=faults,
            stats=stats,
        )
        return cls(Settings.from_config(config), sender, faults, stats)

    def close(self):
        """Stop sending webhooks, so no delivery or retry outlives the simulator's server."""
        self.sender.close()

    @property
    def webhook_secret(self):
        return self.sender.secret

    def model(self, owner, name):
        """Return the model's JSON, or raise a 404 ApiError for any other model."""
        check_model(owner, name)
        return catalog.model_json(run_count=self.store.count(catalog.MODEL))

    def create_prediction(self, body, base_url, model=None, wait=None):
        """Validate a create request, store the prediction, start its run and return its JSON.

        model is "owner/name" for POST /v1/models/{owner}/{name}/predictions and None for
        POST /v1/predictions, whose body names the version. wait is the number of seconds
        from a "Prefer: wait" header, or None.
        """
        self.stats.add("create_requests")
        self._apply_create_faults()
        problems = check_request(body, needs_version=model is None)
        if problems:
            raise validation_error(problems)
        if model is None:
            check_version(body["version"])

        problems = check_input(body["input"], self.settings.max_image_pixels)
        if problems:
            raise validation_error(problems)

        webhook, events_filter = webhook_settings(body)
        prediction = self.store.add(
            model=catalog.MODEL,
            version=catalog.VERSION_ID,
            input=body["input"],
            base_url=base_url,
            webhook=webhook,
            webhook_events_filter=events_filter,
        )
        if webhook:
            logger.info(
                "prediction %s created, webhook %s", prediction["id"], url_without_query(webhook)
            )
        else:
            logger.info("prediction %s created without a webhook", prediction["id"])

        # "start" is queued before the run begins, so no other event can overtake it.
        self.stats.add("creates")
        self.sender.send(prediction, "start")
        self._start_run(prediction)

        if self.faults.take("stall_creates"):
            stall = self.faults.get("create_stall")
            logger.warning("prediction %s created, holding the response %.1f s", prediction["id"], stall)
            time.sleep(stall)
        if wait:
            self.store.wait_until_finished(prediction["id"], min(wait, MAX_PREFER_WAIT))
            return self.store.get(prediction["id"])
        return prediction

    def _apply_create_faults(self):
        """Raise HTTP 429 or 503 while the throttle_creates or fail_creates counter is above zero."""
        if self.faults.take("throttle_creates"):
            self.stats.add("creates_throttled")
            retry_after = self.faults.get("retry_after")
            logger.warning("create throttled by the throttle_creates switch")
            raise ApiError(
                429,
                "Request was throttled",
                f"Request was throttled. Expected available in {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )
        if self.faults.take("fail_creates"):
            self.stats.add("creates_failed")
            logger.warning("create failed by the fail_creates switch")
            raise ApiError(503, "Service Unavailable", "The simulator is failing creates on purpose.")

    def cancel_prediction(self, prediction_id):
        """Cancel a running prediction and return its JSON. A finished one is returned unchanged."""
        self.stats.add("cancels")
        prediction = self.store.transition(prediction_id, {"starting", "processing"}, "canceled")
        if prediction is not None:
            logger.info("prediction %s canceled", prediction_id)
            self.sender.send(prediction, "completed")
            return prediction

        prediction = self.store.get(prediction_id)
        if prediction is None:
            raise not_found(f"Prediction {prediction_id} not found.")
        return prediction

    def get_prediction(self, prediction_id):
        self.stats.add("gets")
        prediction = self.store.get(prediction_id)
        if prediction is None:
            raise not_found(f"Prediction {prediction_id} not found.")
        return prediction

    def _start_run(self, prediction):
        run = PredictionRun(self, prediction)
        thread = threading.Thread(
            target=run.run, name=f"prediction-{prediction['id']}", daemon=True
        )
        thread.start()


def check_model(owner, name):
    if f"{owner}/{name}" != catalog.MODEL:
        raise not_found(
            f"Model {owner}/{name} not found. The simulator serves only {catalog.MODEL}."
        )


def check_version(version):
    """Raise a 422 ApiError unless version is the model's version id, bare or as owner/name:id."""
    if version in (catalog.VERSION_ID, f"{catalog.MODEL}:{catalog.VERSION_ID}"):
        return
    raise ApiError(
        422,
        "Invalid version or not permitted",
        f"The specified version does not exist. The simulator serves only {catalog.MODEL} "
        f"version {catalog.VERSION_ID}.",
    )


def validation_error(problems):
    return ApiError(422, "Input validation failed", describe(problems), invalid_fields=problems)


def webhook_settings(body):
    """Return (webhook URL, events filter) for a create request.

    The older webhook_completed field is a webhook for the "completed" event only.
    """
    if body.get("webhook"):
        return body["webhook"], body.get("webhook_events_filter") or list(catalog.WEBHOOK_EVENTS)
    if body.get("webhook_completed"):
        return body["webhook_completed"], ["completed"]
    return None, list(catalog.WEBHOOK_EVENTS)
