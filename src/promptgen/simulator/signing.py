"""Webhook signing secrets and signatures in the Standard Webhooks scheme that Replicate uses.

Each request carries webhook-id, webhook-timestamp and webhook-signature headers. The
signature is "v1," followed by the base64 HMAC-SHA256 of "{id}.{timestamp}.{body}", keyed
with the base64-decoded part of the secret after "whsec_".
"""

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import string
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"

#: Name of the file in the instance folder that keeps the signing secret across restarts.
SECRET_FILE = "simulator-webhook-secret"

MESSAGE_ID_ALPHABET = string.ascii_letters + string.digits
MESSAGE_ID_LENGTH = 27

USER_AGENT = "promptgen-replicate-simulator"


def new_secret():
    """Return a new signing secret: whsec_ and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def check_secret(key, source):
    """Return key if it is whsec_ and base64 data, else raise ValueError naming source."""
    prefix, _, encoded = key.partition("_")
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        decoded = b""

    # replicate-python's webhooks.validate splits the key on "_" and requires exactly two parts.
    if f"{prefix}_" != SECRET_PREFIX or "_" in encoded or not decoded:
        raise ValueError(
            f"webhook signing secret from {source} is invalid: expected {SECRET_PREFIX} "
            "followed by base64 data. Delete the file or fix the setting."
        )
    return key


def load_or_create_secret(instance_path):
    """Return the signing secret kept in instance_path, creating the file on first use."""
    path = Path(instance_path) / SECRET_FILE
    if not path.exists():
        _write_new_secret(path)
        logger.info("webhook signing secret created in %s", path)
    return check_secret(path.read_text().strip(), source=path)


def _write_new_secret(path):
    # The key goes into a private temporary file that is then hard-linked into place, so a
    # process starting at the same moment reads either no file or the whole key, and the
    # first writer wins. mkstemp creates the file readable by its owner only.
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(new_secret() + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)


def new_message_id():
    """Return a random webhook-id value such as msg_2bX..."""
    return "msg_" + "".join(secrets.choice(MESSAGE_ID_ALPHABET) for _ in range(MESSAGE_ID_LENGTH))


def sign(key, message_id, timestamp, body):
    """Return the webhook-signature header value for body, which is bytes."""
    secret_bytes = base64.b64decode(key.removeprefix(SECRET_PREFIX))
    signed_content = f"{message_id}.{timestamp}.".encode("utf-8") + body
    digest = hmac.new(secret_bytes, signed_content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(key, message_id, body):
    """Return the headers of one delivery attempt of body, signed with the current time."""
    timestamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(key, message_id, timestamp, body),
    }
