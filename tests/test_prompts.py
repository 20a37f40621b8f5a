import io
from datetime import datetime
import re

import pytest
from PIL import Image

from promptgen.extensions import db
from promptgen.images import data_url
from promptgen.models import Prediction, Prompt, utcnow

from .conftest import attach_image, add_prompt, create_prompt, csrf_token, edit_prompt, png_photo, queued_jobs


@pytest.fixture
def logged_in(accounts):
    accounts.signup()
    return accounts


def count(app, model):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(model))


def test_create_saves_prompt_and_queues_prediction(client, app, logged_in, photo_bytes):
    response = create_prompt(client, photo_bytes, title="  a watercolor portrait  ")

    assert response.status_code == 302
    with app.app_context():
        prompt = db.session.scalar(db.select(Prompt))
        assert response.headers["Location"] == f"/prompts/{prompt.id}"
        assert prompt.title == "a watercolor portrait"
        assert prompt.image_mime == "image/jpeg"
        assert Image.open(io.BytesIO(prompt.image)).size == (512, 512)
        assert Image.open(io.BytesIO(prompt.thumbnail)).size == (256, 256)
        [prediction] = prompt.predictions
        assert prediction.status == "queued"
        assert prediction.replicate_id is None
        assert queued_jobs(app) == [("promptgen.jobs:generate_prediction", f"[{prediction.id}]")]


def test_create_flashes_and_shows_placeholder(client, logged_in, photo_bytes):
    response = create_prompt(client, photo_bytes)

    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Prompt saved. The first variation is on its way." in page
    assert 'hx-trigger="every 2s"' in page
    assert "data:image/jpeg;base64," in page


@pytest.mark.parametrize(
    ("title", "photo", "filename", "message"),
    [
        ("", "fixture", "photo.jpg", "This field is required."),
        ("x" * 501, "fixture", "photo.jpg", "Field cannot be longer than 500 characters."),
        ("a cat", None, "photo.jpg", "Choose a photo to upload."),
        ("a cat", b"just text", "photo.jpg", "The file is not a readable image."),
        ("a cat", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "anim.gif", "The file is not a readable image."),
    ],
)
def test_create_invalid_input_saves_nothing(client, app, logged_in, photo_bytes, title, photo, filename, message):
    photo = photo_bytes if photo == "fixture" else photo

    response = create_prompt(client, photo, title=title, filename=filename)

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert count(app, Prompt) == 0
    assert count(app, Prediction) == 0


def test_create_rejects_too_many_pixels(client, app, logged_in):
    photo = png_photo(size=(12000, 9000))

    response = create_prompt(client, photo, filename="huge.png")

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert (
        '<p class="error">The image is 12000 x 9000 pixels (108 megapixels). The limit is 50 megapixels.</p>'
        in page
    )
    assert count(app, Prompt) == 0


def test_create_accepts_title_of_500_characters(client, logged_in, photo_bytes):
    assert create_prompt(client, photo_bytes, title="x" * 500).status_code == 302


def test_upload_over_limit_gets_413(client, app, logged_in):
    token = csrf_token(client, "/prompts/new")
    # A raw body, so the test client keeps it in memory instead of a temporary file.
    body = (
        b"--limit\r\n"
        b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n' + token.encode() + b"\r\n"
        b"--limit\r\n"
        b'Content-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + b"\xff" * (10 * 1024 * 1024) + b"\r\n--limit--\r\n"
    )

    response = client.post("/prompts", data=body, content_type="multipart/form-data; boundary=limit")

    page = response.get_data(as_text=True)
    assert response.status_code == 413
    assert "<p>The upload is larger than the limit of 10 MB. Choose a smaller photo and try again.</p>" in page
    assert '<a href="/prompts/new">Back to the new prompt form</a>' in page
    assert count(app, Prompt) == 0


def test_edit_upload_over_limit_links_to_edit(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location + "/edit")
    body = (
        b"--limit\r\n"
        b'Content-Disposition: form-data; name="csrf_token"\r\n\r\n' + token.encode() + b"\r\n"
        b"--limit\r\n"
        b'Content-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + b"\xff" * (10 * 1024 * 1024) + b"\r\n--limit--\r\n"
    )

    response = client.post(location + "/edit", data=body, content_type="multipart/form-data; boundary=limit")

    page = response.get_data(as_text=True)
    assert response.status_code == 413
    assert "<p>The upload is larger than the limit of 10 MB. Choose a smaller photo and try again.</p>" in page
    assert f'<a href="{location}/edit">Back to editing the prompt</a>' in page


def test_index_lists_newest_first_with_counts(client, app, logged_in, photo_bytes):
    create_prompt(client, photo_bytes, title="first prompt")
    second = create_prompt(client, photo_bytes, title="second prompt")
    token = csrf_token(client, second.headers["Location"])
    client.post(second.headers["Location"] + "/predictions", data={"csrf_token": token})

    page = client.get("/prompts").get_data(as_text=True)

    assert page.index("second prompt") < page.index("first prompt")
    assert "2 variations" in page
    assert "1 variation<" in page


def test_generate_again_adds_prediction(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)

    response = client.post(location + "/predictions", data={"csrf_token": token})

    assert response.status_code == 302
    assert count(app, Prediction) == 2
    assert [func for func, _ in queued_jobs(app)] == ["promptgen.jobs:generate_prediction"] * 2


def test_edit_changes_title_and_keeps_photo(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location + "/edit")

    response = client.post(
        location + "/edit",
        data={"title": "an oil painting", "description": "for the hall", "csrf_token": token},
        content_type="multipart/form-data",
    )

    assert response.status_code == 302
    with app.app_context():
        prompt = db.session.scalar(db.select(Prompt))
        assert prompt.title == "an oil painting"
        assert prompt.description == "for the hall"
        assert Image.open(io.BytesIO(prompt.image)).size == (512, 512)


def test_edit_invalid_title_changes_nothing(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes, title="kept").headers["Location"]
    token = csrf_token(client, location + "/edit")

    response = client.post(location + "/edit", data={"title": "", "csrf_token": token})

    assert response.status_code == 422
    with app.app_context():
        assert db.session.scalar(db.select(Prompt.title)) == "kept"


BLANK_PROMPT = (
    "The prompt contains only spaces or invisible characters. Enter the words the variations should show."
)


def control_character(code, position):
    return (
        f"The prompt contains the control character U+{code:04X} at position {position}."
        " Remove it and try again."
    )


def rejected_character(code, position, label="prompt"):
    return (
        f"The {label} contains the character U+{code:04X} at position {position}."
        " Remove it and try again."
    )


INVALID_PROMPT_TEXTS = [
    ("\u200e\u200f", BLANK_PROMPT),
    ("\u00ad\u00ad", BLANK_PROMPT),
    ("\u180e", BLANK_PROMPT),
    ("\U000e0001\U000e0041", BLANK_PROMPT),
    ("\u115f\u3164", BLANK_PROMPT),
    ("\u0301\u0301", BLANK_PROMPT),
    ("a\u2028b", rejected_character(0x2028, 2)),
    ("\u202e evil", rejected_character(0x202E, 1)),
    ("a\ufffdb", rejected_character(0xFFFD, 2)),
    ("   ", BLANK_PROMPT),
    ("\u200b", BLANK_PROMPT),
    ("\u200c\u200d", BLANK_PROMPT),
    (" \u2060 ", BLANK_PROMPT),
    ("\ufeff\u200b\u3000", BLANK_PROMPT),
    ("a cat\x00", control_character(0x00, 6)),
    ("\x01a cat", control_character(0x01, 1)),
    ("a\tcat", control_character(0x09, 2)),
    ("a cat\n", control_character(0x0A, 6)),
    ("a\x1bcat", control_character(0x1B, 2)),
    ("a cat\x7f", control_character(0x7F, 6)),
    ("\u200b\x00", control_character(0x00, 2)),
]


@pytest.mark.parametrize(("title", "message"), INVALID_PROMPT_TEXTS)
def test_create_rejects_invisible_or_control_text(client, app, logged_in, photo_bytes, title, message):
    response = create_prompt(client, photo_bytes, title=title)

    assert response.status_code == 422
    assert f'<p class="error">{message}</p>' in response.get_data(as_text=True)
    assert count(app, Prompt) == 0
    assert count(app, Prediction) == 0


@pytest.mark.parametrize(("title", "message"), INVALID_PROMPT_TEXTS)
def test_edit_rejects_invisible_or_control_text(client, app, logged_in, photo_bytes, title, message):
    location = create_prompt(client, photo_bytes, title="kept").headers["Location"]
    token = csrf_token(client, location + "/edit")

    response = client.post(location + "/edit", data={"title": title, "csrf_token": token})

    assert response.status_code == 422
    assert f'<p class="error">{message}</p>' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(Prompt.title)) == "kept"
    assert count(app, Prediction) == 1


def test_create_accepts_joiner_inside_text(client, app, logged_in, photo_bytes):
    # A zero-width joiner between visible characters is part of an emoji sequence.
    response = create_prompt(client, photo_bytes, title="a \U0001f469\u200d\U0001f680 portrait")

    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(Prompt.title)) == "a \U0001f469\u200d\U0001f680 portrait"


def test_delete_removes_prompt_and_predictions(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)

    response = client.post(location + "/delete", data={"csrf_token": token})

    assert response.status_code == 302
    assert count(app, Prompt) == 0
    assert count(app, Prediction) == 0
    assert "Prompt deleted." in client.get("/prompts").get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/prompts/{prompt}"),
        ("get", "/prompts/{prompt}/edit"),
        ("post", "/prompts/{prompt}/edit"),
        ("get", "/prompts/{prompt}/delete"),
        ("post", "/prompts/{prompt}/delete"),
        ("get", "/prompts/{prompt}/predictions/{prediction}/images/0"),
        ("post", "/prompts/{prompt}/predictions/{prediction}/delete"),
        ("post", "/prompts/{prompt}/predictions/{prediction}/retry-download"),
        ("post", "/prompts/{prompt}/predictions"),
        ("get", "/prompts/{prompt}/predictions/{prediction}"),
    ],
)
def test_other_accounts_prompt_is_404(client, app, logged_in, method, path):
    _, prompt_id, prediction_id = add_prompt(app)
    token = csrf_token(client, "/prompts/new")

    url = path.format(prompt=prompt_id, prediction=prediction_id)
    response = getattr(client, method)(url, data={"csrf_token": token, "title": "stolen"})

    assert response.status_code == 404
    with app.app_context():
        assert db.session.get(Prompt, prompt_id).title == "someone else's prompt"
        assert count(app, Prediction) == 1


def test_other_accounts_prompts_not_listed(client, app, logged_in):
    add_prompt(app)

    page = client.get("/prompts").get_data(as_text=True)

    assert "someone else" not in page
    assert "No prompts yet." in page


def test_prediction_card_polls_until_final(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    with app.app_context():
        prediction = db.session.scalar(db.select(Prediction))
        card_url = f"{location}/predictions/{prediction.id}"

    pending = client.get(card_url).get_data(as_text=True)
    with app.app_context():
        prediction = db.session.get(Prediction, prediction.id)
        attach_image(prediction, photo_bytes)
        prediction.completed_at = prediction.created_at
        db.session.commit()
    final = client.get(card_url).get_data(as_text=True)

    assert "hx-get" in pending
    assert "Queued" in pending
    assert "hx-get" not in final
    assert "hx-trigger" not in final
    assert 'src="data:image/jpeg;base64,' in final
    assert "Simulated image" in final


def test_failed_prediction_shows_error(client, app, logged_in):
    _, prompt_id, _ = add_prompt(
        app,
        owner_email="ada@example.com",
        status="failed",
        error="NSFW content detected. Try a different prompt.",
    )

    page = client.get(f"/prompts/{prompt_id}").get_data(as_text=True)

    assert "Failed: NSFW content detected. Try a different prompt." in page
    assert "hx-get" not in page


def test_failed_card_gives_advice_once(client, app, logged_in):
    error = "Replicate could not be reached after 6 attempts (HTTP 503: Service Unavailable)."
    _, prompt_id, _ = add_prompt(app, owner_email="ada@example.com", status="failed", error=error)

    page = client.get(f"/prompts/{prompt_id}").get_data(as_text=True)

    assert f'<p class="status error">Failed: {error}</p>' in page
    assert page.count("to try once more") == 1
    assert "Use Generate again" not in page


def test_delete_asks_for_confirmation(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes, title="keep me?").headers["Location"]

    page = client.get(location + "/delete").get_data(as_text=True)

    assert "Delete “keep me?”?" in page
    assert "all 1 of its variations" in page
    assert count(app, Prompt) == 1


def test_index_paginates_24_per_page(client, app, logged_in):
    for _ in range(25):
        add_prompt(app, owner_email="ada@example.com")

    first = client.get("/prompts").get_data(as_text=True)
    second = client.get("/prompts?page=2").get_data(as_text=True)

    assert first.count('class="card"') == 24
    assert second.count('class="card"') == 1
    assert "Page 1 of 2" in first
    assert 'href="/prompts?page=2"' in first
    assert 'href="/prompts?page=1"' in second


def test_index_sends_thumbnails_not_photos(client, app, logged_in, photo_bytes):
    create_prompt(client, photo_bytes)
    with app.app_context():
        prompt = db.session.scalar(db.select(Prompt))
        photo_url = data_url(prompt.image, "image/jpeg")
        thumbnail_url = data_url(prompt.thumbnail, "image/jpeg")

    page = client.get("/prompts").get_data(as_text=True)

    assert thumbnail_url in page
    assert photo_url not in page


def finish_prediction(app, image, mime="image/png"):
    with app.app_context():
        prediction = db.session.scalar(db.select(Prediction))
        attach_image(prediction, image, mime)
        db.session.commit()
        return prediction.id


def test_download_sends_image_with_prompt_name(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes, title="A watercolor / portrait!").headers["Location"]
    prediction_id = finish_prediction(app, b"\x89PNG image bytes")

    response = client.get(f"{location}/predictions/{prediction_id}/images/0")

    assert response.status_code == 200
    assert response.data == b"\x89PNG image bytes"
    assert response.mimetype == "image/png"
    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=A_watercolor_portrait-{prediction_id}.png"
    )


def test_download_of_pending_prediction_is_404(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    with app.app_context():
        prediction_id = db.session.scalar(db.select(Prediction.id))

    assert client.get(f"{location}/predictions/{prediction_id}/images/0").status_code == 404


def test_delete_one_prediction(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)
    client.post(location + "/predictions", data={"csrf_token": token})
    with app.app_context():
        first_id = db.session.scalar(db.select(Prediction.id).order_by(Prediction.id))

    response = client.post(f"{location}/predictions/{first_id}/delete", data={"csrf_token": token})

    assert response.status_code == 302
    assert count(app, Prediction) == 1
    assert count(app, Prompt) == 1
    with app.app_context():
        assert db.session.get(Prediction, first_id) is None


@pytest.mark.parametrize(
    ("image_count", "message"),
    [
        (0, "Delete variation {id}? This cannot be undone."),
        (1, "Delete variation {id} and its image? This cannot be undone."),
        (2, "Delete variation {id} and its 2 images? This cannot be undone."),
    ],
)
def test_delete_prediction_form_asks_first(client, app, logged_in, photo_bytes, image_count, message):
    location = create_prompt(client, photo_bytes).headers["Location"]
    with app.app_context():
        prediction = db.session.scalar(db.select(Prediction))
        prediction_id = prediction.id
        prediction.status = Prediction.FAILED
        for position in range(image_count):
            attach_image(prediction, photo_bytes, position=position)
        db.session.commit()

    page = client.get(location).get_data(as_text=True)

    assert f'data-confirm="{message.format(id=prediction_id)}"' in page
    assert f'action="{location}/predictions/{prediction_id}/delete"' in page


def test_pages_send_security_headers(client):
    response = client.get("/login")

    assert response.headers["Content-Security-Policy"] == (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self';"
        " object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in response.get_data(as_text=True)


def test_unchanged_pending_card_answers_204(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    page = client.get(location).get_data(as_text=True)
    card_url = re.search(r'hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")

    unchanged = client.get(card_url)
    with app.app_context():
        prediction = db.session.scalar(db.select(Prediction))
        prediction.status = "processing"
        prediction.logs = " 40%|####      | 8/20"
        db.session.commit()
    changed = client.get(card_url)

    assert card_url.endswith("?shown=queued-None-0")
    assert unchanged.status_code == 204
    assert unchanged.data == b""
    assert changed.status_code == 200
    assert 'value="40"' in changed.get_data(as_text=True)
    assert "?shown=processing-40-0" in changed.get_data(as_text=True)
    assert len(changed.data) < 1024


def test_finished_card_shows_run_time(client, app, logged_in, photo_bytes):
    from datetime import datetime

    location = create_prompt(client, photo_bytes).headers["Location"]
    with app.app_context():
        prediction = db.session.scalar(db.select(Prediction))
        attach_image(prediction, photo_bytes)
        prediction.started_at = datetime(2026, 1, 1, 12, 0, 0)
        prediction.completed_at = datetime(2026, 1, 1, 12, 1, 5)
        db.session.commit()

    page = client.get(location).get_data(as_text=True)

    assert "2026-01-01 12:01 UTC · ran 1 min 5 s" in page


PENDING_LIMIT_MESSAGE = (
    "You have 2 variations in progress, the most allowed at once. Wait for one to finish, then try again."
)


def test_pending_limit_rejects_more_runs(client, app, logged_in, photo_bytes):
    app.config["MAX_PENDING_PREDICTIONS"] = 2
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)
    client.post(location + "/predictions", data={"csrf_token": token})

    again = client.post(location + "/predictions", data={"csrf_token": token})
    page = client.get(location).get_data(as_text=True)
    another_prompt = create_prompt(client, photo_bytes)

    assert again.status_code == 303
    assert again.headers["Location"] == location
    assert f'<p class="flash flash-error" role="status">{PENDING_LIMIT_MESSAGE}</p>' in page
    assert another_prompt.status_code == 429
    assert f'<p class="error" role="alert">{PENDING_LIMIT_MESSAGE}</p>' in another_prompt.get_data(as_text=True)
    assert count(app, Prediction) == 2
    assert count(app, Prompt) == 1


def test_pending_limit_htmx_request_gets_429(client, app, logged_in, photo_bytes):
    app.config["MAX_PENDING_PREDICTIONS"] = 1
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)

    response = client.post(location + "/predictions", data={"csrf_token": token}, headers={"HX-Request": "true"})
    page = client.get(location).get_data(as_text=True)

    assert response.status_code == 429
    assert response.headers["HX-Redirect"] == location
    assert response.get_data(as_text=True) == ""
    assert (
        '<p class="flash flash-error" role="status">You have 1 variation in progress, the most allowed'
        " at once. Wait for one to finish, then try again.</p>"
    ) in page
    assert count(app, Prediction) == 1


def test_huge_ids_are_404(client, logged_in):
    assert client.get("/prompts/99999999999999999999").status_code == 404
    assert client.get("/prompts/1/predictions/99999999999999999999").status_code == 404


def test_huge_page_number_shows_no_such_page(client, app, logged_in, photo_bytes):
    create_prompt(client, photo_bytes)

    response = client.get("/prompts?page=99999999999999999999999")

    assert response.status_code == 200
    assert "There is no page 1000000." in response.get_data(as_text=True)


def test_poll_after_logout_asks_htmx_to_reload(client, app, logged_in, accounts, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    card_url = re.search(r'hx-get="([^"]+)"', client.get(location).get_data(as_text=True)).group(1)
    accounts.logout()

    response = client.get(card_url.replace("&amp;", "&"), headers={"HX-Request": "true"})

    assert response.status_code == 401
    assert response.headers["HX-Refresh"] == "true"
    assert response.data == b""


def test_poll_of_deleted_prompt_asks_htmx_to_reload(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    card_url = re.search(r'hx-get="([^"]+)"', client.get(location).get_data(as_text=True)).group(1)
    client.post(location + "/delete", data={"csrf_token": csrf_token(client, "/prompts/new")})

    response = client.get(card_url.replace("&amp;", "&"), headers={"HX-Request": "true"})

    assert response.status_code == 404
    assert response.headers["HX-Refresh"] == "true"


def test_logged_in_login_and_signup_redirect(client, logged_in):
    assert client.get("/login").headers["Location"] == "/prompts"
    assert client.get("/signup").headers["Location"] == "/prompts"


@pytest.mark.parametrize(
    ("title", "stem"),
    [
        ("A watercolor / portrait!", "A_watercolor_portrait"),
        ("../../etc/passwd", "etc_passwd"),
        ("Ένα πορτρέτο σε ακουαρέλα", "Ένα_πορτρέτο_σε_ακουαρέλα"),
        ("!!!", "prediction"),
        ("x" * 100, "x" * 60),
    ],
)
def test_download_stem(title, stem):
    from promptgen.prompts.views import download_stem

    assert download_stem(title) == stem


def test_deleted_prediction_id_not_reused(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    with app.app_context():
        first_id = db.session.scalar(db.select(Prediction.id))
    client.post(location + "/delete", data={"csrf_token": csrf_token(client, location)})

    create_prompt(client, photo_bytes)

    with app.app_context():
        assert db.session.scalar(db.select(Prediction.id)) == first_id + 1


def prompt_input(app):
    """Return the only prompt's current (title, image, image_mime)."""
    with app.app_context():
        prompt = db.session.scalar(db.select(Prompt))
        return prompt.title, prompt.image, prompt.image_mime


def prediction_inputs(app):
    """Return (input_text, input_image, input_mime) of every prediction, oldest first."""
    with app.app_context():
        rows = db.session.scalars(db.select(Prediction).order_by(Prediction.id)).all()
        return [(row.input_text, row.input_image, row.input_mime) for row in rows]


def test_generate_copies_prompt_input(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes, title="a watercolor portrait").headers["Location"]
    original = prompt_input(app)
    edit_prompt(client, location, "an oil painting", png_photo())
    edited = prompt_input(app)

    client.post(location + "/predictions", data={"csrf_token": csrf_token(client, location)})

    first, second = prediction_inputs(app)
    assert original[0] == "a watercolor portrait"
    assert edited[0] == "an oil painting"
    assert edited[1] != original[1]
    assert Image.open(io.BytesIO(edited[1])).size == (320, 240)
    assert first == original
    assert second == edited


def finished_card(app, location, photo):
    """Finish the prompt's first prediction with photo as its image and return the card's URL."""
    with app.app_context():
        prediction = db.session.scalar(db.select(Prediction).order_by(Prediction.id))
        attach_image(prediction, photo)
        db.session.commit()
        return f"{location}/predictions/{prediction.id}"


def test_card_shows_text_used_after_edit(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes, title="a watercolor portrait").headers["Location"]
    card_url = finished_card(app, location, photo_bytes)
    before = client.get(card_url).get_data(as_text=True)

    edit_prompt(client, location, "an oil painting", png_photo())
    after = client.get(card_url).get_data(as_text=True)
    page = client.get(location).get_data(as_text=True)

    assert "Prompt used:" not in before
    assert "Prompt used: “a watercolor portrait”" in after
    assert "of “a watercolor portrait”" in after
    assert "an oil painting" not in after
    assert "<h1>an oil painting</h1>" in page
    assert "Prompt used: “a watercolor portrait”" in page


def test_pending_card_shows_text_used(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes, title="a watercolor portrait").headers["Location"]
    with app.app_context():
        card_url = f"{location}/predictions/{db.session.scalar(db.select(Prediction.id))}"

    edit_prompt(client, location, "an oil painting")
    card = client.get(card_url).get_data(as_text=True)

    assert "hx-get" in card
    assert "Prompt used: “a watercolor portrait”" in card


def test_card_of_old_row_follows_prompt(client, app, logged_in, photo_bytes):
    _, prompt_id, prediction_id = add_prompt(app, owner_email="ada@example.com")
    with app.app_context():
        attach_image(db.session.get(Prediction, prediction_id), photo_bytes)
        db.session.commit()
    location = f"/prompts/{prompt_id}"

    edit_prompt(client, location, "an oil painting")
    card = client.get(f"{location}/predictions/{prediction_id}").get_data(as_text=True)

    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        assert prediction.input_text is None
        assert prediction.prompt_text == "an oil painting"
        assert prediction.photo == (photo_bytes, "image/jpeg")
    assert "Prompt used:" not in card
    assert "of “an oil painting”" in card


def test_download_named_after_text_used(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes, title="A watercolor / portrait!").headers["Location"]
    prediction_id = finish_prediction(app, b"\x89PNG image bytes")

    edit_prompt(client, location, "an oil painting")
    response = client.get(f"{location}/predictions/{prediction_id}/images/0")

    assert response.headers["Content-Disposition"] == (
        f"attachment; filename=A_watercolor_portrait-{prediction_id}.png"
    )


DOWNLOAD_FAILED = "The output download failed after 3 attempts (ReadTimeout: timed out)."


def add_failed_download(app, owner_email="ada@example.com", stored_images=0, **changes):
    """Insert a succeeded prediction with two outputs whose store job gave up; return its ids."""
    _, prompt_id, prediction_id = add_prompt(app, owner_email=owner_email)
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        prediction.status = Prediction.SUCCEEDED
        prediction.output_urls = [f"https://replicate.delivery/test/out-{index}.png" for index in range(2)]
        prediction.download_attempts = 3
        prediction.error = DOWNLOAD_FAILED
        prediction.sent_at = utcnow()
        for position in range(stored_images):
            attach_image(prediction, png_photo(), mime="image/png", position=position)
        for name, value in changes.items():
            setattr(prediction, name, value)
        db.session.commit()
    return prompt_id, prediction_id


def load_prediction(app, prediction_id):
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        db.session.expunge(prediction)
        return prediction


def test_retry_download_queues_store_job_once(client, app, logged_in):
    prompt_id, prediction_id = add_failed_download(app)
    retry_url = f"/prompts/{prompt_id}/predictions/{prediction_id}/retry-download"
    token = csrf_token(client, "/prompts/new")

    first = client.post(retry_url, data={"csrf_token": token})
    page = client.get(f"/prompts/{prompt_id}").get_data(as_text=True)
    second = client.post(retry_url, data={"csrf_token": token})

    prediction = load_prediction(app, prediction_id)
    assert first.status_code == 302
    assert first.headers["Location"] == f"/prompts/{prompt_id}"
    assert second.status_code == 409
    assert f"The images of variation {prediction_id} are already being downloaded." in second.get_data(as_text=True)
    assert prediction.error is None
    assert prediction.download_attempts == 0
    assert queued_jobs(app) == [("promptgen.jobs:store_output", f"[{prediction_id}]")]
    assert f"Downloading the images of variation {prediction_id} again." in page
    assert "Saving the image" in page
    assert "Retry download" not in page


def test_card_offers_retry_download(client, app, logged_in):
    prompt_id, prediction_id = add_failed_download(app)

    page = client.get(f"/prompts/{prompt_id}").get_data(as_text=True)

    assert f'<p class="status error">Failed: {DOWNLOAD_FAILED}</p>' in page
    assert f'action="/prompts/{prompt_id}/predictions/{prediction_id}/retry-download"' in page
    assert "<button type=\"submit\">Retry download</button>" in page
    assert "to try once more" not in page


def test_retry_download_of_other_account_is_404(client, app, logged_in):
    prompt_id, prediction_id = add_failed_download(app, owner_email="owner@example.com")
    token = csrf_token(client, "/prompts/new")

    response = client.post(
        f"/prompts/{prompt_id}/predictions/{prediction_id}/retry-download", data={"csrf_token": token}
    )

    prediction = load_prediction(app, prediction_id)
    assert response.status_code == 404
    assert prediction.error == DOWNLOAD_FAILED
    assert prediction.download_attempts == 3
    assert queued_jobs(app) == []


EXPIRED = (
    "The output of variation {id} has expired on Replicate and can no longer be downloaded."
    " Use “Generate again” for a new run."
)


@pytest.mark.parametrize(
    ("stored_images", "changes", "message"),
    [
        (0, {"status": Prediction.FAILED, "output_urls": []}, "Variation {id} has no output to download."),
        (0, {"output_urls": []}, "Variation {id} has no output to download."),
        (2, {}, "Variation {id} already has all its images."),
        (0, {"output_expired": True}, EXPIRED),
        (1, {"sent_at": datetime(2026, 1, 1, 12, 0, 0)}, EXPIRED),
        (0, {"error": None, "download_attempts": 1}, "The images of variation {id} are already being downloaded."),
        (
            0,
            {"error": "The output could not be stored: the file is over the 1-byte limit", "download_attempts": 1},
            "Variation {id} failed in a way that downloading again would not fix:"
            " The output could not be stored: the file is over the 1-byte limit",
        ),
    ],
)
def test_retry_download_rejected_with_409(client, app, logged_in, stored_images, changes, message):
    prompt_id, prediction_id = add_failed_download(app, stored_images=stored_images, **changes)
    before = load_prediction(app, prediction_id)
    card = client.get(f"/prompts/{prompt_id}/predictions/{prediction_id}").get_data(as_text=True)
    token = csrf_token(client, "/prompts/new")

    response = client.post(
        f"/prompts/{prompt_id}/predictions/{prediction_id}/retry-download", data={"csrf_token": token}
    )

    after = load_prediction(app, prediction_id)
    assert response.status_code == 409
    assert f"<p>{message.format(id=prediction_id)}</p>" in response.get_data(as_text=True)
    assert after.error == before.error
    assert after.download_attempts == before.download_attempts
    assert queued_jobs(app) == []
    assert "Retry download" not in card


def test_generate_rejects_control_character_in_negative_prompt(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)

    response = client.post(
        location + "/predictions", data={"negative_prompt": "a\x00b", "csrf_token": token}
    )

    assert response.status_code == 422
    message = (
        "The negative prompt contains the control character U+0000 at position 2."
        " Remove it and try again."
    )
    assert message in response.get_data(as_text=True)
    assert count(app, Prediction) == 1


def test_saving_card_shows_run_time_not_timer(client, app, logged_in):
    _, prompt_id, prediction_id = add_prompt(app, owner_email="ada@example.com", status="succeeded")
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        prediction.started_at = datetime(2026, 12, 4, 10, 0, 0)
        prediction.completed_at = datetime(2026, 12, 4, 10, 0, 4, 500000)
        prediction.output_urls = ["https://replicate.delivery/out-0.png"]
        db.session.commit()

    page = client.get(f"/prompts/{prompt_id}").get_data(as_text=True)

    assert "Saving the image" in page
    assert '<p class="muted">Ran 4.5 s</p>' in page
    assert "Running for" not in page
