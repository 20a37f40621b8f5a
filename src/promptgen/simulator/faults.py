"""Fault switches that make the simulator misbehave the way Replicate sometimes does.

Set them with command-line flags (python -m promptgen.simulator --help), with the config
key SIMULATOR_FAULTS (a dict), or while it runs with POST /_simulator/faults and a JSON
object of the fields to change. GET /_simulator/faults returns them all.
"""

import threading
from dataclasses import asdict, dataclass, fields


@dataclass
class FaultSettings:
    """Every switch, off by default. Counts apply to that many next requests, then run out."""

    #: Copies of each webhook delivery, sent at the same moment with the same webhook-id.
    duplicate_webhooks: int = 1
    #: Hold each prediction's earlier events and send them after its "completed" event.
    reorder_webhooks: bool = False
    #: Seconds to wait before sending each webhook delivery.
    webhook_delay: float = 0.0
    #: Send webhook deliveries without the webhook-signature header.
    unsigned_webhooks: bool = False
    #: Send no webhook deliveries at all, as if every one was lost.
    drop_webhooks: bool = False
    #: End every prediction as failed instead of succeeded.
    fail_predictions: bool = False
    #: Number of next create requests rejected with HTTP 429 and Retry-After.
    throttle_creates: int = 0
    #: Seconds in the Retry-After header of a throttled create.
    retry_after: int = 1
    #: Number of next create requests rejected with HTTP 503, creating nothing.
    fail_creates: int = 0
    #: Create and run this many next predictions but hold the response create_stall seconds.
    stall_creates: int = 0
    create_stall: float = 0.0
    #: Remove each prediction's output files as it succeeds (data_removed, files return 404).
    expire_outputs: bool = False
    #: Seconds an output file request waits before the response starts.
    output_delay: float = 0.0


#: Fields that count down by one each time they apply.
COUNTERS = ("throttle_creates", "fail_creates", "stall_creates")


class Faults:
    """The current FaultSettings behind a lock, shared by request and run threads."""

    def __init__(self, settings=None):
        self._lock = threading.Lock()
        self._settings = FaultSettings()
        if settings:
            self.update(settings)

    def update(self, changes):
        """Set the named fields, converted to each field's type; raise ValueError for others."""
        defaults = FaultSettings()
        types = {field.name: type(getattr(defaults, field.name)) for field in fields(FaultSettings)}
        unknown = sorted(set(changes) - set(types))
        if unknown:
            raise ValueError(f"unknown fault switches: {', '.join(unknown)}")

        converted = {}
        for name, value in changes.items():
            field_type = types[name]
            if field_type is bool and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            try:
                converted[name] = field_type(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{name} must be a {field_type.__name__}, got {value!r}") from error

        with self._lock:
            for name, value in converted.items():
                setattr(self._settings, name, value)

    def snapshot(self):
        """Return the settings as a dict."""
        with self._lock:
            return asdict(self._settings)

    def get(self, name):
        with self._lock:
            return getattr(self._settings, name)

    def take(self, name):
        """Return True and count down if the counter name is above zero, else return False."""
        with self._lock:
            remaining = getattr(self._settings, name)
            if remaining <= 0:
                return False
            setattr(self._settings, name, remaining - 1)
            return True


class Stats:
    """Counts of requests and deliveries, for tests that check exact numbers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}

    def add(self, name, count=1):
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + count

    def snapshot(self):
        with self._lock:
            return dict(self._counts)
