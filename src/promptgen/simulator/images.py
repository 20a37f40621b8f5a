"""Reading the input image of a prediction from a data URL or an http(s) URL."""

import base64
import binascii
import io
from urllib.parse import unquote_to_bytes, urlsplit

from PIL import Image

from ..downloads import DownloadRejected, FetchLimits, fetch_limited


class InvalidImage(ValueError):
    """The image input cannot be read or decoded."""


def is_data_url(value):
    return value.startswith("data:")


def is_http_url(value):
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def decode_data_url(url):
    """Return the bytes a data URL contains, base64 or percent-encoded."""
    header, separator, payload = url.partition(",")
    if not separator:
        raise InvalidImage("data URL has no comma between its header and its data")

    if not header.endswith(";base64"):
        return unquote_to_bytes(payload)

    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except binascii.Error as error:
        raise InvalidImage(f"data URL is not valid base64: {error}") from error


#: Errors Pillow raises for bytes it cannot decode. UnidentifiedImageError is an OSError, and
#: DecompressionBombWarning is raised only where warnings are turned into errors.
DECODE_ERRORS = (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def open_image(data, max_pixels):
    """Decode image bytes with Pillow and return an RGB image.

    Raises InvalidImage for bytes Pillow cannot decode and for images over max_pixels.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except DECODE_ERRORS as error:
        raise InvalidImage(f"image could not be decoded: {error}") from error

    if image.width * image.height > max_pixels:
        raise InvalidImage(
            f"image is {image.width}x{image.height} pixels, over the limit of {max_pixels} pixels"
        )

    try:
        image.load()
        return image.convert("RGB")
    except DECODE_ERRORS as error:
        raise InvalidImage(f"image could not be decoded: {error}") from error


def download_image(url, max_bytes, timeout):
    """Download an image URL without following redirects and return its bytes.

    Raises InvalidImage for an error status, a redirect or a body over max_bytes, and
    httpx.TransportError when the server cannot be reached.
    """
    try:
        # Replicate fetches inputs from any address, and tests serve them from 127.0.0.1.
        return fetch_limited(url, FetchLimits(max_bytes, timeout), pin_public_address=False)
    except DownloadRejected as error:
        raise InvalidImage(f"image URL rejected: {error}") from error
