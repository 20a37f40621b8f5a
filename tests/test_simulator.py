"""Tests of the Replicate simulator through real HTTP servers and the official client."""

import base64
import io
import json
import os
import stat
import sys
import threading

import httpx
import pytest
import replicate
from PIL import Image, ImageChops, ImageDraw
from replicate.exceptions import ReplicateError
from replicate.pagination import paginate
from replicate.prediction import Prediction
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret
from werkzeug.wrappers import Request, Response

from promptgen.simulator import create_simulator_app
from promptgen.simulator.catalog import VERSION_ID
from promptgen.simulator.generate import generate_image
from promptgen.simulator.progress import progress_line
from promptgen.simulator.signing import SECRET_FILE
from promptgen.simulator.webhooks import WebhookSender

from .conftest import WEBHOOK_SECRET
from .support import Process, ServerThread, free_port, is_serving, wait_for

MODEL = "stability-ai/stable-diffusion-img2img"
PHOTO_SIZE = (160, 120)
FINISHED = ("succeeded", "failed", "canceled")

#: Settings shared by the simulators below: short runs and quick webhook retries.
FAST = {
    "SIMULATOR_DELAY": 0.2,
    "SIMULATOR_WEBHOOK_ATTEMPTS": 3,
    "SIMULATOR_WEBHOOK_BACKOFF": 0.05,
    "SIMULATOR_WEBHOOK_TIMEOUT": 2.0,
    "SIMULATOR_PAGE_SIZE": 2,
}


class WebhookReceiver:
    """Records every request and responds with the planned status codes, then with 200."""

    def __init__(self):
        self.requests = []
        self.planned_statuses = []
        self._lock = threading.Lock()
        self._server = ServerThread(self._app)
        self.url = f"{self._server.url}/replicate/webhook?token=abc"

    @Request.application
    def _app(self, request):
        with self._lock:
            self.requests.append((dict(request.headers), request.get_data()))
            status = self.planned_statuses.pop(0) if self.planned_statuses else 200
        return Response("ok", status=status)

    def received(self):
        with self._lock:
            return list(self.requests)

    def stop(self):
        self._server.stop()


def make_photo(size=PHOTO_SIZE):
    """Return JPEG bytes of a test photo: a color gradient with a few shapes."""
    width, height = size
    image = Image.new("RGB", size)
    for x in range(width):
        for y in range(height):
            image.putpixel((x, y), (x * 255 // width, y * 255 // height, 128))

    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 70, 70), fill=(240, 200, 40))
    draw.rectangle((90, 50, 140, 100), fill=(30, 60, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def data_url(data, mime="image/jpeg"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def start_simulator(tmp_path, **overrides):
    app = create_simulator_app({**FAST, **overrides}, instance_path=tmp_path / "instance")
    return ServerThread(app)


def wait_until_finished(client, prediction_id, timeout=10.0):
    def finished():
        prediction = client.predictions.get(prediction_id)
        return prediction if prediction.status in FINISHED else None

    return wait_for(finished, timeout=timeout, message=f"prediction {prediction_id} to finish")


def download(url):
    response = httpx.get(url)
    assert response.status_code == 200, response.text
    return response


def decode_png(data):
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.convert("RGB")


@pytest.fixture(scope="module")
def photo():
    return make_photo()


@pytest.fixture(scope="module")
def photo_url(photo):
    return data_url(photo)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    server = start_simulator(tmp_path_factory.mktemp("simulator"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow_simulator(tmp_path_factory):
    """A simulator whose predictions run long enough to be canceled while running."""
    server = start_simulator(tmp_path_factory.mktemp("slow"), SIMULATOR_DELAY=30.0)
    yield server
    server.stop()


def make_client(server):
    """Return an official client for server and the transport to close after the test."""
    transport = httpx.HTTPTransport()
    client = replicate.Client(api_token="local-simulator", base_url=server.url, transport=transport)
    return client, transport


@pytest.fixture
def replicate_client(simulator):
    client, transport = make_client(simulator)
    yield client
    transport.close()


@pytest.fixture
def slow_replicate_client(slow_simulator):
    client, transport = make_client(slow_simulator)
    yield client
    transport.close()


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


def api_post(server, path, body, token="local-simulator"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers)


# Models and versions


def test_model_lookup_returns_fixed_version(replicate_client):
    model = replicate_client.models.get(MODEL)

    assert model.owner == "stability-ai"
    assert model.name == "stable-diffusion-img2img"
    assert model.visibility == "public"
    assert model.url == "https://replicate.com/stability-ai/stable-diffusion-img2img"
    assert model.latest_version.id == VERSION_ID
    assert len(VERSION_ID) == 64
    assert set(VERSION_ID) <= set("0123456789abcdef")


def test_model_version_schema_lists_inputs(replicate_client):
    version = replicate_client.models.get(MODEL).latest_version
    schemas = version.openapi_schema["components"]["schemas"]
    inputs = schemas["Input"]["properties"]

    assert schemas["Input"]["required"] == ["prompt", "image"]
    assert inputs["prompt"]["type"] == "string"
    assert inputs["image"]["format"] == "uri"
    assert (inputs["prompt_strength"]["minimum"], inputs["prompt_strength"]["maximum"]) == (0, 1)
    assert inputs["prompt_strength"]["default"] == 0.8
    assert (inputs["num_outputs"]["minimum"], inputs["num_outputs"]["maximum"]) == (1, 4)
    assert inputs["num_outputs"]["default"] == 1
    assert (inputs["num_inference_steps"]["minimum"], inputs["num_inference_steps"]["maximum"]) == (
        1,
        500,
    )
    assert inputs["num_inference_steps"]["default"] == 25
    assert (inputs["guidance_scale"]["minimum"], inputs["guidance_scale"]["maximum"]) == (1, 20)
    assert inputs["guidance_scale"]["default"] == 7.5
    assert inputs["seed"]["type"] == "integer"
    assert inputs["negative_prompt"]["type"] == "string"
    assert schemas["scheduler"]["enum"] == [
        "DDIM",
        "K_EULER",
        "DPMSolverMultistep",
        "K_EULER_ANCESTRAL",
        "PNDM",
        "KLMS",
    ]


def test_versions_list_and_get(replicate_client):
    versions = replicate_client.models.get(MODEL).versions

    assert [version.id for version in versions.list()] == [VERSION_ID]
    assert versions.get(VERSION_ID).cog_version == "0.9.4"
    with pytest.raises(ReplicateError) as raised:
        versions.get("0" * 64)
    assert raised.value.status == 404


def test_unknown_model_is_404(replicate_client, simulator):
    with pytest.raises(ReplicateError) as raised:
        replicate_client.models.get("stability-ai/no-such-model")

    assert raised.value.status == 404
    assert "stability-ai/no-such-model" in raised.value.detail


# Predictions


def test_prediction_runs_to_success(replicate_client, simulator, photo, photo_url):
    created = replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a watercolor fox", "image": photo_url, "seed": 42},
    )

    assert created.status == "starting"
    assert created.input == {"prompt": "a watercolor fox", "image": photo_url, "seed": 42}
    assert created.model == MODEL
    assert created.version == VERSION_ID
    assert created.output is None
    assert created.error is None
    assert len(created.id) == 26
    assert created.id.isalnum()
    assert created.id.islower()
    assert created.urls["get"] == f"{simulator.url}/v1/predictions/{created.id}"
    assert created.urls["cancel"] == f"{simulator.url}/v1/predictions/{created.id}/cancel"

    finished = wait_until_finished(replicate_client, created.id)

    assert finished.status == "succeeded"
    assert finished.started_at is not None
    assert finished.completed_at is not None
    assert finished.metrics["predict_time"] > 0
    assert finished.output == [f"{simulator.url}/files/{created.id}/0.png"]

    source = Image.open(io.BytesIO(photo)).convert("RGB")
    output = decode_png(download(finished.output[0]).content)
    assert output.size == PHOTO_SIZE
    assert ImageChops.difference(source, output).getbbox() is not None


def test_logs_show_seed_and_progress(replicate_client, photo_url):
    created = replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a fox", "image": photo_url, "seed": 7, "num_inference_steps": 10},
    )
    finished = wait_until_finished(replicate_client, created.id)
    lines = finished.logs.splitlines()

    assert lines[0] == "Using seed: 7"
    # prompt_strength 0.8 of 10 steps is 8 image-to-image steps.
    assert lines[1] == "  0%|          | 0/8 [00:00<?, ?it/s]"
    assert len(lines) == 10
    assert lines[-1].startswith("100%|██████████| 8/8 [")
    assert finished.progress == Prediction.Progress(percentage=1.0, current=8, total=8)


def test_num_outputs_gives_distinct_images(replicate_client, photo_url):
    created = replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a fox", "image": photo_url, "seed": 3, "num_outputs": 3},
    )
    finished = wait_until_finished(replicate_client, created.id)

    assert len(finished.output) == 3
    images = [download(url).content for url in finished.output]
    assert len(set(images)) == 3


def test_model_route_creates_prediction(replicate_client, photo_url):
    created = replicate_client.models.predictions.create(
        model=MODEL, input={"prompt": "a fox", "image": photo_url}
    )

    assert created.status == "starting"
    assert created.version == VERSION_ID
    assert wait_until_finished(replicate_client, created.id).status == "succeeded"


def test_prefer_wait_returns_finished_prediction(replicate_client, photo_url):
    prediction = replicate_client.predictions.create(
        version=VERSION_ID, input={"prompt": "a fox", "image": photo_url}, wait=10
    )

    assert prediction.status == "succeeded"
    assert len(prediction.output) == 1


def test_list_is_newest_first_with_cursors(replicate_client, photo_url):
    created = [
        replicate_client.predictions.create(
            version=VERSION_ID, input={"prompt": f"fox {n}", "image": photo_url}
        )
        for n in range(3)
    ]
    newest_first = [prediction.id for prediction in reversed(created)]

    first_page = replicate_client.predictions.list()
    assert [prediction.id for prediction in first_page] == newest_first[:2]
    assert first_page.previous is None
    assert first_page.next is not None

    second_page = replicate_client.predictions.list(first_page.next)
    assert second_page.results[0].id == newest_first[2]
    assert second_page.previous is not None
    back = replicate_client.predictions.list(second_page.previous)
    assert [prediction.id for prediction in back] == newest_first[:2]

    listed = [
        prediction.id for page in paginate(replicate_client.predictions.list) for prediction in page
    ]
    assert listed[:3] == newest_first
    assert len(listed) == len(set(listed))


def test_invalid_cursor_is_400(simulator):
    response = httpx.get(
        f"{simulator.url}/v1/predictions?cursor=bm9wZQ",
        headers={"Authorization": "Bearer local-simulator"},
    )

    assert response.status_code == 400
    assert response.json()["title"] == "Invalid cursor"


def test_get_unknown_prediction_is_404(replicate_client):
    with pytest.raises(ReplicateError) as raised:
        replicate_client.predictions.get("doesnotexist")

    assert raised.value.status == 404


def test_unknown_output_file_is_404(simulator):
    response = httpx.get(f"{simulator.url}/files/doesnotexist/0.png")

    assert response.status_code == 404


def test_cancel_running_prediction(slow_replicate_client, photo_url):
    created = slow_replicate_client.predictions.create(
        version=VERSION_ID, input={"prompt": "a fox", "image": photo_url}
    )
    canceled = slow_replicate_client.predictions.cancel(created.id)

    assert canceled.status == "canceled"
    assert canceled.completed_at is not None
    assert canceled.output is None
    assert slow_replicate_client.predictions.get(created.id).status == "canceled"


def test_cancel_finished_prediction_keeps_status(replicate_client, photo_url):
    created = replicate_client.predictions.create(
        version=VERSION_ID, input={"prompt": "a fox", "image": photo_url}
    )
    wait_until_finished(replicate_client, created.id)

    assert replicate_client.predictions.cancel(created.id).status == "succeeded"


def test_image_url_input_is_downloaded(replicate_client, photo_url):
    first = replicate_client.predictions.create(
        version=VERSION_ID, input={"prompt": "a fox", "image": photo_url}, wait=10
    )
    second = replicate_client.predictions.create(
        version=VERSION_ID, input={"prompt": "a hare", "image": first.output[0]}
    )
    finished = wait_until_finished(replicate_client, second.id)

    assert finished.status == "succeeded"
    assert decode_png(download(finished.output[0]).content).size == PHOTO_SIZE


def test_unreachable_image_url_fails_prediction(replicate_client):
    url = f"http://127.0.0.1:{free_port()}/photo.jpg"
    created = replicate_client.predictions.create(
        version=VERSION_ID, input={"prompt": "a fox", "image": url}
    )
    finished = wait_until_finished(replicate_client, created.id)

    assert finished.status == "failed"
    assert finished.error.startswith("Could not read the input image: ")
    assert finished.output is None


# Request validation


def test_missing_prompt_is_422(replicate_client, simulator, photo_url):
    with pytest.raises(ReplicateError) as raised:
        replicate_client.predictions.create(version=VERSION_ID, input={"image": photo_url})
    assert raised.value.status == 422
    assert raised.value.title == "Input validation failed"

    response = api_post(
        simulator, "/v1/predictions", {"version": VERSION_ID, "input": {"image": photo_url}}
    )
    assert response.json() == {
        "title": "Input validation failed",
        "detail": "- input: prompt is required\n",
        "status": 422,
        "invalid_fields": [
            {"type": "required", "field": "input", "description": "prompt is required"}
        ],
    }


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("prompt_strength", 1.5, "number_lte"),
        ("prompt_strength", -0.1, "number_gte"),
        ("num_outputs", 5, "number_lte"),
        ("num_outputs", 0, "number_gte"),
        ("num_inference_steps", 501, "number_lte"),
        ("guidance_scale", 0.5, "number_gte"),
        ("guidance_scale", 21, "number_lte"),
        ("num_outputs", 1.5, "invalid_type"),
        ("num_outputs", True, "invalid_type"),
        ("seed", "42", "invalid_type"),
        ("prompt", 3, "invalid_type"),
        ("scheduler", "EULER", "enum"),
    ],
)
def test_invalid_input_value_is_422(simulator, photo_url, name, value, kind):
    body = {"version": VERSION_ID, "input": {"prompt": "a fox", "image": photo_url, name: value}}
    response = api_post(simulator, "/v1/predictions", body)

    assert response.status_code == 422
    assert [(p["type"], p["field"]) for p in response.json()["invalid_fields"]] == [
        (kind, f"input.{name}")
    ]


@pytest.mark.parametrize(
    "image",
    [
        "not a url",
        "ftp://127.0.0.1/photo.jpg",
        data_url(b"these bytes are not an image"),
        "data:image/jpeg;base64,@@@",
    ],
)
def test_unreadable_image_is_422(simulator, image):
    body = {"version": VERSION_ID, "input": {"prompt": "a fox", "image": image}}
    response = api_post(simulator, "/v1/predictions", body)

    assert response.status_code == 422
    assert [p["field"] for p in response.json()["invalid_fields"]] == ["input.image"]


def test_request_field_problems_are_422(simulator, photo_url):
    body = {
        "version": VERSION_ID,
        "inptu": {},
        "webhook": "ftp://127.0.0.1/hook",
        "webhook_events_filter": ["start", "finished"],
    }
    response = api_post(simulator, "/v1/predictions", body)

    assert response.status_code == 422
    assert [(p["type"], p["field"]) for p in response.json()["invalid_fields"]] == [
        ("additional_property_not_allowed", ""),
        ("required", ""),
        ("format", "webhook"),
        ("enum", "webhook_events_filter.1"),
    ]


def test_unknown_version_is_422(simulator, photo_url):
    body = {"version": "0" * 64, "input": {"prompt": "a fox", "image": photo_url}}
    response = api_post(simulator, "/v1/predictions", body)

    assert response.status_code == 422
    assert response.json()["title"] == "Invalid version or not permitted"


def test_non_json_body_is_400(simulator):
    response = httpx.post(
        f"{simulator.url}/v1/predictions",
        content=b"[1, 2",
        headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
    )

    assert response.status_code == 400


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz"])
def test_missing_token_is_401(simulator, header):
    headers = {} if header is None else {"Authorization": header}
    response = httpx.get(f"{simulator.url}/v1/models/{MODEL}", headers=headers)

    assert response.status_code == 401
    assert response.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass an authentication token",
        "status": 401,
    }


def test_any_token_is_accepted(simulator):
    response = httpx.get(
        f"{simulator.url}/v1/models/{MODEL}", headers={"Authorization": "Token abc"}
    )

    assert response.status_code == 200


# Webhooks


def validate_webhook(headers, body, secret):
    replicate.webhooks.validate(
        headers=headers,
        body=body.decode("utf-8"),
        secret=WebhookSigningSecret(key=secret),
        tolerance=60,
    )


def test_webhooks_start_then_completed_are_signed(replicate_client, simulator, receiver, photo_url):
    secret = replicate_client.webhooks.default.secret().key
    created = replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a fox", "image": photo_url},
        webhook=receiver.url,
        webhook_events_filter=["start", "completed"],
    )
    deliveries = wait_for(
        lambda: len(receiver.received()) >= 2 and receiver.received(), message="2 webhooks"
    )
    bodies = [json.loads(body) for _, body in deliveries]

    assert len(deliveries) == 2
    assert [body["status"] for body in bodies] == ["starting", "succeeded"]
    assert [body["id"] for body in bodies] == [created.id, created.id]
    assert bodies[1]["output"] == [f"{simulator.url}/files/{created.id}/0.png"]
    assert bodies[1]["webhook_events_filter"] == ["start", "completed"]
    for headers, body in deliveries:
        validate_webhook(headers, body, secret)
        assert headers["Content-Type"] == "application/json"
        assert headers["Webhook-Id"].startswith("msg_")
    assert deliveries[0][0]["Webhook-Id"] != deliveries[1][0]["Webhook-Id"]


def test_webhook_with_tampered_body_fails_validation(replicate_client, receiver, photo_url):
    secret = replicate_client.webhooks.default.secret().key
    replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a fox", "image": photo_url},
        webhook=receiver.url,
        webhook_events_filter=["start"],
    )
    headers, body = wait_for(receiver.received, message="a webhook")[0]

    with pytest.raises(InvalidSignatureError):
        validate_webhook(headers, body.replace(b"starting", b"succeeded"), secret)


def test_completed_filter_sends_only_completed(replicate_client, receiver, photo_url):
    created = replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a fox", "image": photo_url},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )
    finished = wait_until_finished(replicate_client, created.id)
    deliveries = wait_for(receiver.received, message="the completed webhook")

    # The completed event is the last one a prediction queues, so nothing can follow it.
    assert len(deliveries) == 1
    assert finished.status == "succeeded"
    assert b'"status":"succeeded"' in deliveries[0][1]


def test_default_filter_sends_every_event(replicate_client, receiver, photo_url):
    created = replicate_client.predictions.create(
        version=VERSION_ID, input={"prompt": "a fox", "image": photo_url}, webhook=receiver.url
    )
    wait_until_finished(replicate_client, created.id)

    def completed_arrived():
        deliveries = receiver.received()
        return deliveries if deliveries and b'"status":"succeeded"' in deliveries[-1][1] else None

    deliveries = wait_for(completed_arrived, message="the completed webhook")
    statuses = [body.split(b'"status":"')[1].split(b'"')[0] for _, body in deliveries]

    assert statuses[0] == b"starting"
    assert b"processing" in statuses
    assert statuses[-2:] == [b"succeeded", b"succeeded"]


def test_webhook_retried_with_same_id(replicate_client, receiver, photo_url):
    secret = replicate_client.webhooks.default.secret().key
    receiver.planned_statuses = [503, 500]
    replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a fox", "image": photo_url},
        webhook=receiver.url,
        webhook_events_filter=["start"],
    )
    deliveries = wait_for(
        lambda: len(receiver.received()) >= 3 and receiver.received(), message="3 attempts"
    )

    assert len({headers["Webhook-Id"] for headers, _ in deliveries}) == 1
    for headers, body in deliveries:
        validate_webhook(headers, body, secret)


def test_closed_sender_stops_retrying(receiver):
    receiver.planned_statuses = [503] * 5
    sender = WebhookSender(WEBHOOK_SECRET, attempts=5, backoff=60.0, timeout=2.0)
    prediction = {
        "id": "abc123",
        "status": "starting",
        "webhook": receiver.url,
        "webhook_events_filter": ["start", "completed"],
    }
    sender.send(prediction, "start")
    wait_for(receiver.received, message="the first attempt")

    sender.close()
    sender.send({**prediction, "id": "def456"}, "start")
    threads = [thread.name for thread in threading.enumerate()]

    assert len(receiver.received()) == 1
    assert "webhooks-abc123" not in threads
    assert "webhooks-def456" not in threads


def test_webhook_completed_field_sends_only_completed(
    replicate_client, simulator, receiver, photo_url
):
    body = {
        "version": VERSION_ID,
        "input": {"prompt": "a fox", "image": photo_url},
        "webhook_completed": receiver.url,
    }
    created = api_post(simulator, "/v1/predictions", body).json()
    wait_until_finished(replicate_client, created["id"])
    deliveries = wait_for(receiver.received, message="the completed webhook")

    assert created["webhook_events_filter"] == ["completed"]
    assert len(deliveries) == 1
    assert b'"status":"succeeded"' in deliveries[0][1]


def test_cancel_sends_canceled_completed_webhook(slow_replicate_client, receiver, photo_url):
    created = slow_replicate_client.predictions.create(
        version=VERSION_ID,
        input={"prompt": "a fox", "image": photo_url},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )
    slow_replicate_client.predictions.cancel(created.id)
    deliveries = wait_for(receiver.received, message="the completed webhook")

    assert len(deliveries) == 1
    assert b'"status":"canceled"' in deliveries[0][1]


def test_secret_kept_in_instance_folder(tmp_path):
    first = create_simulator_app(FAST, instance_path=tmp_path)
    second = create_simulator_app(FAST, instance_path=tmp_path)
    key = first.extensions["replicate_simulator"].webhook_secret

    assert second.extensions["replicate_simulator"].webhook_secret == key
    assert key.startswith("whsec_")
    assert len(base64.b64decode(key.removeprefix("whsec_"))) == 32
    assert (tmp_path / SECRET_FILE).read_text().strip() == key
    assert stat.S_IMODE(os.stat(tmp_path / SECRET_FILE).st_mode) == 0o600


def test_secret_from_config_wins(tmp_path):
    key = "whsec_" + base64.b64encode(b"k" * 32).decode()
    app = create_simulator_app({**FAST, "SIMULATOR_WEBHOOK_SECRET": key}, instance_path=tmp_path)

    response = app.test_client().get(
        "/v1/webhooks/default/secret", headers={"Authorization": "Bearer x"}
    )
    assert response.get_json() == {"key": key}
    assert not (tmp_path / SECRET_FILE).exists()


def test_invalid_secret_in_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="SIMULATOR_WEBHOOK_SECRET"):
        create_simulator_app(
            {**FAST, "SIMULATOR_WEBHOOK_SECRET": "whsec_!!"}, instance_path=tmp_path
        )


# Generation


def test_generation_is_deterministic(photo):
    source = Image.open(io.BytesIO(photo)).convert("RGB")
    first = generate_image(source, "a watercolor fox", 42)

    assert generate_image(source, "a watercolor fox", 42) == first
    assert generate_image(source, "an oil painting of a fox", 42) != first
    assert generate_image(source, "a watercolor fox", 43) != first
    assert generate_image(source, "a watercolor fox", 42, negative_prompt="blur") != first


def test_generation_keeps_size_and_changes_pixels(photo):
    source = Image.open(io.BytesIO(photo)).convert("RGB")
    output = decode_png(generate_image(source, "a fox", 1, strength=0.0))

    assert output.size == source.size
    # Even with strength 0 the caption band changes the image.
    assert ImageChops.difference(source, output).getbbox() is not None


def test_generation_handles_long_prompt(photo):
    source = Image.open(io.BytesIO(photo)).convert("RGB")
    prompt = "a fox in a snowy forest at dawn, " * 300

    first = generate_image(source, prompt, 1)

    assert generate_image(source, prompt, 1) == first
    assert decode_png(first).size == source.size


def test_same_request_gives_identical_output_bytes(replicate_client, photo_url):
    outputs = []
    for prompt in ("a fox", "a fox", "a hare"):
        prediction = replicate_client.predictions.create(
            version=VERSION_ID, input={"prompt": prompt, "image": photo_url, "seed": 5}, wait=10
        )
        outputs.append(download(prediction.output[0]).content)

    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_progress_line_format():
    assert progress_line(0, 20, 0.0) == "  0%|          | 0/20 [00:00<?, ?it/s]"
    assert progress_line(3, 20, 0.5) == " 15%|█▌        | 3/20 [00:00<00:02,  6.00it/s]"
    assert progress_line(29, 100, 1.0) == " 29%|██▉       | 29/100 [00:01<00:02, 29.00it/s]"
    assert progress_line(1, 3, 5.0) == " 33%|███▎      | 1/3 [00:05<00:10,  5.00s/it]"
    assert progress_line(20, 20, 65.0) == "100%|██████████| 20/20 [01:05<00:00,  3.25s/it]"


# A real process


def test_serve_runs_in_its_own_process(tmp_path):
    port = free_port()
    code = (
        "from promptgen.simulator import serve; "
        f"serve(host='127.0.0.1', port={port}, delay=0.1, instance_path={str(tmp_path)!r})"
    )
    url = f"http://127.0.0.1:{port}"
    keys = []

    for name in ("first", "second"):
        process = Process(f"simulator-{name}", [sys.executable, "-c", code], {}, tmp_path)
        try:
            wait_for(lambda: is_serving(url), timeout=15, message=f"simulator on port {port}")
            with httpx.HTTPTransport() as transport:
                client = replicate.Client(
                    api_token="local-simulator", base_url=url, transport=transport
                )
                assert client.models.get(MODEL).latest_version.id == VERSION_ID
                keys.append(client.webhooks.default.secret().key)
        finally:
            process.stop()
        assert "Replicate simulator serving" in process.log(), process.log()

    assert keys[0] == keys[1]
    assert stat.S_IMODE(os.stat(tmp_path / SECRET_FILE).st_mode) == 0o600
