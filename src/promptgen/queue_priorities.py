"""Weighted choice between named queues, so a busy queue with a high weight never starves the others.

QUEUE_PRIORITIES maps queue names to positive weights, by default critical 10, urgent 5
and default 1. Before each claim a worker draws an order of its queues: each queue
comes first with probability weight / total weight of the queues, and the rest follow
in the same way. The claim takes from the first queue in that order that has a ready
job. With all three default queues busy, about 10 claims in 16 go to critical, 5 to
urgent and 1 to default.
"""

import math
import random

DEFAULT_PRIORITIES = {"critical": 10, "urgent": 5, "default": 1}

#: Weight of a queue that a worker serves but QUEUE_PRIORITIES does not name.
UNLISTED_WEIGHT = 1


class QueuePriorities:
    """Queue names with their weights, and the random order in which to try them."""

    def __init__(self, weights, rng=None):
        self.weights = validate_priorities(weights)
        self.rng = rng if rng is not None else random.Random()
        self.names = tuple(sorted(self.weights, key=self.weights.get, reverse=True))

    def __repr__(self):
        return f"QueuePriorities({self.weights!r})"

    @classmethod
    def for_worker(cls, configured, names=None, rng=None):
        """Return the priorities for a worker that serves names, or every configured queue.

        A name without a configured weight gets UNLISTED_WEIGHT.
        """
        configured = validate_priorities(configured)
        if names is None:
            return cls(configured, rng)
        return cls({name: configured.get(name, UNLISTED_WEIGHT) for name in names}, rng)

    def order(self):
        """Return the queue names in a random order weighted by priority.

        This is weighted sampling without replacement: each name gets the key
        u ** (1 / weight) for a uniform u, and higher keys come first.
        """
        if len(self.names) == 1:
            return self.names
        keys = {name: self.rng.random() ** (1 / self.weights[name]) for name in self.names}
        return tuple(sorted(self.names, key=keys.get, reverse=True))

    def describe(self):
        """Return "name:weight" pairs joined by commas, highest weight first."""
        return ", ".join(f"{name}:{self.weights[name]:g}" for name in self.names)


def validate_priorities(weights):
    """Return weights as a dict of queue name to positive number, or raise ValueError."""
    if not isinstance(weights, dict) or not weights:
        raise ValueError(
            f"QUEUE_PRIORITIES must map queue names to weights, got {weights!r}"
        )

    checked = {}
    for name, weight in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"queue name must be a non-empty string, got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"weight of queue {name!r} must be a number, got {weight!r}")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight of queue {name!r} must be positive, got {weight!r}")
        checked[name] = weight
    return checked


def parse_queue_names(text):
    """Return the queue names in a comma-separated list such as "urgent,default"."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"no queue names in {text!r}")
    return names


def unlisted_warning(config, names, consequence):
    """Return a warning about the names that QUEUE_PRIORITIES in config lacks, or None.

    consequence describes what that means for the command that got the names.
    """
    configured = config.get("QUEUE_PRIORITIES", DEFAULT_PRIORITIES)
    unlisted = [name for name in names if name not in configured]
    if not unlisted:
        return None
    quoted = ", ".join(repr(name) for name in unlisted)
    return (
        f"warning: queue {quoted} is not in QUEUE_PRIORITIES ({', '.join(configured)}),"
        f" so {consequence}. Queue names are case-sensitive."
    )
