import json
import time
from datetime import datetime

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy.orm import selectinload
from replicate.webhook import WebhookSigningSecret, Webhooks

from promptgen.extensions import db
from promptgen.filters import duration
from promptgen.models import Prediction, WebhookDelivery
from promptgen.simulator.signing import sign
from promptgen.tokens import sign_prediction_id

from .conftest import WEBHOOK_SECRET, add_prompt, queued_jobs

# The test vector published with the Standard Webhooks specification.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = "1614265330"
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OUTPUT_URL = "https://replicate.delivery/pbxt/abc/out-0.png"


def prediction_body(status, replicate_id="r8abc", **fields):
    body = {"id": replicate_id, "status": status, "logs": "", "output": None, "error": None}
    body.update(fields)
    return body


class Sender:
    """Post signed webhook requests to the app, as Replicate does."""

    def __init__(self, app, client, prediction_id):
        self.app = app
        self.client = client
        self.prediction_id = prediction_id
        self.count = 0

    def token(self, prediction_id=None):
        with self.app.test_request_context():
            return sign_prediction_id(prediction_id or self.prediction_id)

    def post(self, body, webhook_id=None, token=None, timestamp=None, secret=WEBHOOK_SECRET, headers=None):
        self.count += 1
        raw = body if isinstance(body, str) else json.dumps(body)
        webhook_id = webhook_id or f"msg_{self.count}"
        timestamp = str(timestamp or int(time.time()))
        if headers is None:
            headers = {
                "webhook-id": webhook_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": sign(secret, webhook_id, timestamp, raw.encode()),
            }
        token = self.token() if token is None else token
        return self.client.post(
            f"/replicate/webhook?token={token}", data=raw, headers=headers, content_type="application/json"
        )


@pytest.fixture
def prediction_id(app):
    return add_prompt(app)[2]


@pytest.fixture
def sender(app, client, prediction_id):
    return Sender(app, client, prediction_id)


def load(app, prediction_id):
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id, options=[selectinload(Prediction.images)])
        deliveries = db.session.scalars(db.select(WebhookDelivery.webhook_id).order_by(WebhookDelivery.id)).all()
        db.session.expunge_all()
        return prediction, deliveries


def test_signer_matches_standard_webhooks_vector():
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.encode()) == VECTOR_SIGNATURE


def test_replicate_client_accepts_vector():
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": VECTOR_TIMESTAMP, "webhook-signature": VECTOR_SIGNATURE}

    assert Webhooks.validate(headers=headers, body=VECTOR_BODY, secret=WebhookSigningSecret(key=VECTOR_SECRET)) is None


def test_start_event_moves_to_starting(app, sender, prediction_id):
    response = sender.post(prediction_body("starting", logs="Using seed: 7"))

    assert response.status_code == 200
    assert response.get_json() == {"result": "accepted"}
    prediction, deliveries = load(app, prediction_id)
    assert prediction.status == "starting"
    assert prediction.replicate_id == "r8abc"
    assert prediction.logs == "Using seed: 7"
    assert prediction.started_at is not None
    assert deliveries == ["msg_1"]
    assert queued_jobs(app) == []


def test_completed_event_queues_one_store_job(app, sender, prediction_id):
    response = sender.post(prediction_body("succeeded", output=[OUTPUT_URL]))

    assert response.status_code == 200
    prediction, _ = load(app, prediction_id)
    assert prediction.status == "succeeded"
    assert prediction.output_urls == [OUTPUT_URL]
    assert prediction.completed_at is not None
    assert prediction.images == []
    assert queued_jobs(app) == [("promptgen.jobs:store_output", f"[{prediction_id}]")]


def test_repeated_delivery_changes_nothing(app, sender, prediction_id):
    sender.post(prediction_body("succeeded", output=[OUTPUT_URL]), webhook_id="msg_same")
    first, _ = load(app, prediction_id)

    responses = [sender.post(prediction_body("succeeded", output=[OUTPUT_URL]), webhook_id="msg_same") for _ in range(2)]

    assert [r.get_json() for r in responses] == [{"result": "duplicate"}] * 2
    prediction, deliveries = load(app, prediction_id)
    assert deliveries == ["msg_same"]
    assert prediction.completed_at == first.completed_at
    assert len(queued_jobs(app)) == 1


def test_late_start_after_completed_changes_nothing(app, sender, prediction_id):
    sender.post(prediction_body("succeeded", output=[OUTPUT_URL], logs="done"))

    response = sender.post(prediction_body("processing", logs="50%|"))

    assert response.status_code == 200
    prediction, deliveries = load(app, prediction_id)
    assert prediction.status == "succeeded"
    assert prediction.logs == "done"
    assert deliveries == ["msg_1", "msg_2"]
    assert len(queued_jobs(app)) == 1


def test_failed_event_keeps_error(app, sender, prediction_id):
    sender.post(prediction_body("failed", error="CUDA out of memory"))

    prediction, _ = load(app, prediction_id)
    assert prediction.status == "failed"
    assert prediction.error == "CUDA out of memory"
    assert queued_jobs(app) == []


def test_succeeded_without_output_is_an_error(app, sender, prediction_id):
    sender.post(prediction_body("succeeded", output=None))

    prediction, _ = load(app, prediction_id)
    assert prediction.error == "The model finished but returned no image."
    assert prediction.is_final
    assert queued_jobs(app) == []


def test_event_for_other_replicate_id_rejected(app, sender, prediction_id):
    sender.post(prediction_body("starting", replicate_id="r8first"))

    response = sender.post(prediction_body("succeeded", replicate_id="r8other", output=[OUTPUT_URL]))

    assert response.status_code == 409
    prediction, deliveries = load(app, prediction_id)
    assert prediction.status == "starting"
    assert deliveries == ["msg_1"]


def assert_nothing_written(app, prediction_id):
    prediction, deliveries = load(app, prediction_id)
    assert prediction.status == "queued"
    assert prediction.replicate_id is None
    assert deliveries == []
    assert queued_jobs(app) == []


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"secret": "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="}, 401),
        ({"timestamp_offset": -360}, 401),
        ({"timestamp_offset": 360}, 401),
        ({"timestamp": int(VECTOR_TIMESTAMP)}, 401),
        ({"headers": {}}, 401),
        ({"headers": {"webhook-id": "msg_1", "webhook-timestamp": "1"}}, 401),
        ({"headers": {"webhook-id": "msg_1", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"}}, 401),
        ({"headers": {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())), "webhook-signature": "garbage"}}, 401),
        ({"token": "not-a-token"}, 403),
        ({"token": ""}, 403),
    ],
)
def test_forged_or_stale_rejected(app, sender, prediction_id, change, status):
    # Offsets are applied now, not when the cases are collected, which can be minutes earlier.
    change = dict(change)
    if "timestamp_offset" in change:
        change["timestamp"] = int(time.time()) + change.pop("timestamp_offset")

    response = sender.post(prediction_body("succeeded", output=[OUTPUT_URL]), **change)

    assert response.status_code == status
    assert "error" in response.get_json()
    assert_nothing_written(app, prediction_id)


def test_signature_for_other_body_rejected(app, client, sender, prediction_id):
    signed = json.dumps(prediction_body("failed", error="x"))
    timestamp = str(int(time.time()))
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(WEBHOOK_SECRET, "msg_x", timestamp, signed.encode()),
    }

    response = sender.post(prediction_body("succeeded", output=[OUTPUT_URL]), headers=headers)

    assert response.status_code == 401
    assert_nothing_written(app, prediction_id)


def test_token_with_wrong_salt_rejected(app, sender, prediction_id):
    token = URLSafeSerializer(app.config["SECRET_KEY"], salt="another-purpose").dumps({"prediction": prediction_id})

    response = sender.post(prediction_body("succeeded", output=[OUTPUT_URL]), token=token)

    assert response.status_code == 403
    assert_nothing_written(app, prediction_id)


def test_token_for_another_prediction_moves_only_that_one(app, sender, prediction_id):
    other_id = add_prompt(app, owner_email="other@example.com")[2]

    sender.post(prediction_body("starting", replicate_id="r8other"), token=sender.token(other_id))

    other, _ = load(app, other_id)
    prediction, _ = load(app, prediction_id)
    assert other.replicate_id == "r8other"
    assert prediction.replicate_id is None
    assert prediction.status == "queued"


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", json.dumps({"id": "r8abc", "status": "exploded"}), json.dumps({"status": "starting"})],
)
def test_invalid_body_rejected(app, sender, prediction_id, body):
    response = sender.post(body)

    assert response.status_code == 400
    assert_nothing_written(app, prediction_id)


def test_event_for_deleted_prediction_ignored(app, sender, prediction_id):
    with app.app_context():
        db.session.delete(db.session.get(Prediction, prediction_id))
        db.session.commit()

    response = sender.post(prediction_body("succeeded", output=[OUTPUT_URL]))

    assert response.status_code == 200
    assert response.get_json() == {"result": "prediction deleted"}
    assert queued_jobs(app) == []


def test_webhook_needs_no_csrf_token_or_login(app, sender):
    response = sender.post(prediction_body("starting"))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "event"),
    [
        ({"status": "starting"}, "start"),
        ({"status": "processing", "output": None}, "logs"),
        ({"status": "processing", "output": ["https://replicate.delivery/a.png"]}, "output"),
        ({"status": "succeeded"}, "completed"),
        ({"status": "failed"}, "completed"),
        ({"status": "canceled"}, "completed"),
    ],
)
def test_delivery_event_from_body(body, event):
    assert WebhookDelivery.event_for(body) == event


def test_delivery_records_event(app, sender, prediction_id):
    sender.post(prediction_body("starting"))
    sender.post(prediction_body("succeeded", output=[OUTPUT_URL]))

    with app.app_context():
        rows = db.session.execute(
            db.select(WebhookDelivery.event, WebhookDelivery.status, WebhookDelivery.prediction_id)
        ).all()
    assert [tuple(row) for row in rows] == [("start", "starting", prediction_id), ("completed", "succeeded", prediction_id)]


def test_secret_unavailable_answers_503(app, sender, prediction_id):
    from .support import free_port

    app.config["REPLICATE_WEBHOOK_SECRET"] = None
    app.config["REPLICATE_BASE_URL"] = f"http://127.0.0.1:{free_port()}"

    response = sender.post(prediction_body("succeeded", output=[OUTPUT_URL]))

    assert response.status_code == 503
    assert response.get_json() == {"error": "The webhook signing secret could not be fetched; retry later."}
    assert_nothing_written(app, prediction_id)


@pytest.mark.parametrize("timestamp", ["abc", "-5", "1.5", "12a"])
def test_timestamp_not_a_number_rejected(app, sender, prediction_id, timestamp):
    response = sender.post(prediction_body("succeeded", output=[OUTPUT_URL]), timestamp=timestamp)

    assert response.status_code == 401
    assert response.get_json() == {
        "error": "Webhook verification failed: the webhook-timestamp header must be"
        " whole seconds since the epoch."
    }
    assert_nothing_written(app, prediction_id)


def test_run_time_taken_from_replicate(app, sender, prediction_id):
    body = prediction_body(
        "succeeded",
        output=[OUTPUT_URL],
        started_at="2026-12-04T10:00:00.250000Z",
        completed_at="2026-12-04T10:00:04.750000Z",
    )

    sender.post(body)

    prediction, _ = load(app, prediction_id)
    assert prediction.started_at == datetime(2026, 12, 4, 10, 0, 0, 250000)
    assert prediction.completed_at == datetime(2026, 12, 4, 10, 0, 4, 750000)
    assert duration(prediction.started_at, prediction.completed_at) == "4.5 s"


@pytest.mark.parametrize("value", [None, "", "yesterday", 17])
def test_unreadable_replicate_time_ignored(app, sender, prediction_id, value):
    sender.post(prediction_body("processing", started_at=value))

    prediction, _ = load(app, prediction_id)
    assert prediction.status == "processing"
    assert prediction.started_at is not None
