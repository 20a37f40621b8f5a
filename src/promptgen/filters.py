"""Jinja filters used by the templates."""

import re

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


def progress_percent(logs):
    """Return the last percentage in a prediction's logs, or None when there is none yet."""
    matches = PROGRESS_PATTERN.findall(logs or "")
    if not matches:
        return None
    return min(int(matches[-1]), 100)


def status_label(prediction):
    return STATUS_LABELS.get(prediction.status, prediction.status.capitalize())
