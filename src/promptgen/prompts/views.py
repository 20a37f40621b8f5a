import io
import logging
import re

from flask import (
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import func
from sqlalchemy.orm import defer

from .. import settings
from ..extensions import db
from ..filters import card_state
from ..images import InvalidImage, make_thumbnail, normalize_upload
from ..models import Prediction, Prompt
from ..creation import PREDICTION_QUEUE
from ..outputs import retry_download
from ..predictions import cancel_locally, download_retry_error, start_prediction
from ..queue import enqueue_call
from ..responses import form_status
from . import bp
from .forms import NewPromptForm, PromptForm, SettingsForm

logger = logging.getLogger(__name__)

#: Prompts on one page of the index.
PROMPTS_PER_PAGE = 24

#: Highest page number read from a URL; larger ones are treated as this one.
MAX_PAGE = 1_000_000

#: Maximum length, in characters, of the part of a download name taken from the prompt.
MAX_FILENAME_STEM = 60


@bp.before_request
@login_required
def require_login():
    """Require a logged-in account on every prompt page."""


def get_own_prompt(prompt_id):
    """Return the current account's prompt, or abort with 404 for any other."""
    prompt = db.session.get(Prompt, prompt_id)
    if prompt is None or prompt.user_id != current_user.id:
        abort(404)
    return prompt


def get_own_prediction(prompt_id, prediction_id):
    prompt = get_own_prompt(prompt_id)
    prediction = db.session.get(Prediction, prediction_id)
    if prediction is None or prediction.prompt_id != prompt.id:
        abort(404)
    return prediction


@bp.get("")
def index():
    """List the account's prompts, newest first, a page at a time, with thumbnails only."""
    page = db.paginate(
        db.select(Prompt)
        .where(Prompt.user_id == current_user.id)
        .options(defer(Prompt.image), defer(Prompt.description))
        .order_by(Prompt.created_at.desc(), Prompt.id.desc()),
        page=min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE),
        per_page=PROMPTS_PER_PAGE,
        error_out=False,
    )
    counts = dict(
        db.session.execute(
            db.select(Prediction.prompt_id, func.count())
            .where(Prediction.prompt_id.in_([prompt.id for prompt in page.items]))
            .group_by(Prediction.prompt_id)
        ).all()
    )
    return render_template("prompts/index.html", page=page, counts=counts)


@bp.get("/new")
def new():
    return render_template("prompts/new.html", form=NewPromptForm())


@bp.post("")
def create():
    """Save a prompt with its photo and start the first prediction."""
    form = NewPromptForm()
    valid, photo = _validate_with_photo(form)
    if not valid:
        return render_template("prompts/new.html", form=form), form_status(form)
    limit_message = _pending_limit_message()
    if limit_message is not None:
        form.form_errors.append(limit_message)
        return render_template("prompts/new.html", form=form), 429

    prompt = Prompt(
        user_id=current_user.id,
        title=form.title.data.strip(),
        description=form.description.data or "",
    )
    _set_photo(prompt, photo)
    db.session.add(prompt)
    start_prediction(prompt, form.to_settings())

    logger.info("prompt %s created by account %s", prompt.id, current_user.id)
    flash("Prompt saved. The first variation is on its way.", "success")
    return redirect(url_for("prompts.show", prompt_id=prompt.id))


@bp.get("/<int:prompt_id>")
def show(prompt_id):
    """Show the photo, its predictions, and the settings form for another run."""
    prompt = get_own_prompt(prompt_id)
    latest = prompt.predictions[0].settings if prompt.predictions else {}
    form = SettingsForm(data=settings.complete(latest))
    return render_template("prompts/show.html", prompt=prompt, form=form)


@bp.route("/<int:prompt_id>/edit", methods=["GET", "POST"])
def edit(prompt_id):
    """Change the prompt text, the notes or the photo; predictions already made stay."""
    prompt = get_own_prompt(prompt_id)
    form = PromptForm(data={"title": prompt.title, "description": prompt.description})
    if not form.is_submitted():
        return render_template("prompts/edit.html", form=form, prompt=prompt)

    valid, photo = _validate_with_photo(form)
    if not valid:
        return render_template("prompts/edit.html", form=form, prompt=prompt), form_status(form)

    prompt.title = form.title.data.strip()
    prompt.description = form.description.data or ""
    if photo is not None:
        _set_photo(prompt, photo)
    db.session.commit()

    flash("Prompt updated.", "success")
    return redirect(url_for("prompts.show", prompt_id=prompt.id))


@bp.route("/<int:prompt_id>/delete", methods=["GET", "POST"])
def delete(prompt_id):
    """Ask for confirmation, then delete the prompt with all its predictions."""
    prompt = get_own_prompt(prompt_id)
    if request.method == "GET":
        return render_template("prompts/delete.html", prompt=prompt)

    pending = [p.replicate_id for p in prompt.predictions if p.is_pending and p.replicate_id]
    db.session.delete(prompt)
    db.session.commit()

    # Pending predictions are canceled on Replicate too. One whose create is still in flight
    # has no Replicate id yet, and its generate job cancels it when it finds the row gone.
    _cancel_upstream(pending)
    logger.info("prompt %s deleted by account %s", prompt_id, current_user.id)
    flash("Prompt deleted.", "success")
    return redirect(url_for("prompts.index"))


@bp.post("/<int:prompt_id>/predictions")
def generate(prompt_id):
    """Start another prediction of the prompt, with the same or changed settings."""
    prompt = get_own_prompt(prompt_id)
    form = SettingsForm()
    if not form.validate_on_submit():
        return render_template("prompts/show.html", prompt=prompt, form=form), 422
    limit_message = _pending_limit_message()
    if limit_message is not None:
        return _reject_over_pending_limit(prompt, limit_message)

    start_prediction(prompt, form.to_settings())
    flash("A new variation is on its way.", "success")
    return redirect(url_for("prompts.show", prompt_id=prompt.id))


@bp.post("/<int:prompt_id>/predictions/<int:prediction_id>/cancel")
def cancel(prompt_id, prediction_id):
    """Cancel a pending prediction here at once, and on Replicate through a job."""
    prediction = get_own_prediction(prompt_id, prediction_id)
    if not prediction.is_pending:
        flash("That variation has already finished.", "info")
        return redirect(url_for("prompts.show", prompt_id=prompt_id))

    replicate_id = cancel_locally(prediction)
    db.session.commit()

    _cancel_upstream([replicate_id] if replicate_id else [])
    logger.info("prediction %s (%s) canceled by account %s", prediction_id, replicate_id, current_user.id)
    flash("Variation canceled.", "success")
    return redirect(url_for("prompts.show", prompt_id=prompt_id))


@bp.post("/<int:prompt_id>/predictions/<int:prediction_id>/retry-download")
def retry_prediction_download(prompt_id, prediction_id):
    """Queue the store job again for a succeeded prediction whose download failed, so its
    images are stored without a new run on Replicate."""
    prediction = get_own_prediction(prompt_id, prediction_id)
    # A POST holds SQLite's write lock from its first query (BEGIN IMMEDIATE), so of two
    # requests at once the second reads the cleared error and is rejected here.
    error_message = download_retry_error(prediction, current_app.config)
    if error_message is not None:
        logger.info("download retry of prediction %s rejected: %s", prediction_id, error_message)
        page = render_template(
            "error.html",
            title="Download not retried",
            message=error_message,
            status=409,
            back_url=url_for("prompts.show", prompt_id=prompt_id),
            back_label="Back to the prompt",
        )
        return page, 409

    retry_download(prediction)
    flash(f"Downloading the images of variation {prediction_id} again.", "success")
    return redirect(url_for("prompts.show", prompt_id=prompt_id))


@bp.app_template_global()
def can_retry_download(prediction):
    """Return True when the card may offer to download the prediction's images again."""
    return download_retry_error(prediction, current_app.config) is None


def _cancel_upstream(replicate_ids):
    for replicate_id in replicate_ids:
        try:
            enqueue_call("promptgen.jobs:cancel_remote", (replicate_id,), queue=PREDICTION_QUEUE)
        except Exception:  # the queue file may be missing, full or locked
            logger.exception("cancel of %s could not be queued", replicate_id)


@bp.get("/<int:prompt_id>/predictions/<int:prediction_id>")
def prediction(prompt_id, prediction_id):
    """Return one prediction's card; pending cards poll this until they are final.

    A poll whose ``shown`` argument matches the card's current state gets 204 No Content,
    which htmx leaves in place, so an unchanged card costs no body.
    """
    prediction = get_own_prediction(prompt_id, prediction_id)
    if not prediction.is_final and request.args.get("shown") == card_state(prediction):
        return "", 204
    return render_template("prompts/_prediction.html", prediction=prediction)


@bp.get("/<int:prompt_id>/predictions/<int:prediction_id>/images/<int:position>")
def download(prompt_id, prediction_id, position):
    """Send one output image of a prediction as a file named after its text prompt."""
    prediction = get_own_prediction(prompt_id, prediction_id)
    image = next((image for image in prediction.images if image.position == position), None)
    if image is None:
        abort(404)

    extension = image.mime.removeprefix("image/").replace("jpeg", "jpg")
    name = f"{download_stem(prediction.prompt_text)}-{prediction.id}"
    if len(prediction.output_urls) > 1:
        name += f"-{position + 1}"
    return send_file(
        io.BytesIO(image.data),
        mimetype=image.mime,
        as_attachment=True,
        download_name=f"{name}.{extension}",
    )


@bp.post("/<int:prompt_id>/predictions/<int:prediction_id>/delete")
def delete_prediction(prompt_id, prediction_id):
    """Delete one prediction of a prompt."""
    prediction = get_own_prediction(prompt_id, prediction_id)
    pending = [prediction.replicate_id] if prediction.is_pending and prediction.replicate_id else []
    db.session.delete(prediction)
    db.session.commit()

    _cancel_upstream(pending)

    logger.info("prediction %s deleted by account %s", prediction_id, current_user.id)
    flash("Variation deleted.", "success")
    return redirect(url_for("prompts.show", prompt_id=prompt_id))


def download_stem(title):
    """Return a file name stem made from a prompt: words joined by "_", in any script.

    Flask sends names outside ASCII with an RFC 6266 filename* parameter, so a prompt in
    Greek or Japanese keeps its words.
    """
    words = re.findall(r"\w+", title)
    return "_".join(words)[:MAX_FILENAME_STEM].strip("_") or "prediction"


def _pending_limit_message():
    """Return the message that rejects a new run when the account has too many in progress, or None."""
    limit = current_app.config["MAX_PENDING_PREDICTIONS"]
    pending = db.session.scalar(
        db.select(func.count(Prediction.id))
        .join(Prompt)
        .where(Prompt.user_id == current_user.id, Prediction.status.not_in(Prediction.TERMINAL))
    )
    if pending < limit:
        return None

    logger.info("account %s has %d predictions pending; new one rejected", current_user.id, pending)
    variations = "variation" if pending == 1 else "variations"
    return (
        f"You have {pending} {variations} in progress, the most allowed at once. "
        "Wait for one to finish, then try again."
    )


def _reject_over_pending_limit(prompt, message):
    """Send the browser back to the prompt page with message, so a reload does not post again.

    A form post gets 303 See Other. An htmx request gets 429 with HX-Redirect, which htmx
    4.0.1 follows with a full page load, so scripts still see the 429.
    """
    flash(message, "error")
    prompt_url = url_for("prompts.show", prompt_id=prompt.id)
    if request.headers.get("HX-Request"):
        return "", 429, {"HX-Redirect": prompt_url}
    return redirect(prompt_url, 303)


def _validate_with_photo(form):
    """Validate form and decode its photo; return (valid, photo).

    photo is None when no file was sent. When valid is False the form carries the errors
    to show, and nothing has been saved.
    """
    if not form.validate_on_submit():
        return False, None

    upload = form.image.data
    if not upload:
        return True, None
    try:
        return True, normalize_upload(upload.read(), current_app.config["IMAGE_MAX_SIDE"])
    except InvalidImage as error:
        form.image.errors = [*form.image.errors, str(error)]
        logger.info("upload by account %s rejected: %s", current_user.id, error)
        return False, None


def _set_photo(prompt, photo):
    prompt.image = photo.data
    prompt.image_mime = photo.mime
    prompt.thumbnail = make_thumbnail(photo.data).data
