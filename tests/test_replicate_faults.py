"""Replicate as it really behaves, through the real HTTP server and the simulator's faults."""

import base64
import io
import logging
import re
import time
from datetime import timedelta

import pytest
from itsdangerous import URLSafeSerializer
from PIL import Image

from promptgen import jobs
from promptgen.extensions import db
from promptgen.models import Prediction, Prompt, utcnow
from promptgen.simulator.__main__ import parse_arguments
from promptgen.simulator.signing import sign

from .conftest import WEBHOOK_SECRET, add_prompt, png_photo, queued_jobs
from .replicate_stack import Stack, csrf_token


@pytest.fixture
def make_stack(app, tmp_path):
    stacks = []

    def make(simulator_settings=None, **faults):
        stack = Stack(app, tmp_path, simulator_settings, faults)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def stack(make_stack):
    return make_stack()


def generate(stack):
    """Add a prompt with a queued prediction, queue its generate job, and return the row id."""
    prediction_id = add_prompt(stack.app)[2]
    stack.start(prediction_id)
    return prediction_id


def store_jobs(app, prediction_id):
    return [job for job in queued_jobs(app) if job == ("promptgen.jobs:store_output", f"[{prediction_id}]")]


# 1. State machine and delivery records


def test_deliveries_recorded_with_events(stack):
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")

    prediction = stack.load(prediction_id)
    deliveries = stack.deliveries(prediction_id)
    assert prediction.status == "succeeded"
    assert len(prediction.images) == 1
    assert [(event, status) for _, event, status in deliveries] == [("start", "starting"), ("completed", "succeeded")]
    assert len({webhook_id for webhook_id, _, _ in deliveries}) == 2
    assert stack.counts()[:2] == (1, 1)

    page = stack.browser().get(f"/prompts/{prediction.prompt_id}/predictions/{prediction_id}").text
    assert "Webhook deliveries (2)" in page
    assert "completed · succeeded" in page


# 2. Duplicates and order


def test_same_delivery_three_times_at_once(make_stack):
    stack = make_stack(duplicate_webhooks=3)
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")
    stats = stack.stats()

    assert stats["creates"] == 1
    assert stats["webhook_requests"] == 6
    assert [event for _, event, _ in stack.deliveries(prediction_id)] == ["start", "completed"]
    assert stack.counts() == (1, 1, {prediction_id: "succeeded"})
    assert len(store_jobs(stack.app, prediction_id)) == 1


def test_completed_before_start(make_stack):
    stack = make_stack(reorder_webhooks=True)
    prediction_id = generate(stack)

    stack.work_until(lambda: len(stack.deliveries(prediction_id)) == 2 and stack.is_final(prediction_id), message="both events")

    prediction = stack.load(prediction_id)
    assert [event for _, event, _ in stack.deliveries(prediction_id)] == ["completed", "start"]
    assert prediction.status == "succeeded"
    assert prediction.started_at is not None
    assert stack.counts()[:2] == (1, 1)
    assert stack.stats()["creates"] == 1


def test_late_processing_and_resent_completed(stack):
    prediction_id = generate(stack)
    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")
    stored = stack.load(prediction_id)
    [remote] = stack.remote_predictions()
    token = stack.token(prediction_id)
    completed_id = stack.deliveries(prediction_id)[-1][0]

    late = stack.post_webhook({**remote, "status": "processing", "output": None}, "msg_late", token)
    resent = stack.post_webhook(remote, completed_id, token)
    new_completed = stack.post_webhook(remote, "msg_completed_again", token)
    stack.work_until(lambda: True)

    prediction = stack.load(prediction_id)
    assert late.json() == {"result": "accepted"}
    assert resent.json() == {"result": "duplicate"}
    assert new_completed.json() == {"result": "accepted"}
    assert prediction.status == "succeeded"
    assert [image.data for image in prediction.images] == [image.data for image in stored.images]
    assert prediction.completed_at == stored.completed_at
    assert len(stack.deliveries(prediction_id)) == 4
    assert len(store_jobs(stack.app, prediction_id)) == 1
    assert stack.counts()[:2] == (1, 1)


def test_completed_before_create_returns(make_stack):
    # The prediction finishes and its webhooks arrive while the create response is held.
    stack = make_stack(stall_creates=1, create_stall=1.5)
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")

    prediction = stack.load(prediction_id)
    [remote] = stack.remote_predictions()
    assert prediction.replicate_id == remote["id"]
    assert prediction.status == "succeeded"
    assert prediction.create_attempts == 1
    assert stack.stats()["creates"] == 1
    assert stack.counts()[:2] == (1, 1)


# 3. Forged and replayed webhooks


def forged_cases(stack, prediction_id, other_id):
    body = {"id": "r8forged", "status": "succeeded", "output": ["https://replicate.delivery/x.png"]}
    token = stack.token(prediction_id)
    signed = stack.post_webhook
    now = int(time.time())
    wrong_salt = URLSafeSerializer("test secret key", salt="another-purpose").dumps({"prediction": prediction_id})
    return {
        "bad signature": (lambda: signed(body, "msg_f1", token, secret="whsec_" + "A" * 43 + "="), 401),
        "missing headers": (lambda: signed(body, "msg_f2", token, headers={}), 401),
        "signature for another body": (lambda: stack.post_webhook(body, "msg_f3", token, headers=other_body_headers(body)), 401),
        "old timestamp": (lambda: signed(body, "msg_f4", token, timestamp=now - 310), 401),
        "future timestamp": (lambda: signed(body, "msg_f5", token, timestamp=now + 310), 401),
        "wrong salt": (lambda: signed(body, "msg_f6", wrong_salt), 403),
        "no token": (lambda: signed(body, "msg_f7", ""), 403),
        "token for another prediction": (lambda: signed(body, "msg_f8", stack.token(other_id)), 409),
    }


def other_body_headers(body):
    """Return headers with a valid signature of a body other than body."""
    timestamp = str(int(time.time()))
    other = b'{"id": "r8forged", "status": "failed"}'
    return {"webhook-id": "msg_f3", "webhook-timestamp": timestamp, "webhook-signature": sign(WEBHOOK_SECRET, "msg_f3", timestamp, other)}


def test_forged_webhooks_rejected(stack, caplog):
    prediction_id = add_prompt(stack.app)[2]
    other_id = add_prompt(stack.app)[2]
    with stack.app.app_context():
        db.session.get(Prediction, other_id).replicate_id = "r8other"
        db.session.commit()
    caplog.set_level(logging.WARNING, logger="promptgen.webhooks")

    for name, (send, status) in forged_cases(stack, prediction_id, other_id).items():
        response = send()
        assert response.status_code == status, name

    assert stack.deliveries() == []
    assert stack.counts() == (2, 0, {prediction_id: "queued", other_id: "queued"})
    rejected = [record.getMessage() for record in caplog.records if "rejected" in record.getMessage()]
    assert len(rejected) == 7
    assert any("msg_f1" in line for line in rejected)
    assert any(f"r8forged but prediction {other_id} is r8other" in record.getMessage() for record in caplog.records)


def test_webhook_for_deleted_prediction_ignored(stack):
    prediction_id = add_prompt(stack.app)[2]
    token = stack.token(prediction_id)
    with stack.app.app_context():
        db.session.delete(db.session.get(Prediction, prediction_id))
        db.session.commit()

    response = stack.post_webhook({"id": "r8gone", "status": "succeeded", "output": ["x"]}, "msg_gone", token)

    assert response.status_code == 200
    assert response.json() == {"result": "prediction deleted"}
    assert stack.deliveries() == []
    assert stack.counts()[0] == 0
    assert queued_jobs(stack.app) == []


def test_unsigned_simulator_webhooks_rejected(make_stack):
    stack = make_stack(unsigned_webhooks=True)
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.stats().get("webhook_requests", 0) == 2, message="two webhook attempts")
    stack.work_until(lambda: stack.remote_predictions()[0]["status"] == "succeeded", message="remote run")

    assert stack.deliveries() == []
    assert stack.load(prediction_id).status == "starting"


# 4. Creates that fail


def test_throttled_create_waits_for_retry_after(make_stack):
    stack = make_stack(throttle_creates=2, retry_after=1)
    prediction_id = generate(stack)
    started = time.monotonic()

    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")
    elapsed = time.monotonic() - started
    stats = stack.stats()

    assert elapsed >= 2.0
    assert stats["create_requests"] == 3
    assert stats["creates_throttled"] == 2
    assert stats["creates"] == 1
    assert stack.load(prediction_id).create_attempts == 3
    assert stack.counts() == (1, 1, {prediction_id: "succeeded"})


def test_server_errors_on_create_retried(make_stack):
    stack = make_stack(fail_creates=2)
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")
    stats = stack.stats()

    assert stats["create_requests"] == 3
    assert stats["creates_failed"] == 2
    assert stats["creates"] == 1
    assert stack.counts() == (1, 1, {prediction_id: "succeeded"})


def test_create_gives_up_after_max_attempts(make_stack):
    stack = make_stack(fail_creates=10)
    stack.app.config["CREATE_MAX_ATTEMPTS"] = 3
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="failed row")

    prediction = stack.load(prediction_id)
    assert prediction.status == "failed"
    assert prediction.error == (
        "Replicate could not be reached after 3 attempts "
        "(HTTP 503: The simulator is failing creates on purpose.)."
    )
    assert stack.stats()["create_requests"] == 3
    assert stack.stats().get("creates", 0) == 0


@pytest.mark.parametrize("webhooks", ["on", "off"])
def test_lost_create_response_found_by_listing(make_stack, webhooks):
    # The first create reaches the simulator but its response never arrives in time, and
    # the webhooks are lost too, so only the listing can tell the retry what happened. It
    # matches by webhook URL, or by input when webhooks are off.
    stack = make_stack(stall_creates=1, create_stall=3.0, drop_webhooks=True)
    stack.app.config.update(REPLICATE_TIMEOUT=0.5, REPLICATE_WEBHOOKS=webhooks)
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.load(prediction_id).replicate_id, message="adopted prediction")
    stack.work_until(lambda: stack.remote_predictions()[0]["status"] == "succeeded", message="remote run")
    stack.run_job(jobs.reconcile_predictions)
    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")
    stats = stack.stats()

    [remote] = stack.remote_predictions()
    prediction = stack.load(prediction_id)
    assert stats["creates"] == 1
    assert stats["lists"] >= 1
    assert prediction.replicate_id == remote["id"]
    assert prediction.create_attempts == 2
    assert stack.counts() == (1, 1, {prediction_id: "succeeded"})


def add_prediction_with_input(app):
    """Add a prompt and a queued row with a copy of its input, as Generate does, but no job.

    Returns the ids of the prompt and the row.
    """
    _, prompt_id, unused_id = add_prompt(app)
    with app.app_context():
        db.session.delete(db.session.get(Prediction, unused_id))
        prediction = Prediction.for_prompt(db.session.get(Prompt, prompt_id), {})
        db.session.add(prediction)
        db.session.commit()
        return prompt_id, prediction.id


def edit_prompt_in_database(app, prompt_id, title, photo):
    with app.app_context():
        prompt = db.session.get(Prompt, prompt_id)
        prompt.title = title
        prompt.image = photo
        prompt.image_mime = "image/png"
        db.session.commit()


def sent_image(remote):
    return base64.b64decode(remote["input"]["image"].split(",", 1)[1])


def test_retry_after_edit_finds_lost_create(make_stack, photo_bytes):
    # With webhooks off the retry can only match the lost create by its input, so an edit
    # between the two attempts must not change what the retry compares.
    stack = make_stack(stall_creates=1, create_stall=3.0)
    stack.app.config.update(REPLICATE_TIMEOUT=0.5, REPLICATE_WEBHOOKS="off")
    prompt_id, prediction_id = add_prediction_with_input(stack.app)

    stack.run_job(jobs.generate_prediction, prediction_id)
    edit_prompt_in_database(stack.app, prompt_id, "an oil painting", png_photo())
    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")

    [remote] = stack.remote_predictions()
    prediction = stack.load(prediction_id)
    assert stack.stats()["creates"] == 1
    assert prediction.create_attempts == 2
    assert prediction.replicate_id == remote["id"]
    assert prediction.status == "succeeded"
    assert remote["input"]["prompt"] == "someone else's prompt"
    assert sent_image(remote) == photo_bytes


def test_reconcile_sends_original_input(stack, photo_bytes):
    prompt_id, prediction_id = add_prediction_with_input(stack.app)
    edit_prompt_in_database(stack.app, prompt_id, "an oil painting", png_photo())
    # Age the row past RETRY_MAX_SECONDS, as if its generate job had been lost.
    with stack.app.app_context():
        stale = utcnow() - timedelta(seconds=stack.app.config["RETRY_MAX_SECONDS"] + 60)
        db.session.execute(db.update(Prediction).where(Prediction.id == prediction_id).values(updated_at=stale))
        db.session.commit()

    checked = stack.run_job(jobs.reconcile_predictions)
    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")

    [remote] = stack.remote_predictions()
    card = stack.browser().get(f"/prompts/{prompt_id}/predictions/{prediction_id}").text
    assert checked == 1
    assert remote["input"]["prompt"] == "someone else's prompt"
    assert sent_image(remote) == photo_bytes
    assert stack.load(prediction_id).status == "succeeded"
    assert "Prompt used: “someone else&#39;s prompt”" in card


def test_invalid_input_fails_with_api_message(stack):
    prompt_id, prediction_id = add_prompt(stack.app)[1:]
    with stack.app.app_context():
        db.session.get(Prompt, prompt_id).image = b"not an image"
        db.session.commit()
    stack.start(prediction_id)

    stack.work_until(lambda: stack.is_final(prediction_id), message="failed row")

    prediction = stack.load(prediction_id)
    page = stack.browser().get(f"/prompts/{prompt_id}").text
    assert prediction.status == "failed"
    assert prediction.error.startswith("Replicate rejected the request: ")
    assert "image" in prediction.error
    assert prediction.create_attempts == 1
    assert stack.stats()["create_requests"] == 1
    assert stack.stats().get("creates", 0) == 0
    assert "Failed: Replicate rejected the request" in page


# 5. Missed webhooks


def test_reconcile_applies_missed_webhooks(make_stack):
    stack = make_stack(drop_webhooks=True)
    prediction_id = generate(stack)
    stack.work_until(lambda: stack.load(prediction_id).replicate_id, message="created prediction")
    stack.work_until(lambda: stack.remote_predictions()[0]["status"] == "succeeded", message="remote run")

    checked = stack.run_job(jobs.reconcile_predictions)
    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")

    assert checked == 1
    assert stack.stats()["gets"] >= 1
    assert stack.stats()["webhooks_dropped"] == 2
    assert stack.deliveries() == []
    assert stack.counts() == (1, 1, {prediction_id: "succeeded"})


def test_reconcile_skips_recent_rows(stack):
    stack.app.config["RECONCILE_AFTER"] = 3600
    add_prompt(stack.app, status="starting")

    assert stack.run_job(jobs.reconcile_predictions) == 0
    assert stack.stats().get("gets", 0) == 0


def test_webhooks_off_polls_until_done(stack):
    stack.app.config["REPLICATE_WEBHOOKS"] = "off"
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")

    [remote] = stack.remote_predictions()
    assert remote["webhook"] is None
    assert stack.stats().get("webhook_requests", 0) == 0
    assert stack.stats()["gets"] >= 1
    assert stack.deliveries() == []
    assert stack.counts() == (1, 1, {prediction_id: "succeeded"})


# 6. Outputs


def test_expired_output_offers_generate_again(make_stack):
    stack = make_stack(expire_outputs=True)
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="final row")

    prediction = stack.load(prediction_id)
    card = stack.browser().get(f"/prompts/{prediction.prompt_id}/predictions/{prediction_id}").text
    assert prediction.status == "succeeded"
    assert prediction.output_expired
    assert prediction.images == []
    assert "Output expired." in card
    assert f'action="/prompts/{prediction.prompt_id}/predictions"' in card
    assert "hx-get" not in card
    assert stack.remote_predictions()[0]["data_removed"] is True


def test_slow_output_fails_after_attempts(make_stack):
    stack = make_stack(output_delay=2.0)
    stack.app.config.update(OUTPUT_TIMEOUT=0.3, DOWNLOAD_MAX_ATTEMPTS=2)
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="final row")

    prediction = stack.load(prediction_id)
    assert prediction.error.startswith("The output download failed after 2 attempts (ReadTimeout")
    assert prediction.images == []
    assert prediction.download_attempts == 2
    assert stack.stats()["file_requests"] == 2


def fail_downloads(make_stack, num_outputs):
    """Run a prediction whose downloads time out until the store job gives up; return its row."""
    stack = make_stack(output_delay=2.0)
    stack.app.config.update(OUTPUT_TIMEOUT=0.3, DOWNLOAD_MAX_ATTEMPTS=2)
    prediction_id = add_prompt(stack.app)[2]
    with stack.app.app_context():
        db.session.get(Prediction, prediction_id).settings = {"num_outputs": num_outputs}
        db.session.commit()
    stack.start(prediction_id)
    stack.work_until(lambda: stack.is_final(prediction_id), message="given-up download")
    return stack, stack.load(prediction_id)


def retry_download_form(page):
    return re.search(r'action="(/prompts/\d+/predictions/\d+/retry-download)"', page).group(1)


def test_retry_download_without_new_run(make_stack):
    stack, failed = fail_downloads(make_stack, num_outputs=2)
    prompt_id, prediction_id = failed.prompt_id, failed.id
    card_url = f"/prompts/{prompt_id}/predictions/{prediction_id}"
    browser = stack.browser()
    failed_card = browser.get(card_url).text
    token = csrf_token(browser, f"/prompts/{prompt_id}")
    store_jobs_before = len(store_jobs(stack.app, prediction_id))
    file_requests_before = stack.stats()["file_requests"]

    stack.set_faults(output_delay=0.0)
    first = browser.post(retry_download_form(failed_card), data={"csrf_token": token})
    second = browser.post(retry_download_form(failed_card), data={"csrf_token": token})
    stack.work_until(lambda: stack.is_final(prediction_id), message="stored images")

    prediction = stack.load(prediction_id)
    final_card = browser.get(card_url).text
    assert failed.error == "The output download failed after 2 attempts (ReadTimeout: timed out)."
    assert "Retry download" in failed_card
    assert first.status_code == 302
    assert first.headers["location"] == f"/prompts/{prompt_id}"
    assert second.status_code == 409
    assert f"The images of variation {prediction_id} are already being downloaded." in second.text
    assert store_jobs_before == 2
    assert len(store_jobs(stack.app, prediction_id)) == 3
    assert file_requests_before == 2
    assert stack.stats()["file_requests"] == 4
    assert stack.stats()["creates"] == 1
    assert prediction.status == "succeeded"
    assert prediction.error is None
    assert prediction.download_attempts == 1
    assert [image.position for image in prediction.images] == [0, 1]
    assert [Image.open(io.BytesIO(image.data)).size for image in prediction.images] == [(512, 512), (512, 512)]
    assert "Retry download" not in final_card
    assert final_card.count(">Download</a>") == 2


def test_retry_download_finds_output_expired(make_stack):
    stack, failed = fail_downloads(make_stack, num_outputs=1)
    prompt_id, prediction_id = failed.prompt_id, failed.id
    card_url = f"/prompts/{prompt_id}/predictions/{prediction_id}"
    browser = stack.browser()
    failed_card = browser.get(card_url).text
    token = csrf_token(browser, f"/prompts/{prompt_id}")

    stack.set_faults(output_delay=0.0)
    stack.remove_output_files(failed.replicate_id)
    response = browser.post(retry_download_form(failed_card), data={"csrf_token": token})
    stack.work_until(lambda: stack.is_final(prediction_id), message="expired output")

    prediction = stack.load(prediction_id)
    final_card = browser.get(card_url).text
    assert response.status_code == 302
    assert prediction.status == "succeeded"
    assert prediction.output_expired is True
    assert prediction.error == "The output expired before it could be stored."
    assert prediction.images == []
    assert stack.stats()["creates"] == 1
    assert "Output expired." in final_card
    assert "Retry download" not in final_card


def test_output_over_pixel_limit_rejected(stack):
    stack.app.config["OUTPUT_MAX_PIXELS"] = 512 * 511
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="final row")

    prediction = stack.load(prediction_id)
    assert prediction.error == (
        "The output could not be stored: the image is 512x512 pixels, over the 261632-pixel limit"
    )
    assert prediction.images == []


# 7. Cancel


def cancel_form(page):
    return re.search(r'action="(/prompts/\d+/predictions/\d+/cancel)"', page).group(1)


def test_cancel_from_card(make_stack):
    stack = make_stack({"SIMULATOR_DELAY": 30.0})
    prediction_id = generate(stack)
    stack.work_until(lambda: stack.load(prediction_id).status == "starting", message="created prediction")
    prompt_id = stack.load(prediction_id).prompt_id
    browser = stack.browser()

    card = browser.get(f"/prompts/{prompt_id}/predictions/{prediction_id}").text
    response = browser.post(cancel_form(card), data={"csrf_token": csrf_token(browser, f"/prompts/{prompt_id}")})
    stack.work_until(lambda: stack.remote_predictions()[0]["status"] == "canceled", message="remote cancel")
    stack.work_until(lambda: len(stack.deliveries(prediction_id)) == 2, message="canceled webhook")

    final_card = browser.get(f"/prompts/{prompt_id}/predictions/{prediction_id}").text
    assert response.status_code == 302
    assert response.headers["location"] == f"/prompts/{prompt_id}"
    assert stack.stats()["cancels"] == 1
    assert stack.counts() == (1, 0, {prediction_id: "canceled"})
    assert [status for _, _, status in stack.deliveries(prediction_id)] == ["starting", "canceled"]
    assert "Canceled." in final_card
    assert "hx-get" not in final_card
    assert "/cancel" not in final_card


def test_delete_cancels_pending_upstream(make_stack):
    stack = make_stack({"SIMULATOR_DELAY": 30.0})
    prediction_id = generate(stack)
    stack.work_until(lambda: stack.load(prediction_id).status == "starting", message="created prediction")
    prompt_id = stack.load(prediction_id).prompt_id
    browser = stack.browser()

    response = browser.post(f"/prompts/{prompt_id}/delete", data={"csrf_token": csrf_token(browser, f"/prompts/{prompt_id}")})
    stack.work_until(lambda: stack.remote_predictions()[0]["status"] == "canceled", message="remote cancel")
    stack.work_until(lambda: stack.stats().get("webhook_requests", 0) == 2, message="canceled webhook")

    assert response.status_code == 302
    assert stack.stats()["cancels"] == 1
    assert stack.counts() == (0, 0, {})
    assert stack.deliveries() == []


# 8. Simulator switches


def test_fault_switches_validated(stack):
    response = stack.api.post("/_simulator/faults", json={"no_such_switch": 1})
    wrong_type = stack.api.post("/_simulator/faults", json={"drop_webhooks": "yes"})
    changed = stack.set_faults(throttle_creates=2, output_delay=0.5)

    assert response.status_code == 400
    assert "no_such_switch" in response.json()["detail"]
    assert wrong_type.status_code == 400
    assert changed["throttle_creates"] == 2
    assert changed["output_delay"] == 0.5
    assert changed["duplicate_webhooks"] == 1


def test_command_line_flags_set_switches():
    arguments = parse_arguments(["--port", "5099", "--duplicate-webhooks", "3", "--reorder-webhooks", "--retry-after", "7"])

    assert arguments.port == 5099
    assert arguments.duplicate_webhooks == 3
    assert arguments.reorder_webhooks is True
    assert arguments.retry_after == 7
    assert arguments.drop_webhooks is False


def test_stored_image_is_png(stack):
    prediction_id = generate(stack)

    stack.work_until(lambda: stack.is_final(prediction_id), message="stored image")

    image = Image.open(io.BytesIO(stack.load(prediction_id).images[0].data))
    assert image.format == "PNG"
    assert image.size == (512, 512)
