"""Fetching prediction outputs from Replicate's file hosts, with limits."""

import logging
from urllib.parse import urlsplit

import httpx

from .images import UPLOAD_FORMATS, InvalidImage, open_verified

logger = logging.getLogger(__name__)


class DownloadRejected(ValueError):
    """The URL or what it returned is not something the app will store."""


def check_output_url(url, config):
    """Raise DownloadRejected unless url points at an allowed output host.

    Replicate's outputs are served over https from replicate.delivery and its subdomains.
    In local mode the simulator's own address (plain http) is allowed as well.
    """
    parts = urlsplit(url)
    if config["REPLICATE_LOCAL"]:
        simulator = urlsplit(config["REPLICATE_BASE_URL"])
        if (parts.scheme, parts.netloc) == (simulator.scheme, simulator.netloc):
            return

    host = (parts.hostname or "").lower()
    allowed = config["REPLICATE_OUTPUT_HOSTS"]
    host_allowed = any(host == name or host.endswith("." + name) for name in allowed)
    if parts.scheme != "https" or not host_allowed or parts.port not in (None, 443):
        raise DownloadRejected(f"output URL {url!r} is not on an allowed Replicate host")
    if parts.username or parts.password:
        raise DownloadRejected(f"output URL {url!r} carries credentials")


def download_output(url, config):
    """Download and verify one output image; return (bytes, mime type).

    Raises DownloadRejected for a disallowed URL, a redirect, an error status, a body over
    OUTPUT_MAX_BYTES or bytes that are not an image, and httpx.TransportError for network
    failures, which are worth retrying.
    """
    check_output_url(url, config)
    data = fetch_limited(url, config["OUTPUT_MAX_BYTES"], config["OUTPUT_TIMEOUT"])

    try:
        image = open_verified(data)
    except InvalidImage as error:
        raise DownloadRejected(f"output is not a usable image: {error}") from error
    return data, UPLOAD_FORMATS[image.format]


def fetch_limited(url, max_bytes, timeout):
    """GET url and return the body, refusing redirects, error statuses and large bodies.

    Raises DownloadRejected for those, and httpx.TransportError for network failures.
    The request goes straight to the URL's host, never through a proxy from the environment.
    """
    # NOTE: the host name is checked by callers, not the address it resolves to.
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False) as client:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise DownloadRejected(f"{url_without_query(url)} answered HTTP {response.status_code}")
            declared = int(response.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise DownloadRejected(f"the file is {declared} bytes, over the {max_bytes}-byte limit")
            return _read_limited(response, max_bytes)


def url_without_query(url):
    """Return url without its query string, which may carry a token or a signature."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _read_limited(response, max_bytes):
    chunks = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise DownloadRejected(f"the file is over the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
