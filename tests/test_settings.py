import io
import re

import pytest

from promptgen import settings
from promptgen.extensions import db
from promptgen.models import Prediction, Prompt

from .conftest import attach_image, create_prompt, csrf_token

CHANGED = {
    "prompt_strength": "0.55",
    "num_outputs": "2",
    "num_inference_steps": "40",
    "guidance_scale": "9.5",
    "scheduler": "K_EULER",
    "seed": "1234",
    "negative_prompt": " blurry ",
}


@pytest.fixture
def logged_in(accounts):
    accounts.signup()


def all_settings(app):
    with app.app_context():
        return db.session.scalars(db.select(Prediction.settings).order_by(Prediction.id)).all()


def test_model_input_leaves_out_unset_values():
    assert settings.model_input({}) == {
        "prompt_strength": 0.8,
        "num_outputs": 1,
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
        "scheduler": "DPMSolverMultistep",
    }
    assert settings.model_input({"seed": 0, "negative_prompt": "fog"})["seed"] == 0
    assert settings.model_input({"seed": 0, "negative_prompt": "fog"})["negative_prompt"] == "fog"


def test_reported_seed_read_from_logs():
    assert settings.reported_seed("Using seed: 48213\n  0%|") == 48213
    assert settings.reported_seed("") is None
    assert settings.reported_seed(None) is None


def test_describe_settings():
    text = settings.describe({"prompt_strength": 0.55, "guidance_scale": 9.5, "negative_prompt": "fog"})

    assert text == "strength 0.55 · 25 steps · guidance 9.5 · DPMSolverMultistep · not “fog”"


def test_create_stores_default_settings(client, app, logged_in, photo_bytes):
    create_prompt(client, photo_bytes)

    assert all_settings(app) == [settings.DEFAULTS]


def test_create_stores_chosen_settings(client, app, logged_in, photo_bytes):
    token = csrf_token(client, "/prompts/new")
    data = {"title": "a cat", "csrf_token": token, "image": (io.BytesIO(photo_bytes), "p.jpg"), **CHANGED}

    response = client.post("/prompts", data=data, content_type="multipart/form-data")

    assert response.status_code == 302
    assert all_settings(app) == [
        {
            "prompt_strength": 0.55,
            "num_outputs": 2,
            "num_inference_steps": 40,
            "guidance_scale": 9.5,
            "scheduler": "K_EULER",
            "seed": 1234,
            "negative_prompt": "blurry",
        }
    ]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("prompt_strength", "1.5", "Number must be between 0.0 and 1.0."),
        ("prompt_strength", "strong", "Not a valid number. Enter a number between 0.0 and 1.0."),
        ("num_outputs", "5", "Number must be between 1 and 4."),
        ("num_inference_steps", "0", "Number must be between 1 and 100."),
        ("num_inference_steps", "101", "Number must be between 1 and 100."),
        ("guidance_scale", "25", "Number must be between 1.0 and 20.0."),
        ("scheduler", "FASTEST", "Not a valid choice."),
        ("seed", "-1", "Number must be between 0 and 4294967295."),
        ("negative_prompt", "x" * 501, "Field cannot be longer than 500 characters."),
    ],
)
def test_generate_again_rejects_invalid_settings(client, app, logged_in, photo_bytes, name, value, message):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)

    response = client.post(location + "/predictions", data={**CHANGED, name: value, "csrf_token": token})

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert len(all_settings(app)) == 1


#: Values that are not finite numbers, or that a float cannot hold.
NOT_NUMBERS = ["sNaN", "-sNaN", "NaN", "-nan", "Infinity", "-inf", "1e999999999", "1e99999999999999999999", "abc", "1_0", "0x1"]

#: The message each numeric field shows for any value in NOT_NUMBERS.
NOT_A_NUMBER_MESSAGES = {
    "prompt_strength": "Not a valid number. Enter a number between 0.0 and 1.0.",
    "guidance_scale": "Not a valid number. Enter a number between 1.0 and 20.0.",
    "num_outputs": "Not a valid whole number. Enter a whole number between 1 and 4.",
    "num_inference_steps": "Not a valid whole number. Enter a whole number between 1 and 100.",
    "seed": "Not a valid whole number. Enter a whole number between 0 and 4294967295.",
}


def error_messages(page):
    return re.findall(r'<p class="error">([^<]*)</p>', page)


@pytest.mark.parametrize("value", NOT_NUMBERS)
@pytest.mark.parametrize("name", sorted(NOT_A_NUMBER_MESSAGES))
def test_generate_again_rejects_non_numbers(client, app, logged_in, photo_bytes, name, value):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)

    response = client.post(location + "/predictions", data={**CHANGED, name: value, "csrf_token": token})

    assert response.status_code == 422
    assert error_messages(response.get_data(as_text=True)) == [NOT_A_NUMBER_MESSAGES[name]]
    assert len(all_settings(app)) == 1


@pytest.mark.parametrize("value", NOT_NUMBERS)
@pytest.mark.parametrize("name", sorted(NOT_A_NUMBER_MESSAGES))
def test_create_rejects_non_numbers(client, app, logged_in, photo_bytes, name, value):
    token = csrf_token(client, "/prompts/new")
    data = {"title": "a cat", "csrf_token": token, "image": (io.BytesIO(photo_bytes), "p.jpg"), **CHANGED}

    response = client.post("/prompts", data={**data, name: value}, content_type="multipart/form-data")

    assert response.status_code == 422
    assert error_messages(response.get_data(as_text=True)) == [NOT_A_NUMBER_MESSAGES[name]]
    assert all_settings(app) == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Prompt.id))) == 0


def test_empty_numbers_take_defaults(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)
    empty = {name: "" for name in NOT_A_NUMBER_MESSAGES}

    response = client.post(location + "/predictions", data={**CHANGED, **empty, "csrf_token": token})

    assert response.status_code == 302
    assert all_settings(app)[1]["prompt_strength"] == 0.8
    assert all_settings(app)[1]["guidance_scale"] == 7.5
    assert all_settings(app)[1]["num_outputs"] == 1
    assert all_settings(app)[1]["seed"] is None


def test_generate_again_with_changed_settings(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    token = csrf_token(client, location)

    client.post(location + "/predictions", data={**CHANGED, "csrf_token": token})
    page = client.get(location).get_data(as_text=True)

    assert all_settings(app)[1]["scheduler"] == "K_EULER"
    assert all_settings(app)[1]["seed"] == 1234
    assert 'name="seed" type="number" value="1234"' in page
    assert '<option selected value="K_EULER">' in page


def test_card_shows_settings_and_reported_seed(client, app, logged_in, photo_bytes):
    location = create_prompt(client, photo_bytes).headers["Location"]
    with app.app_context():
        prediction = db.session.scalar(db.select(Prediction))
        attach_image(prediction, photo_bytes)
        prediction.logs = "Using seed: 48213\n100%|##########| 20/20"
        db.session.commit()

    page = client.get(location).get_data(as_text=True)

    assert "strength 0.8 · 25 steps · guidance 7.5 · DPMSolverMultistep · seed 48213" in page


def test_describe_one_step_singular():
    text = settings.describe({"num_inference_steps": 1})

    assert text == "strength 0.8 · 1 step · guidance 7.5 · DPMSolverMultistep"
