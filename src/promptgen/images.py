"""Checking, normalizing and encoding images with Pillow."""

import base64
import io
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

#: Upload formats accepted, by Pillow's format name.
UPLOAD_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

#: Images with more pixels than this are rejected before decoding (about 50 megapixels).
MAX_PIXELS = 50_000_000

#: Uploads decoded at the same time in one process; others wait their turn.
DECODE_SLOTS = 2
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)

#: Maximum side of the thumbnails on the index page, in pixels.
THUMBNAIL_SIDE = 256

#: Maximum side of the previews on prediction cards, in pixels.
PREVIEW_SIDE = 512

JPEG_QUALITY = 90


class InvalidImage(ValueError):
    """The bytes are not an image of an accepted format, or are damaged."""


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    mime: str
    width: int
    height: int


def open_verified(data, formats=UPLOAD_FORMATS, draft_side=None):
    """Open data with Pillow after a full integrity check, or raise InvalidImage.

    With draft_side, a JPEG is decoded at the smallest scale that still covers that many
    pixels on each side, which saves most of the memory and time for large photos.
    """
    with warnings.catch_warnings():
        # Pillow only warns between its two bomb limits; treat both the same way.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                image_format = probe.format
                width, height = probe.size
                probe.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InvalidImage(too_many_pixels_message(declared_size(data))) from error
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise InvalidImage("The file is not a readable image.") from error

    if image_format not in formats:
        raise InvalidImage(f"{image_format} images are not supported; use JPEG, PNG or WebP.")
    if width * height > MAX_PIXELS:
        raise InvalidImage(too_many_pixels_message((width, height)))

    # verify() leaves the image unusable, so decode it again from the start.
    image = Image.open(io.BytesIO(data))
    if draft_side is not None:
        image.draft("RGB", (draft_side, draft_side))
    try:
        image.load()
    except (OSError, SyntaxError) as error:
        raise InvalidImage("The image is damaged and cannot be decoded.") from error
    return image


def declared_size(data):
    """Return the (width, height) that an accepted image's header declares, or None.

    Image.open() raises for a decompression bomb before it returns the size, so this
    builds the format's image class directly, which reads the header and decodes nothing.
    """
    Image.init()
    prefix = data[:16]
    for image_format in UPLOAD_FORMATS:
        factory, accept = Image.OPEN[image_format]
        if accept is not None and not accept(prefix):
            continue
        try:
            with factory(io.BytesIO(data)) as probe:
                return probe.size
        except (OSError, SyntaxError, ValueError):
            return None
    return None


def too_many_pixels_message(size):
    """Return the error for an image over MAX_PIXELS, with its size when size is known."""
    limit = f"The limit is {megapixels(MAX_PIXELS)} megapixels."
    if size is None:
        return f"The image has more pixels than allowed. {limit}"
    width, height = size
    return f"The image is {width} x {height} pixels ({megapixels(width * height)} megapixels). {limit}"


def megapixels(pixels):
    """Return pixels in megapixels as text, with at most one decimal: "108", "50.4"."""
    return f"{round(pixels / 1_000_000, 1):g}"


def normalize_upload(data, max_side):
    """Return an uploaded photo upright, in RGB, fitted into max_side and encoded as JPEG.

    Transparent areas become white. At most DECODE_SLOTS uploads are decoded at once,
    because a large photo takes hundreds of megabytes while it is decoded.
    """
    with _decode_slots:
        image = open_verified(data, draft_side=max_side)
        image = ImageOps.exif_transpose(image)
        image = flatten(image)
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return encode_jpeg(image)


def flatten(image):
    """Return image in RGB, with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def make_thumbnail(data, side=THUMBNAIL_SIDE):
    """Return a JPEG of the stored image data that fits into side pixels, for pages."""
    image = flatten(Image.open(io.BytesIO(data)))
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return encode_jpeg(image)


def encode_jpeg(image):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return StoredImage(buffer.getvalue(), "image/jpeg", image.width, image.height)


def data_url(data, mime):
    """Return the image as a data: URL, for img tags and for Replicate's image input."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
