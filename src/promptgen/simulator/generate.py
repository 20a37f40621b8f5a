"""A deterministic stand-in for image-to-image generation, built from Pillow filters.

The output recolors the input photo with a palette derived from the prompt and seed, adds
translucent brush strokes, and writes "SIMULATED" and the prompt across the bottom. The same
image, prompt, negative prompt, seed, strength and guidance scale give identical PNG bytes
with the same Pillow version.
"""

import hashlib
import io
import random

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

LABEL = "SIMULATED"
ELLIPSIS = "…"


def generate_image(source, prompt, seed, *, strength=0.8, guidance_scale=7.5, negative_prompt=""):
    """Return PNG bytes of a variation of source, an RGB image, with the same size."""
    rng = random.Random(_seed_bytes(prompt, negative_prompt, seed))
    palette = [_random_color(rng) for _ in range(3)]

    stylized = _recolor(source, palette, rng, guidance_scale)
    stylized = _add_strokes(stylized, palette, rng)
    image = Image.blend(source, stylized, strength)

    _draw_caption(image, prompt, palette[2])
    return _encode_png(image)


def _seed_bytes(prompt, negative_prompt, seed):
    text = f"{prompt}\x00{negative_prompt}\x00{seed}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big")


def _random_color(rng):
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _recolor(source, palette, rng, guidance_scale):
    """Map the photo's brightness onto a three-color palette, posterized to a few levels."""
    gray = ImageOps.grayscale(source)
    gray = ImageOps.posterize(gray, rng.randint(2, 4))
    dark, light, middle = palette
    colored = ImageOps.colorize(gray, black=dark, white=light, mid=middle)

    # A higher guidance scale follows the prompt more closely, shown here as more saturation.
    return ImageEnhance.Color(colored).enhance(0.5 + guidance_scale / 10)


def _add_strokes(image, palette, rng):
    """Composite a few translucent ellipses whose places and colors depend on the seed."""
    width, height = image.size
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)

    for _ in range(rng.randint(4, 9)):
        x = rng.randrange(width)
        y = rng.randrange(height)
        radius_x = rng.randint(max(1, width // 12), max(2, width // 4))
        radius_y = rng.randint(max(1, height // 12), max(2, height // 4))
        color = (*rng.choice(palette), rng.randint(50, 110))
        draw.ellipse((x - radius_x, y - radius_y, x + radius_x, y + radius_y), fill=color)

    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def _draw_caption(image, prompt, accent):
    """Write the label and the prompt on a dark band across the bottom of the image."""
    width, height = image.size
    size = max(10, min(width, height) // 20)
    font = ImageFont.load_default(size=size)
    padding = max(2, size // 3)
    band_top = max(0, height - 2 * size - 3 * padding)

    band = Image.new("RGBA", (width, height - band_top), (0, 0, 0, 150))
    image.paste(band, (0, band_top), band)

    draw = ImageDraw.Draw(image)
    draw.text((padding, band_top + padding), LABEL, font=font, fill=_lighten(accent))
    caption = _fit_text(draw, prompt, font, width - 2 * padding)
    draw.text((padding, band_top + 2 * padding + size), caption, font=font, fill=(255, 255, 255))


def _lighten(color):
    """Return color halfway to white, so it stays readable on the dark band."""
    return tuple(128 + channel // 2 for channel in color)


def _fit_text(draw, text, font, max_width):
    """Return text, shortened with an ellipsis if it is wider than max_width pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= max_width:
        return text

    # Binary search for the longest prefix that fits, so long prompts stay fast.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if draw.textlength(text[:middle] + ELLIPSIS, font=font) <= max_width:
            low = middle
        else:
            high = middle - 1
    return text[:low] + ELLIPSIS


def _encode_png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
