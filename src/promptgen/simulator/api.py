"""HTTP routes of the simulator: the Replicate API under /v1 and output files under /files."""

import base64
import binascii
import re
import time

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from . import catalog
from .errors import ApiError, not_found
from .service import MAX_PREFER_WAIT, check_model

api = Blueprint("replicate_api", __name__, url_prefix="/v1")
files = Blueprint("replicate_files", __name__)
control = Blueprint("simulator_control", __name__, url_prefix="/_simulator")

#: "Prefer: wait" or "Prefer: wait=N" requests that create hold its response until the
#: prediction ends, for up to N seconds.
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:=(\d+))?(?:$|[,;\s])")


def simulator():
    return current_app.extensions["replicate_simulator"]


@api.before_request
def require_token():
    """Reject requests without a bearer token, as Replicate does. Any token is accepted."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise ApiError(401, "Unauthenticated", "You did not pass an authentication token")


@api.get("/models/<owner>/<name>")
def get_model(owner, name):
    return jsonify(simulator().model(owner, name))


@api.get("/models/<owner>/<name>/versions")
def list_versions(owner, name):
    check_model(owner, name)
    return jsonify({"next": None, "previous": None, "results": [catalog.version_json()]})


@api.get("/models/<owner>/<name>/versions/<version_id>")
def get_version(owner, name, version_id):
    check_model(owner, name)
    if version_id != catalog.VERSION_ID:
        raise not_found(f"Version {version_id} of {owner}/{name} not found.")
    return jsonify(catalog.version_json())


@api.post("/models/<owner>/<name>/predictions")
def create_model_prediction(owner, name):
    check_model(owner, name)
    prediction = simulator().create_prediction(
        json_body(), request.host_url, model=f"{owner}/{name}", wait=prefer_wait()
    )
    return jsonify(prediction), 201


@api.post("/predictions")
def create_prediction():
    prediction = simulator().create_prediction(json_body(), request.host_url, wait=prefer_wait())
    return jsonify(prediction), 201


@api.get("/predictions")
def list_predictions():
    """List predictions newest first, in pages linked by opaque cursors."""
    before, after = decode_cursor(request.args.get("cursor"))
    service = simulator()
    service.stats.add("lists")
    page = service.store.page(service.settings.page_size, before=before, after=after)

    next_url = previous_url = None
    if page.has_older:
        next_url = list_url(encode_cursor("before", page.oldest_sequence))
    if page.has_newer:
        previous_url = list_url(encode_cursor("after", page.newest_sequence))
    return jsonify({"next": next_url, "previous": previous_url, "results": page.results})


@api.get("/predictions/<prediction_id>")
def get_prediction(prediction_id):
    return jsonify(simulator().get_prediction(prediction_id))


@api.post("/predictions/<prediction_id>/cancel")
def cancel_prediction(prediction_id):
    return jsonify(simulator().cancel_prediction(prediction_id))


@api.get("/webhooks/default/secret")
def webhook_secret():
    return jsonify({"key": simulator().webhook_secret})


@files.get("/files/<prediction_id>/<int:index>.png")
def output_file(prediction_id, index):
    service = simulator()
    service.stats.add("file_requests")
    delay = service.faults.get("output_delay")
    if delay:
        time.sleep(delay)
    data = service.store.get_file(prediction_id, index)
    if data is None:
        raise not_found(f"Output file {index} of prediction {prediction_id} not found.")
    return Response(data, mimetype="image/png")


@control.get("/faults")
def get_faults():
    return jsonify(simulator().faults.snapshot())


@control.post("/faults")
def set_faults():
    """Change the fault switches named in the JSON body and return them all."""
    try:
        simulator().faults.update(json_body())
    except ValueError as error:
        raise ApiError(400, "Invalid fault switches", str(error)) from error
    return jsonify(simulator().faults.snapshot())


@control.get("/stats")
def get_stats():
    """Return the counts of create requests, creates, gets, lists, cancels and webhooks."""
    return jsonify(simulator().stats.snapshot())


def json_body():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid request body", "The request body must be a JSON object.")
    return body


def prefer_wait():
    """Return the seconds a "Prefer: wait" header requests, or None without one."""
    match = PREFER_WAIT.search(request.headers.get("Prefer", ""))
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else MAX_PREFER_WAIT


def list_url(cursor):
    return url_for(".list_predictions", cursor=cursor, _external=True)


def encode_cursor(direction, sequence):
    return base64.urlsafe_b64encode(f"{direction}:{sequence}".encode()).decode().rstrip("=")


def decode_cursor(cursor):
    """Return (before, after) sequence numbers from a list cursor, or (None, None) without one."""
    if not cursor:
        return None, None

    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        direction, _, sequence = base64.urlsafe_b64decode(padded).decode().partition(":")
        number = int(sequence)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        direction, number = None, None

    if direction == "before":
        return number, None
    if direction == "after":
        return None, number
    raise ApiError(400, "Invalid cursor", f"The cursor {cursor!r} is not one this API returned.")


def render_api_error(error):
    return error.to_response()


def render_http_error(error):
    """Render werkzeug's errors, such as 404 for unknown routes and 405, as problem details."""
    return ApiError(error.code, error.name, error.description).to_response()


def register(app):
    app.register_blueprint(api)
    app.register_blueprint(files)
    app.register_blueprint(control)
    app.register_error_handler(ApiError, render_api_error)
    app.register_error_handler(HTTPException, render_http_error)
