"""Error pages that explain what went wrong and what to do next."""

import logging

from flask import current_app, render_template, request, url_for
from flask_wtf.csrf import CSRFError

from .extensions import db

logger = logging.getLogger(__name__)

MESSAGES = {
    400: ("Bad request", "The request could not be read. Go back and try again."),
    403: ("Forbidden", "You are not allowed to do that."),
    404: ("Not found", "There is nothing here, or it belongs to another account."),
    405: ("Method not allowed", "This address does not accept that kind of request."),
    429: ("Too many attempts", "Wait a minute, then try again."),
    500: ("Server error", "Something failed on our side. Try again in a moment."),
}


def register(app):
    app.register_error_handler(413, render_upload_too_large)
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


def render_upload_too_large(error):
    """Render the 413 page with the upload limit and a link back to the form that was sent."""
    if request.headers.get("HX-Request"):
        return "", 413, {"HX-Refresh": "true"}

    limit = current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
    message = (
        f"The upload is larger than the limit of {limit:g} MB. "
        "Choose a smaller photo and try again."
    )
    logger.info("upload to %s rejected: larger than %g MB", request.path, limit)
    back_url, back_label = _upload_form_link()
    page = render_template(
        "error.html",
        title="Upload too large",
        message=message,
        status=413,
        back_url=back_url,
        back_label=back_label,
    )
    return page, 413


def _upload_form_link():
    """Return the URL and label of the form the rejected upload came from."""
    if request.endpoint == "prompts.edit":
        return url_for("prompts.edit", **request.view_args), "Back to editing the prompt"
    return url_for("prompts.new"), "Back to the new prompt form"
