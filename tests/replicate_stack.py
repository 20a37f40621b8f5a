"""The app on a real threaded HTTP server, pointed at a simulator with fault switches."""

import json
import re
import time

import httpx
from sqlalchemy.orm import selectinload

from promptgen.extensions import begin_immediate, db
from promptgen.models import Prediction, PredictionImage, WebhookDelivery
from promptgen.queue import enqueue_call
from promptgen.simulator import create_simulator_app
from promptgen.simulator.signing import sign
from promptgen.tokens import sign_prediction_id
from promptgen.worker import Worker

from .conftest import PASSWORD, WEBHOOK_SECRET
from .support import ServerThread, wait_for

#: Short runs, quick webhook retries and short timeouts, so fault tests end in seconds.
SIMULATOR_SETTINGS = {
    "SIMULATOR_DELAY": 0.2,
    "SIMULATOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "SIMULATOR_WEBHOOK_ATTEMPTS": 2,
    "SIMULATOR_WEBHOOK_BACKOFF": 0.05,
    "SIMULATOR_WEBHOOK_TIMEOUT": 5.0,
}

APP_SETTINGS = {
    "RETRY_BASE_SECONDS": 0.05,
    "RETRY_MAX_SECONDS": 5.0,
    "REPLICATE_TIMEOUT": 5.0,
    "REPLICATE_POLL_SECONDS": 0.1,
    "RECONCILE_AFTER": 0,
    # Without log events, the number of webhook requests per run is exact.
    "REPLICATE_WEBHOOK_EVENTS": ("start", "completed"),
}


class Stack:
    """The served app, the simulator, and helpers to run jobs and read exact counts."""

    def __init__(self, app, tmp_path, simulator_settings=None, faults=None):
        simulator_app = create_simulator_app(
            {**SIMULATOR_SETTINGS, **(simulator_settings or {}), "SIMULATOR_FAULTS": faults or {}},
            instance_path=tmp_path / "simulator",
        )
        self.simulator_app = simulator_app
        self.simulator = ServerThread(simulator_app)
        self.web = ServerThread(app)
        self.app = app
        app.config.update(APP_SETTINGS)
        app.config["PUBLIC_URL"] = self.web.url
        app.config["REPLICATE_BASE_URL"] = self.simulator.url
        self.api = httpx.Client(
            base_url=self.simulator.url, headers={"Authorization": "Bearer test"}, timeout=10
        )

    def stop(self):
        self.api.close()
        self.simulator.stop()
        self.web.stop()

    # The simulator

    def set_faults(self, **switches):
        response = self.api.post("/_simulator/faults", json=switches)
        assert response.status_code == 200, response.text
        return response.json()

    def remove_output_files(self, replicate_id):
        """Delete a finished prediction's output files, as Replicate does after an hour."""
        self.simulator_app.extensions["replicate_simulator"].store.remove_files(replicate_id)

    def stats(self):
        return self.api.get("/_simulator/stats").json()

    def remote_predictions(self):
        return self.api.get("/v1/predictions").json()["results"]

    # Jobs

    def start(self, prediction_id):
        with self.app.app_context():
            enqueue_call("promptgen.jobs:generate_prediction", (prediction_id,), queue="urgent")

    def run_job(self, function, *args):
        token = begin_immediate.set(True)
        try:
            with self.app.app_context():
                return function(*args)
        finally:
            begin_immediate.reset(token)

    def work_until(self, condition, timeout=30.0, message="condition"):
        """Run ready jobs in bursts until condition() is true, and return its value."""

        def done():
            self.run_job(lambda: Worker(self.app).work(burst=True))
            return condition()

        return wait_for(done, timeout=timeout, interval=0.05, message=message)

    # The database

    def load(self, prediction_id):
        with self.app.app_context():
            prediction = db.session.get(Prediction, prediction_id, options=[selectinload(Prediction.images)])
            if prediction is not None:
                db.session.expunge(prediction)
            db.session.rollback()
            return prediction

    def counts(self):
        """Return (prediction rows, stored images, statuses by row id)."""
        with self.app.app_context():
            rows = db.session.execute(db.select(Prediction.id, Prediction.status)).all()
            images = db.session.scalar(db.select(db.func.count(PredictionImage.id)))
            db.session.rollback()
        return len(rows), images, {row.id: row.status for row in rows}

    def deliveries(self, prediction_id=None):
        """Return (webhook-id, event, status) of each recorded delivery, oldest first."""
        with self.app.app_context():
            query = db.select(WebhookDelivery).order_by(WebhookDelivery.id)
            if prediction_id is not None:
                query = query.filter_by(prediction_id=prediction_id)
            rows = [(d.webhook_id, d.event, d.status) for d in db.session.scalars(query)]
            db.session.rollback()
        return rows

    def is_final(self, prediction_id):
        prediction = self.load(prediction_id)
        return prediction is not None and prediction.is_final

    # Webhooks and pages on the real server

    def token(self, prediction_id):
        with self.app.test_request_context():
            return sign_prediction_id(prediction_id)

    def post_webhook(self, body, webhook_id, token, timestamp=None, secret=WEBHOOK_SECRET, headers=None):
        raw = json.dumps(body).encode()
        timestamp = str(timestamp or int(time.time()))
        if headers is None:
            headers = {
                "webhook-id": webhook_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": sign(secret, webhook_id, timestamp, raw),
            }
        return httpx.post(
            f"{self.web.url}/replicate/webhook?token={token}",
            content=raw,
            headers={**headers, "content-type": "application/json"},
            timeout=10,
        )

    def browser(self, email="owner@example.com"):
        """Return an httpx client logged in on the real server as email."""
        client = httpx.Client(base_url=self.web.url, timeout=10)
        token = csrf_token(client, "/login")
        response = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302, response.text
        return client


def csrf_token(client, path):
    page = client.get(path).text
    return re.search(r'name="csrf_token"[^>]* value="([^"]+)"', page).group(1)
