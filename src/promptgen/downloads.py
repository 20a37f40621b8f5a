"""Fetching prediction outputs from Replicate's file hosts, with limits."""

import logging
from urllib.parse import urlsplit

import httpx

from .config import output_hosts
from .images import UPLOAD_FORMATS, InvalidImage, open_verified

logger = logging.getLogger(__name__)


class OutputRejected(ValueError):
    """The output URL or what it returned is not an image the app will store."""


def check_output_url(url, config):
    """Raise OutputRejected unless url points at an allowed output host.

    Replicate's outputs are served over https from replicate.delivery and its subdomains.
    In local mode the simulator's own address (plain http) is allowed as well.
    """
    parts = urlsplit(url)
    allowed = output_hosts(config)
    is_simulator = config["REPLICATE_LOCAL"] and parts.scheme == "http" and parts.netloc in allowed
    if is_simulator:
        return

    host = (parts.hostname or "").lower()
    host_allowed = any(host == name or host.endswith("." + name) for name in allowed)
    if parts.scheme != "https" or not host_allowed or parts.port not in (None, 443):
        raise OutputRejected(f"output URL {url!r} is not on an allowed Replicate host")


def download_output(url, config):
    """Download and verify one output image; return (bytes, mime type).

    Raises OutputRejected for a disallowed URL, a redirect, an error status, a body over
    OUTPUT_MAX_BYTES or bytes that are not an image, and httpx.TransportError for network
    failures, which are worth retrying.
    """
    check_output_url(url, config)
    limit = config["OUTPUT_MAX_BYTES"]
    timeout = httpx.Timeout(config["OUTPUT_TIMEOUT"])

    # NOTE: the host name is checked, not the address it resolves to.
    with httpx.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
        if response.status_code != 200:
            raise OutputRejected(f"output URL answered HTTP {response.status_code}")
        declared = int(response.headers.get("content-length") or 0)
        if declared > limit:
            raise OutputRejected(f"output is {declared} bytes, over the {limit}-byte limit")
        data = _read_limited(response, limit)

    try:
        image = open_verified(data)
    except InvalidImage as error:
        raise OutputRejected(f"output is not a usable image: {error}") from error
    return data, UPLOAD_FORMATS[image.format]


def _read_limited(response, limit):
    chunks = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise OutputRejected(f"output is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
