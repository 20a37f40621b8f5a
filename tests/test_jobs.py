"""The generate and store jobs against the simulator, with the app serving its webhook."""

import base64
import email.utils
import io
import socket
import time

import httpx
import pytest
from sqlalchemy.orm import selectinload
from PIL import Image, ImageChops
from werkzeug.wrappers import Response

from promptgen.downloads import (
    DownloadRejected,
    OutputExpired,
    pinned_request,
    check_output_url,
    download_output,
    is_public_address,
)
from promptgen.extensions import begin_immediate, db
from promptgen.jobs import generate_prediction, store_output
from promptgen.models import Prediction, Prompt
from promptgen.replicate_api import parse_retry_after
from promptgen.simulator import create_simulator_app
from promptgen.worker import Worker

from .conftest import (
    WEBHOOK_SECRET,
    add_prompt,
    create_prompt,
    csrf_token,
    edit_prompt,
    png_photo,
    queued_jobs,
)
from .support import FIXTURES, ServerThread, wait_for

MODEL = "stability-ai/stable-diffusion-img2img"


@pytest.fixture
def simulator(tmp_path):
    app = create_simulator_app(
        {"SIMULATOR_DELAY": 0.2, "SIMULATOR_WEBHOOK_SECRET": WEBHOOK_SECRET},
        instance_path=tmp_path / "simulator",
    )
    server = ServerThread(app)
    yield server
    server.stop()


@pytest.fixture
def served_app(app, simulator):
    """The app, served over HTTP so the simulator's webhooks reach it, pointed at the simulator."""
    server = ServerThread(app)
    app.config["PUBLIC_URL"] = server.url
    app.config["REPLICATE_BASE_URL"] = simulator.url
    yield app
    server.stop()


def remote_predictions(simulator):
    """Return the simulator's predictions as JSON, newest first."""
    response = httpx.get(simulator.url + "/v1/predictions", headers={"Authorization": "Bearer test"})
    return response.json()["results"]


def load(app, prediction_id):
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id, options=[selectinload(Prediction.images)])
        db.session.expunge_all()
        return prediction


def run(app, job, *args):
    with app.app_context():
        job(*args)


def test_generate_creates_one_remote_prediction(served_app, simulator):
    prediction_id = add_prompt(served_app)[2]

    run(served_app, generate_prediction, prediction_id)

    prediction = load(served_app, prediction_id)
    [remote] = remote_predictions(simulator)
    assert prediction.replicate_id == remote["id"]
    assert prediction.status in ("starting", "processing", "succeeded")
    assert remote["input"]["prompt"] == "someone else's prompt"
    assert remote["input"]["image"].startswith("data:image/jpeg;base64,/9j/")
    assert remote["webhook"].startswith(f"{served_app.config['PUBLIC_URL']}/replicate/webhook?token=")
    assert remote["webhook_events_filter"] == ["start", "logs", "completed"]
    assert remote["input"]["prompt_strength"] == 0.8
    assert remote["input"]["num_inference_steps"] == 25
    assert remote["input"]["scheduler"] == "DPMSolverMultistep"
    assert "seed" not in remote["input"]


def test_generate_sends_chosen_settings(served_app, simulator):
    prediction_id = add_prompt(served_app)[2]
    with served_app.app_context():
        db.session.get(Prediction, prediction_id).settings = {"seed": 99, "guidance_scale": 12.0}
        db.session.commit()

    run(served_app, generate_prediction, prediction_id)

    [remote] = remote_predictions(simulator)
    assert remote["input"]["seed"] == 99
    assert remote["input"]["guidance_scale"] == 12.0


def sent_image(remote):
    """Return the bytes of the image that a remote prediction was sent as a data URL."""
    return base64.b64decode(remote["input"]["image"].split(",", 1)[1])


def prompt_photo(app, prompt_id):
    with app.app_context():
        return db.session.get(Prompt, prompt_id).image


def work_until(app, condition, message):
    """Run ready jobs in bursts, as the worker command does, until condition() is true."""

    def done():
        token = begin_immediate.set(True)
        try:
            Worker(app).work(burst=True)
        finally:
            begin_immediate.reset(token)
        return condition()

    return wait_for(done, timeout=20, message=message)


@pytest.fixture
def edited_after_generate(served_app, client, accounts, photo_bytes):
    """Create a prompt, which queues its first prediction, and edit it before any job runs.

    Returns the prompt's URL, the prediction id, and the photo before and after the edit.
    """
    accounts.signup()
    location = create_prompt(client, photo_bytes, title="a watercolor portrait").headers["Location"]
    prompt_id = int(location.rsplit("/", 1)[1])
    with served_app.app_context():
        prediction_id = db.session.scalar(db.select(Prediction.id))
    original_photo = prompt_photo(served_app, prompt_id)

    edit_prompt(client, location, "an oil painting", png_photo())

    return location, prediction_id, original_photo, prompt_photo(served_app, prompt_id)


def test_edit_after_generate_sends_original_input(served_app, simulator, client, edited_after_generate):
    location, prediction_id, original_photo, edited_photo = edited_after_generate

    work_until(served_app, lambda: load(served_app, prediction_id).is_final, "stored image")

    [remote] = remote_predictions(simulator)
    sent = sent_image(remote)
    card = client.get(f"{location}/predictions/{prediction_id}").get_data(as_text=True)
    assert remote["input"]["prompt"] == "a watercolor portrait"
    assert sent == original_photo
    assert sent != edited_photo
    assert Image.open(io.BytesIO(sent)).size == (512, 512)
    assert load(served_app, prediction_id).status == "succeeded"
    assert "Prompt used: “a watercolor portrait”" in card
    assert "of “a watercolor portrait”" in card


def test_generate_after_edit_sends_new_input(served_app, simulator, client, edited_after_generate):
    location, first_id, original_photo, edited_photo = edited_after_generate

    client.post(location + "/predictions", data={"csrf_token": csrf_token(client, location)})
    with served_app.app_context():
        second_id = db.session.scalar(db.select(db.func.max(Prediction.id)))
    work_until(
        served_app,
        lambda: load(served_app, first_id).is_final and load(served_app, second_id).is_final,
        "both stored images",
    )

    newest, oldest = remote_predictions(simulator)
    second_card = client.get(f"{location}/predictions/{second_id}").get_data(as_text=True)
    assert second_id == first_id + 1
    assert newest["input"]["prompt"] == "an oil painting"
    assert sent_image(newest) == edited_photo
    assert Image.open(io.BytesIO(sent_image(newest))).size == (320, 240)
    assert oldest["input"]["prompt"] == "a watercolor portrait"
    assert sent_image(oldest) == original_photo
    assert "Prompt used:" not in second_card
    assert "of “an oil painting”" in second_card


def test_old_row_sends_current_prompt(served_app, simulator):
    prompt_id, prediction_id = add_prompt(served_app)[1:]
    edited_photo = png_photo()
    with served_app.app_context():
        prompt = db.session.get(Prompt, prompt_id)
        prompt.title = "an oil painting"
        prompt.image = edited_photo
        prompt.image_mime = "image/png"
        db.session.commit()

    run(served_app, generate_prediction, prediction_id)

    [remote] = remote_predictions(simulator)
    assert remote["input"]["prompt"] == "an oil painting"
    assert remote["input"]["image"].startswith("data:image/png;base64,")
    assert sent_image(remote) == edited_photo


def test_generate_again_sends_nothing(served_app, simulator):
    prediction_id = add_prompt(served_app)[2]
    run(served_app, generate_prediction, prediction_id)

    run(served_app, generate_prediction, prediction_id)
    run(served_app, generate_prediction, prediction_id)

    assert len(remote_predictions(simulator)) == 1


def test_generate_for_deleted_prediction_sends_nothing(served_app, simulator):
    prediction_id = add_prompt(served_app)[2]
    with served_app.app_context():
        db.session.delete(db.session.get(Prediction, prediction_id))
        db.session.commit()

    run(served_app, generate_prediction, prediction_id)

    assert remote_predictions(simulator) == []


def test_generate_unknown_model_fails_with_api_message(served_app, simulator):
    served_app.config["REPLICATE_MODEL"] = "nobody/no-such-model"
    prediction_id = add_prompt(served_app)[2]

    run(served_app, generate_prediction, prediction_id)

    prediction = load(served_app, prediction_id)
    assert prediction.status == "failed"
    assert prediction.error.startswith("Replicate rejected the request: ")
    assert "not found" in prediction.error.lower()
    assert remote_predictions(simulator) == []


def test_webhooks_and_store_job_fill_the_row(served_app, simulator):
    prediction_id = add_prompt(served_app)[2]
    run(served_app, generate_prediction, prediction_id)

    # The webhook view enqueues the store job right after it commits the new status.
    jobs = wait_for(lambda: queued_jobs(served_app), timeout=20, message="the store job")
    assert load(served_app, prediction_id).status == "succeeded"
    assert jobs == [("promptgen.jobs:store_output", f"[{prediction_id}]")]
    Worker(served_app).work(burst=True)

    prediction = load(served_app, prediction_id)
    [stored] = prediction.images
    image = Image.open(io.BytesIO(stored.data))
    original = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")
    assert stored.mime == "image/png"
    assert Image.open(io.BytesIO(stored.preview)).format == "JPEG"
    assert prediction.error is None
    assert prediction.is_final
    assert image.size == (512, 512)
    assert ImageChops.difference(image.convert("RGB"), original).getbbox() is not None


def test_store_skips_row_with_image(served_app, simulator):
    prediction_id = add_prompt(served_app)[2]
    run(served_app, generate_prediction, prediction_id)
    wait_for(lambda: load(served_app, prediction_id).status == "succeeded", timeout=20, message="completed webhook")
    run(served_app, store_output, prediction_id)
    stored = load(served_app, prediction_id).images[0].data
    with served_app.app_context():
        db.session.get(Prediction, prediction_id).output_urls = ["https://example.org/other.png"]
        db.session.commit()

    run(served_app, store_output, prediction_id)

    prediction = load(served_app, prediction_id)
    assert [image.data for image in prediction.images] == [stored]
    assert prediction.error is None


def succeeded_row(app, output_url):
    prediction_id = add_prompt(app)[2]
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        prediction.status = "succeeded"
        prediction.replicate_id = "r8test"
        prediction.output_urls = [output_url]
        db.session.commit()
    return prediction_id


def test_store_rejects_foreign_host(app):
    prediction_id = succeeded_row(app, "https://example.org/cat.png")

    run(app, store_output, prediction_id)

    prediction = load(app, prediction_id)
    assert prediction.status == "succeeded"
    assert prediction.images == []
    assert prediction.error == (
        "The output could not be stored: output URL 'https://example.org/cat.png' is not on an"
        " allowed Replicate host"
    )
    assert prediction.is_final


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://replicate.delivery/pbxt/a/out-0.png", True),
        ("https://pbxt.replicate.delivery/a/out-0.png", True),
        ("https://REPLICATE.delivery/a.png", True),
        ("http://replicate.delivery/a.png", False),
        ("https://replicate.delivery:8443/a.png", False),
        ("https://replicate.delivery.example.com/a.png", False),
        ("https://evilreplicate.delivery/a.png", False),
        ("https://user:pw@replicate.delivery/a.png", False),
        ("file:///etc/passwd", False),
        ("http://127.0.0.1:5001/files/x/0.png", True),
        ("http://127.0.0.1:5002/files/x/0.png", False),
        ("https://127.0.0.1:5001/files/x/0.png", False),
    ],
)
def test_check_output_url_in_local_mode(app, url, allowed):
    app.config["REPLICATE_BASE_URL"] = "http://127.0.0.1:5001"

    if allowed:
        check_output_url(url, app.config)
    else:
        with pytest.raises(DownloadRejected):
            check_output_url(url, app.config)


def test_check_output_url_with_token_refuses_simulator(app):
    app.config.update(REPLICATE_LOCAL=False, REPLICATE_BASE_URL="https://api.replicate.com")

    with pytest.raises(DownloadRejected):
        check_output_url("http://127.0.0.1:5001/files/x/0.png", app.config)


@pytest.fixture
def file_server():
    """Serve canned responses from 127.0.0.1; set .response before each request."""
    holder = type("Holder", (), {"response": Response("")})()
    server = ServerThread(lambda environ, start_response: holder.response(environ, start_response))
    holder.url = server.url
    yield holder
    server.stop()


def local_config(app, file_server, **overrides):
    app.config["REPLICATE_BASE_URL"] = file_server.url
    return {**app.config, **overrides}


def test_download_accepts_png(app, file_server):
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    file_server.response = Response(png.getvalue(), mimetype="image/png")

    data, mime = download_output(file_server.url + "/a.png", local_config(app, file_server))

    assert data == png.getvalue()
    assert mime == "image/png"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (Response("<html>hi</html>", mimetype="text/html"), "output is not a usable image"),
        (Response("gone", status=404), "returned HTTP 404"),
        (Response("", status=302, headers={"Location": "http://169.254.169.254/"}), "returned HTTP 302"),
        (Response(b"\x89PNG" + b"\x00" * 2000, mimetype="image/png"), "over the 1000-byte limit"),
    ],
)
def test_download_rejects(app, file_server, response, message):
    file_server.response = response

    with pytest.raises(DownloadRejected) as error:
        download_output(file_server.url + "/a.png", local_config(app, file_server, OUTPUT_MAX_BYTES=1000))

    assert message in str(error.value)


def test_download_rejects_stream_without_length(app, file_server):
    def chunks():
        for _ in range(10):
            yield b"\x00" * 500

    file_server.response = Response(chunks(), mimetype="image/png", direct_passthrough=True)

    with pytest.raises(DownloadRejected) as error:
        download_output(file_server.url + "/a.png", local_config(app, file_server, OUTPUT_MAX_BYTES=1000))

    assert str(error.value) == "the file is over the 1000-byte limit"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700::6810:85e5", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_is_public_address(address, public):
    assert is_public_address(address) is public


def test_download_rejects_host_with_private_address(app, monkeypatch):
    app.config.update(REPLICATE_LOCAL=False, REPLICATE_OUTPUT_HOSTS=("replicate.delivery",))
    resolved = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        resolved.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    def no_connection(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", no_connection)

    with pytest.raises(DownloadRejected) as error:
        download_output("https://pbxt.replicate.delivery/a/out-0.png", app.config)

    assert str(error.value) == "'pbxt.replicate.delivery' resolves to the non-public address 10.0.0.7"
    assert resolved == [("pbxt.replicate.delivery", 443)]


def test_download_rejects_loopback_host(app, monkeypatch):
    app.config.update(REPLICATE_LOCAL=False, REPLICATE_OUTPUT_HOSTS=("localhost",))
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", lambda *args, **kwargs: pytest.fail("connected"))

    with pytest.raises(DownloadRejected) as error:
        download_output("https://localhost/out-0.png", app.config)

    assert "resolves to the non-public address" in str(error.value)


def test_pinned_request_keeps_host_name(monkeypatch):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *args, **kwargs: [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1", port, 0, 0))],
    )

    url, headers, extensions = pinned_request("https://replicate.delivery/pbxt/a.png?sig=1")

    assert url == "https://[2606:4700::1]/pbxt/a.png?sig=1"
    assert headers == {"Host": "replicate.delivery"}
    assert extensions == {"sni_hostname": "replicate.delivery"}


def test_download_expired_output(app, file_server):
    file_server.response = Response("gone", status=410)

    with pytest.raises(OutputExpired):
        download_output(file_server.url + "/a.png", local_config(app, file_server))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("", None), (None, None), ("soon", None), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
)
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date():
    moment = email.utils.formatdate(time.time() + 30, usegmt=True)

    assert 25 <= parse_retry_after(moment) <= 31
