"""Webhook delivery: each prediction's events in order, signed, with retries."""

import json
import logging
import queue
import threading
import time

import httpx

from ..downloads import url_without_query
from .faults import Faults, Stats
from .signing import new_message_id, signed_headers

__all__ = ["WebhookSender", "encode_body", "is_retryable"]

logger = logging.getLogger(__name__)


def encode_body(prediction):
    return json.dumps(prediction, separators=(",", ":")).encode("utf-8")


def is_retryable(status_code):
    """Return True for a failed attempt worth repeating: no response, HTTP 429 or 5xx."""
    return status_code is None or status_code == 429 or status_code >= 500


class WebhookSender:
    """Delivers webhook events in the order they happen, with one thread per prediction.

    A prediction's thread starts with its first event and ends after its "completed" event.
    Events outside the prediction's webhook_events_filter are dropped by that thread. The
    fault switches can hold events back until "completed", delay, copy, unsign or drop them.
    """

    def __init__(self, secret, attempts, backoff, timeout, faults=None, stats=None):
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.faults = faults or Faults()
        self.stats = stats or Stats()
        self._lock = threading.Lock()
        self._queues = {}
        self._threads = {}
        self._closed = threading.Event()

    def send(self, prediction, event):
        """Queue a delivery of prediction, a JSON object, for event if it has a webhook."""
        if not prediction["webhook"]:
            return

        with self._lock:
            if self._closed.is_set():
                logger.info(
                    "webhook for prediction %s (event %s) not sent: the sender is closed",
                    prediction["id"],
                    event,
                )
                return
            events = self._queues.get(prediction["id"])
            if events is None:
                events = self._queues[prediction["id"]] = queue.SimpleQueue()
                thread = threading.Thread(
                    target=self._deliver_all,
                    args=(prediction["id"], events),
                    name=f"webhooks-{prediction['id']}",
                    daemon=True,
                )
                self._threads[prediction["id"]] = thread
                thread.start()
            events.put((event, prediction))

    def close(self, timeout=5.0):
        """Stop sending: drop queued events, end retries, and wait up to timeout for the threads."""
        with self._lock:
            self._closed.set()
            threads = list(self._threads.values())
            for events in self._queues.values():
                events.put(None)

        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _deliver_all(self, prediction_id, events):
        # trust_env=False sends each request straight to the webhook URL, never through a
        # proxy named in the environment.
        held = []
        with httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False) as client:
            while True:
                item = events.get()
                if item is None or self._closed.is_set():
                    held = []
                    break
                event, prediction = item
                if event not in prediction["webhook_events_filter"]:
                    pass
                elif event != "completed" and self.faults.get("reorder_webhooks"):
                    held.append((event, prediction))
                else:
                    self._deliver_copies(client, event, prediction)
                if event == "completed":
                    break

            # The reorder_webhooks switch sends the held events after "completed".
            for event, prediction in held:
                self._deliver_copies(client, event, prediction)

        with self._lock:
            del self._queues[prediction_id]
            del self._threads[prediction_id]

    def _deliver_copies(self, client, event, prediction):
        """Deliver one event as the switches ask: delayed, dropped, or in copies sent at once."""
        delay = self.faults.get("webhook_delay")
        if delay:
            self._closed.wait(delay)
        if self.faults.get("drop_webhooks"):
            self.stats.add("webhooks_dropped")
            logger.warning("webhook for prediction %s (event %s) dropped", prediction["id"], event)
            return

        message_id = new_message_id()
        copies = max(1, self.faults.get("duplicate_webhooks"))
        threads = [
            threading.Thread(target=self._deliver, args=(client, event, prediction, message_id))
            for _ in range(copies - 1)
        ]
        for thread in threads:
            thread.start()
        self._deliver(client, event, prediction, message_id)
        for thread in threads:
            thread.join()

    def _deliver(self, client, event, prediction, message_id=None):
        """Post one event until it is accepted or the attempts run out, and return True on a 2xx."""
        message_id = message_id or new_message_id()
        body = encode_body(prediction)
        context = (
            f"webhook {message_id} for prediction {prediction['id']} "
            f"(event {event}, status {prediction['status']}) "
            f"to {url_without_query(prediction['webhook'])}"
        )

        for attempt in range(1, self.attempts + 1):
            if self._closed.is_set():
                logger.info("%s not sent: the sender is closed", context)
                return False
            status_code, failure = self._post(client, prediction["webhook"], message_id, body)
            if failure is None:
                logger.info("%s delivered: HTTP %d on attempt %d", context, status_code, attempt)
                return True
            if not is_retryable(status_code):
                logger.warning("%s rejected with %s, not retrying", context, failure)
                return False
            if attempt < self.attempts:
                wait = self.backoff * 2 ** (attempt - 1)
                logger.warning(
                    "%s failed on attempt %d of %d with %s, retrying in %.1f s",
                    context,
                    attempt,
                    self.attempts,
                    failure,
                    wait,
                )
                self._closed.wait(wait)

        logger.error(
            "%s failed with %s, giving up after %d attempts", context, failure, self.attempts
        )
        return False

    def _post(self, client, url, message_id, body):
        """Make one attempt and return (status code or None, failure text or None)."""
        # The id stays the same across attempts so receivers can drop duplicates, while the
        # timestamp and signature are fresh, so late retries pass timestamp tolerance checks.
        headers = signed_headers(self.secret, message_id, body)
        if self.faults.get("unsigned_webhooks"):
            del headers["webhook-signature"]
        self.stats.add("webhook_requests")
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.TransportError as error:
            return None, f"{type(error).__name__}: {error}"

        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"
