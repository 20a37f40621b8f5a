"""Error pages that explain what went wrong and what to do next."""

import logging

from flask import render_template, request
from flask_wtf.csrf import CSRFError

from .extensions import db

logger = logging.getLogger(__name__)

MESSAGES = {
    400: ("Bad request", "The request could not be read. Go back and try again."),
    403: ("Forbidden", "You are not allowed to do that."),
    404: ("Not found", "There is nothing here, or it belongs to another account."),
    405: ("Method not allowed", "This address does not accept that kind of request."),
    413: ("Upload too large", "Files may be at most 10 MB. Choose a smaller photo and try again."),
    429: ("Too many attempts", "Wait a minute, then try again."),
    500: ("Server error", "Something failed on our side. Try again in a moment."),
}


def register(app):
    for status in MESSAGES:
        app.register_error_handler(status, render_error)
    app.register_error_handler(CSRFError, render_csrf_error)


def render_error(error):
    status = getattr(error, "code", 500) or 500
    if status >= 500:
        db.session.rollback()
    if request.headers.get("HX-Request"):
        # A polling card must not turn into an error page: reload the page to show what changed.
        return "", status, {"HX-Refresh": "true"}
    title, message = MESSAGES.get(status, MESSAGES[500])
    return render_template("error.html", title=title, message=message, status=status), status


def render_csrf_error(error):
    logger.warning("CSRF check failed on %s %s: %s", request.method, request.path, error.description)
    message = "The form expired or was sent from another site. Reload the page and try again."
    return (
        render_template("error.html", title="Form expired", message=message, status=400),
        400,
    )
