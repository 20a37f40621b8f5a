import io

import pytest
from PIL import Image

from promptgen.images import MAX_PIXELS, InvalidImage, data_url, normalize_upload, too_many_pixels_message

from .support import FIXTURES


def encode(image, image_format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def test_normalize_fits_into_max_side():
    photo = Image.new("RGB", (1600, 900), "steelblue")

    stored = normalize_upload(encode(photo, "PNG"), 768)

    assert (stored.width, stored.height) == (768, 432)
    assert stored.mime == "image/jpeg"
    assert Image.open(io.BytesIO(stored.data)).size == (768, 432)


def test_normalize_keeps_small_photo_size():
    stored = normalize_upload((FIXTURES / "astronaut.jpg").read_bytes(), 768)

    assert (stored.width, stored.height) == (512, 512)


def test_normalize_applies_exif_orientation():
    photo = Image.new("RGB", (300, 200), "white")
    photo.paste((255, 0, 0), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display

    stored = normalize_upload(encode(photo, "JPEG", exif=exif), 768)

    image = Image.open(io.BytesIO(stored.data))
    assert image.size == (200, 300)
    red, green, blue = image.getpixel((185, 10))
    assert red > 200
    assert green < 60
    assert blue < 60


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK"])
def test_normalize_converts_to_rgb(mode):
    image_format = "JPEG" if mode == "CMYK" else "PNG"
    photo = Image.new(mode, (64, 64))

    stored = normalize_upload(encode(photo, image_format), 768)

    assert Image.open(io.BytesIO(stored.data)).mode == "RGB"


def test_normalize_accepts_webp():
    stored = normalize_upload(encode(Image.new("RGB", (40, 30), "green"), "WEBP"), 768)

    assert (stored.width, stored.height) == (40, 30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is not a readable image."),
        (b"GIF89a not really", "The file is not a readable image."),
        (b"%PDF-1.7\n", "The file is not a readable image."),
        (encode(Image.new("RGB", (10, 10)), "GIF"), "GIF images are not supported; use JPEG, PNG or WebP."),
        (encode(Image.new("RGB", (10, 10)), "BMP"), "BMP images are not supported; use JPEG, PNG or WebP."),
    ],
)
def test_normalize_rejects_other_files(data, message):
    with pytest.raises(InvalidImage) as error:
        normalize_upload(data, 768)

    assert str(error.value) == message


def test_normalize_rejects_truncated_jpeg():
    data = (FIXTURES / "astronaut.jpg").read_bytes()

    with pytest.raises(InvalidImage):
        normalize_upload(data[: len(data) // 2], 768)


def test_normalize_rejects_corrupt_png():
    data = bytearray(encode(Image.new("RGB", (50, 50), "red"), "PNG"))
    data[60:70] = b"\x00" * 10

    with pytest.raises(InvalidImage):
        normalize_upload(bytes(data), 768)


def test_normalize_rejects_huge_dimensions():
    # A PNG header that claims 20,000 x 20,000 pixels; it is rejected before decoding.
    data = encode(Image.new("1", (20_000, 20_000)), "PNG")

    with pytest.raises(InvalidImage) as error:
        normalize_upload(data, 768)

    assert str(error.value) == "The image is 20000 x 20000 pixels (400 megapixels). The limit is 50 megapixels."


@pytest.mark.parametrize(
    ("size", "image_format", "message"),
    [
        ((12000, 9000), "JPEG", "The image is 12000 x 9000 pixels (108 megapixels). The limit is 50 megapixels."),
        ((7100, 7100), "PNG", "The image is 7100 x 7100 pixels (50.4 megapixels). The limit is 50 megapixels."),
        ((10000, 10000), "WEBP", "The image is 10000 x 10000 pixels (100 megapixels). The limit is 50 megapixels."),
    ],
)
def test_normalize_states_pixel_limit(size, image_format, message):
    data = encode(Image.new("1" if image_format == "PNG" else "RGB", size), image_format)

    with pytest.raises(InvalidImage) as error:
        normalize_upload(data, 768)

    assert str(error.value) == message


def test_pixel_limit_message_uses_max_pixels():
    assert too_many_pixels_message((8000, 6251)) == (
        f"The image is 8000 x 6251 pixels (50 megapixels). The limit is {MAX_PIXELS // 1_000_000} megapixels."
    )
    assert too_many_pixels_message(None) == "The image has more pixels than allowed. The limit is 50 megapixels."


def test_data_url():
    assert data_url(b"\x89PNG", "image/png") == "data:image/png;base64,iVBORw=="


def test_normalize_puts_transparency_on_white():
    photo = Image.new("RGBA", (20, 20), (0, 0, 255, 0))
    photo.paste((255, 0, 0, 255), (0, 0, 10, 20))

    stored = normalize_upload(encode(photo, "PNG"), 768)

    image = Image.open(io.BytesIO(stored.data))
    assert image.getpixel((15, 10)) >= (250, 250, 250)
    red, green, blue = image.getpixel((5, 10))
    assert red > 240
    assert green < 20
    assert blue < 20


def test_normalize_decodes_large_jpeg_reduced():
    photo = Image.new("RGB", (4000, 3000), "orange")

    stored = normalize_upload(encode(photo, "JPEG"), 768)

    assert (stored.width, stored.height) == (768, 576)
