"""Signed tokens that tie a webhook URL to one prediction row."""

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

#: Salt that keeps webhook tokens apart from every other value signed with SECRET_KEY.
WEBHOOK_SALT = "promptgen.replicate-webhook"


class InvalidToken(ValueError):
    """The token is forged, damaged, or was signed for another purpose."""


def _serializer():
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=WEBHOOK_SALT)


def sign_prediction_id(prediction_id):
    return _serializer().dumps({"prediction": prediction_id})


def load_prediction_id(token):
    """Return the prediction id that token was signed for, or raise InvalidToken."""
    try:
        payload = _serializer().loads(token)
    except BadSignature as error:
        raise InvalidToken("invalid webhook token") from error

    prediction_id = payload.get("prediction") if isinstance(payload, dict) else None
    if not isinstance(prediction_id, int):
        raise InvalidToken("webhook token names no prediction")
    return prediction_id
