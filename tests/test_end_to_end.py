"""The whole path on real processes: web server, worker and simulator on free ports."""

import base64
import io
import re

import httpx
import pytest
from PIL import Image, ImageChops

from .support import FIXTURES, wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough password"


def csrf_token(client, path):
    page = client.get(path).text
    return re.search(r'name="csrf_token"[^>]* value="([^"]+)"', page).group(1)


def test_photo_becomes_generated_image(live_stack):
    base_url, processes = live_stack()
    photo = (FIXTURES / "astronaut.jpg").read_bytes()

    with httpx.Client(base_url=base_url, timeout=10) as client:
        token = csrf_token(client, "/signup")
        signup = client.post("/signup", data={"email": "e2e@example.com", "password": PASSWORD, "csrf_token": token})
        assert signup.status_code == 302, signup.text

        token = csrf_token(client, "/prompts/new")
        created = client.post(
            "/prompts",
            data={"title": "an astronaut in watercolor", "description": "", "csrf_token": token},
            files={"image": ("astronaut.jpg", photo, "image/jpeg")},
        )
        assert created.status_code == 302, created.text
        page = client.get(created.headers["location"]).text
        card_url = re.search(r'hx-get="([^"]+)"', page).group(1)

        def finished_card():
            card = client.get(card_url, headers={"HX-Request": "true"}).text
            return card if "hx-get" not in card else None

        try:
            card = wait_for(finished_card, timeout=60, interval=0.2, message="the generated image")
        except AssertionError:
            raise AssertionError("\n".join(p.log() for p in processes)) from None
        page = client.get(created.headers["location"]).text
        download_url = re.search(r'href="(/prompts/\d+/predictions/\d+/images/0)"', card).group(1)
        stored = client.get(download_url)

    preview_match = re.search(r'src="data:image/jpeg;base64,([^"]+)"', card)
    assert preview_match, card
    preview = Image.open(io.BytesIO(base64.b64decode(preview_match.group(1))))
    generated = Image.open(io.BytesIO(stored.content))
    generated.load()
    original = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "image/png"
    assert generated.format == "PNG"
    assert generated.size == (512, 512)
    assert ImageChops.difference(generated.convert("RGB"), original).getbbox() is not None
    assert preview.format == "JPEG"
    assert preview.size == (512, 512)
    assert "Simulated image" in card
    assert preview_match.group(1) in page
    assert "hx-get" not in page
