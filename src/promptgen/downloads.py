"""Fetching prediction outputs from Replicate's file hosts, with limits."""

import io
import ipaddress
import logging
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
from PIL import Image, UnidentifiedImageError

from .images import UPLOAD_FORMATS, InvalidImage, open_verified

logger = logging.getLogger(__name__)

#: Statuses that Replicate's file hosts return for an output they have deleted.
EXPIRED_STATUSES = frozenset({404, 410})


class DownloadRejected(ValueError):
    """The URL or what it returned is not something the app will store."""


class OutputExpired(DownloadRejected):
    """The output host no longer has the file: Replicate removed it after its lifetime."""


def check_output_url(url, config):
    """Raise DownloadRejected unless url points at an allowed output host.

    Replicate's outputs are served over https from replicate.delivery and its subdomains.
    In local mode the simulator's own address (plain http) is allowed as well.
    """
    if is_simulator_url(url, config):
        return

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    allowed = config["REPLICATE_OUTPUT_HOSTS"]
    host_allowed = any(host == name or host.endswith("." + name) for name in allowed)
    if parts.scheme != "https" or not host_allowed or parts.port not in (None, 443):
        raise DownloadRejected(f"output URL {url!r} is not on an allowed Replicate host")
    if parts.username or parts.password:
        raise DownloadRejected(f"output URL {url!r} carries credentials")


def is_simulator_url(url, config):
    """Return True in local mode for a URL on the simulator's own scheme, host and port."""
    if not config["REPLICATE_LOCAL"]:
        return False
    parts = urlsplit(url)
    simulator = urlsplit(config["REPLICATE_BASE_URL"])
    return (parts.scheme, parts.netloc) == (simulator.scheme, simulator.netloc)


def download_output(url, config):
    """Download and verify one output image; return (bytes, mime type).

    Raises OutputExpired when the host returns 404 or 410, DownloadRejected for a disallowed
    URL or address, a redirect, another error status, a body over OUTPUT_MAX_BYTES, an image
    over OUTPUT_MAX_PIXELS or bytes that are not an image, and httpx.TransportError (timeouts
    included) for network failures, which are worth retrying.
    """
    check_output_url(url, config)
    limits = FetchLimits(
        max_bytes=config["OUTPUT_MAX_BYTES"],
        read_timeout=config["OUTPUT_TIMEOUT"],
        connect_timeout=config["OUTPUT_CONNECT_TIMEOUT"],
        deadline=config["OUTPUT_DEADLINE"],
    )
    data = fetch_limited(url, limits, pin_public_address=not is_simulator_url(url, config))
    check_pixels(data, config["OUTPUT_MAX_PIXELS"])

    try:
        image = open_verified(data)
    except InvalidImage as error:
        raise DownloadRejected(f"output is not a usable image: {error}") from error
    return data, UPLOAD_FORMATS[image.format]


def check_pixels(data, max_pixels):
    """Raise DownloadRejected when the image header declares more than max_pixels pixels.

    Only the header is read, so an oversized image is rejected before it is decoded.
    Bytes that are not an image pass here and are rejected by open_verified.
    """
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return
    if width * height > max_pixels:
        raise DownloadRejected(
            f"the image is {width}x{height} pixels, over the {max_pixels}-pixel limit"
        )


class FetchLimits:
    """Size and time limits of one download: bytes, seconds per read and connect, seconds in all."""

    def __init__(self, max_bytes, read_timeout, connect_timeout=None, deadline=None):
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout or read_timeout
        self.deadline = deadline


def fetch_limited(url, limits, pin_public_address=True):
    """GET url and return the body, refusing redirects, error statuses and large bodies.

    With pin_public_address the host is resolved first, every address it resolves to must
    be public, and the request connects to that checked address (TLS still verifies the
    host name), so a later DNS answer cannot point the request elsewhere. Raises
    DownloadRejected for those checks, OutputExpired for 404 and 410, and
    httpx.TransportError for network failures. The request never uses a proxy from the
    environment.
    """
    request_url, headers, extensions = url, {}, {}
    if pin_public_address:
        request_url, headers, extensions = pinned_request(url)

    timeout = httpx.Timeout(limits.read_timeout, connect=limits.connect_timeout)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request("GET", request_url, headers=headers, extensions=extensions)
        response = client.send(request, stream=True)
        try:
            _check_response(url, response, limits.max_bytes)
            return _read_limited(response, limits)
        finally:
            response.close()


def _check_response(url, response, max_bytes):
    if response.status_code in EXPIRED_STATUSES:
        raise OutputExpired(f"{url_without_query(url)} returned HTTP {response.status_code}")
    if response.status_code != 200:
        raise DownloadRejected(f"{url_without_query(url)} returned HTTP {response.status_code}")
    declared = int(response.headers.get("content-length") or 0)
    if declared > max_bytes:
        raise DownloadRejected(f"the file is {declared} bytes, over the {max_bytes}-byte limit")


def pinned_request(url):
    """Return (URL with the host replaced by its checked address, headers, extensions)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_public_address(host, port)

    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return pinned, {"Host": parts.netloc}, {"sni_hostname": host}


def resolve_public_address(host, port):
    """Return one address of host, or raise DownloadRejected unless every address is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise DownloadRejected(f"could not resolve {host!r}: {error}") from error

    addresses = sorted({info[4][0] for info in infos})
    if not addresses:
        raise DownloadRejected(f"{host!r} resolves to no address")
    for address in addresses:
        if not is_public_address(address):
            raise DownloadRejected(f"{host!r} resolves to the non-public address {address}")
    return addresses[0]


def is_public_address(address):
    """Return False for private, loopback, link-local, multicast, reserved or unspecified addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_without_query(url):
    """Return url without its query string, which may carry a token or a signature."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _read_limited(response, limits):
    chunks = []
    size = 0
    started = time.monotonic()
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limits.max_bytes:
            raise DownloadRejected(f"the file is over the {limits.max_bytes}-byte limit")
        if limits.deadline and time.monotonic() - started > limits.deadline:
            raise httpx.ReadTimeout(f"the download took more than {limits.deadline} s")
        chunks.append(chunk)
    return b"".join(chunks)
