"""Jinja filters used by the templates."""

import re

from . import settings
from .images import data_url

#: The step counter that Stable Diffusion's progress bar writes to the logs, e.g. " 40%|████ ".
PROGRESS_PATTERN = re.compile(r"(\d{1,3})%\|")

STATUS_LABELS = {
    "queued": "Queued",
    "starting": "Starting the model",
    "processing": "Generating",
    "succeeded": "Saving the image",
}


def register(app):
    app.add_template_filter(data_url, "data_url")
    app.add_template_filter(progress_percent, "progress_percent")
    app.add_template_filter(status_label, "status_label")
    app.add_template_filter(card_state, "card_state")
    app.add_template_filter(duration, "duration")
    app.add_template_filter(settings.describe, "describe_settings")
    app.add_template_filter(settings.reported_seed, "reported_seed")


def progress_percent(logs):
    """Return the last percentage in a prediction's logs, or None when there is none yet."""
    matches = PROGRESS_PATTERN.findall(logs or "")
    if not matches:
        return None
    return min(int(matches[-1]), 100)


def status_label(prediction):
    return STATUS_LABELS.get(prediction.status, prediction.status.capitalize())


def card_state(prediction):
    """Return a short value that changes whenever a pending card would render differently."""
    return f"{prediction.status}-{progress_percent(prediction.logs)}-{len(prediction.images)}"


def duration(start, end):
    """Return the seconds from start to end as text such as "4.2 s" or "3 min 5 s"."""
    if start is None or end is None:
        return None
    seconds = max((end - start).total_seconds(), 0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s"
