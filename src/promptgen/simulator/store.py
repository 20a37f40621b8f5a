"""In-memory predictions and output files, shared by request threads and run threads."""

import copy
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})

#: Replicate's prediction ids are 26 lowercase letters and digits, like ufawqhfynnddngldkgtslldrkq.
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
ID_LENGTH = 26


def new_prediction_id():
    """Return a random id in the shape of Replicate's prediction ids."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def timestamp():
    """Return the current UTC time as Replicate writes it, such as 2024-01-15T09:30:00.123456Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Prediction:
    """One prediction and everything needed to render it as Replicate's JSON."""

    id: str
    sequence: int
    model: str
    version: str
    input: dict
    base_url: str
    webhook: str | None
    webhook_events_filter: list
    status: str = "starting"
    logs: str = ""
    output: list | None = None
    error: str | None = None
    data_removed: bool = False
    metrics: dict = field(default_factory=dict)
    created_at: str = field(default_factory=timestamp)
    started_at: str | None = None
    completed_at: str | None = None

    def to_json(self):
        """Return a deep copy of the prediction in the shape of Replicate's API responses."""
        api_url = f"{self.base_url}v1/predictions/{self.id}"
        body = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "logs": self.logs,
            "output": self.output,
            "data_removed": self.data_removed,
            "error": self.error,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "urls": {"get": api_url, "cancel": f"{api_url}/cancel"},
            "metrics": self.metrics,
            "webhook": self.webhook,
            "webhook_events_filter": self.webhook_events_filter,
        }
        return copy.deepcopy(body)


class Page(NamedTuple):
    """One page of the prediction list, with what its cursors need."""

    results: list
    newest_sequence: int | None
    oldest_sequence: int | None
    has_newer: bool
    has_older: bool


class PredictionStore:
    """Predictions and their output files behind one lock.

    Every method returns copies, so callers never hold references into the store.
    The condition variable wakes waiters whenever a prediction changes.
    """

    def __init__(self):
        self._changed = threading.Condition(threading.Lock())
        self._predictions = {}
        self._files = {}
        self._sequence = 0

    def add(self, **fields):
        """Store a new prediction built from fields and return its JSON."""
        with self._changed:
            self._sequence += 1
            prediction = Prediction(id=new_prediction_id(), sequence=self._sequence, **fields)
            self._predictions[prediction.id] = prediction
            return prediction.to_json()

    def get(self, prediction_id):
        """Return the prediction's JSON, or None if there is no such prediction."""
        with self._changed:
            prediction = self._predictions.get(prediction_id)
            return None if prediction is None else prediction.to_json()

    def count(self, model):
        """Return how many predictions were created for model."""
        with self._changed:
            return sum(1 for prediction in self._predictions.values() if prediction.model == model)

    def page(self, limit, before=None, after=None):
        """Return up to limit predictions, newest first, created before or after a sequence number.

        before and after come from a list cursor, and at most one of them is set.
        """
        with self._changed:
            ordered = sorted(self._predictions.values(), key=lambda p: p.sequence, reverse=True)
            if after is not None:
                selected = [p for p in ordered if p.sequence > after][-limit:]
            else:
                selected = [p for p in ordered if before is None or p.sequence < before][:limit]

            if not selected:
                return Page([], None, None, False, False)

            return Page(
                results=[p.to_json() for p in selected],
                newest_sequence=selected[0].sequence,
                oldest_sequence=selected[-1].sequence,
                has_newer=ordered[0].sequence > selected[0].sequence,
                has_older=ordered[-1].sequence < selected[-1].sequence,
            )

    def transition(self, prediction_id, allowed, status, files=None, **changes):
        """Move a prediction to status if its current status is in allowed, and return its JSON.

        Returns None when the prediction is missing or in another status, which is how a run
        thread learns that the prediction was canceled under it. Terminal statuses also set
        completed_at. files, a list of PNG bytes, is stored in the same step as the status.
        """
        with self._changed:
            prediction = self._predictions.get(prediction_id)
            if prediction is None or prediction.status not in allowed:
                return None

            prediction.status = status
            for name, value in changes.items():
                setattr(prediction, name, value)
            if status in TERMINAL_STATUSES:
                prediction.completed_at = timestamp()
            if files is not None:
                self._files[prediction_id] = list(files)

            self._changed.notify_all()
            return prediction.to_json()

    def append_logs(self, prediction_id, text):
        """Append text to a running prediction's logs and return its JSON, or None if it ended."""
        with self._changed:
            prediction = self._predictions.get(prediction_id)
            if prediction is None or prediction.status in TERMINAL_STATUSES:
                return None

            prediction.logs += text
            self._changed.notify_all()
            return prediction.to_json()

    def wait_until_finished(self, prediction_id, timeout):
        """Block until the prediction reaches a terminal status or timeout seconds pass.

        Returns True if the prediction is finished (or missing), False on timeout.
        """
        with self._changed:
            return self._changed.wait_for(lambda: self._is_finished(prediction_id), timeout=timeout)

    def remove_files(self, prediction_id):
        """Delete a prediction's output files and mark its data removed, as Replicate does later."""
        with self._changed:
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                return
            prediction.data_removed = True
            self._files.pop(prediction_id, None)
            self._changed.notify_all()

    def get_file(self, prediction_id, index):
        """Return the bytes of output file index of a prediction, or None."""
        with self._changed:
            files = self._files.get(prediction_id, [])
            return files[index] if 0 <= index < len(files) else None

    def _is_finished(self, prediction_id):
        prediction = self._predictions.get(prediction_id)
        return prediction is None or prediction.status in TERMINAL_STATUSES
