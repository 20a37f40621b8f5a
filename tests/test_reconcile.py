"""The reconcile job on rows whose jobs were lost, and cancels of rows not yet sent."""

from datetime import timedelta

from promptgen import jobs
from promptgen.extensions import begin_immediate, db
from promptgen.models import Prediction, utcnow
from promptgen.predictions import cancel_locally

from .conftest import add_prompt, queued_jobs


def age(app, prediction_id, seconds, **fields):
    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        for name, value in fields.items():
            setattr(prediction, name, value)
        db.session.flush()
        prediction.updated_at = utcnow() - timedelta(seconds=seconds)
        db.session.commit()


def reconcile(app):
    token = begin_immediate.set(True)
    try:
        with app.app_context():
            return jobs.reconcile_predictions()
    finally:
        begin_immediate.reset(token)


def test_reconcile_requeues_lost_generate_job(app):
    app.config.update(RECONCILE_AFTER=60, RETRY_MAX_SECONDS=300)
    waiting = add_prompt(app)[2]
    lost = add_prompt(app)[2]
    age(app, waiting, 200)
    age(app, lost, 400)

    checked = reconcile(app)

    assert checked == 2
    assert queued_jobs(app) == [("promptgen.jobs:generate_prediction", f"[{lost}]")]


def test_reconcile_requeues_lost_store_job(app):
    app.config["RECONCILE_AFTER"] = 60
    prediction_id = add_prompt(app)[2]
    age(app, prediction_id, 120, status="succeeded", replicate_id="r8x", output_urls=["https://replicate.delivery/a.png"])

    reconcile(app)
    again = reconcile(app)

    assert queued_jobs(app) == [("promptgen.jobs:store_output", f"[{prediction_id}]")]
    assert again == 0


def test_reconcile_leaves_final_rows(app):
    app.config["RECONCILE_AFTER"] = 0
    for status in ("failed", "canceled"):
        age(app, add_prompt(app, status=status)[2], 3600)

    assert reconcile(app) == 0
    assert queued_jobs(app) == []


def test_cancel_unsent_row_stays_local(app):
    prediction_id = add_prompt(app)[2]

    with app.app_context():
        prediction = db.session.get(Prediction, prediction_id)
        replicate_id = cancel_locally(prediction)
        db.session.commit()
        jobs.generate_prediction(prediction_id)
        prediction = db.session.get(Prediction, prediction_id)
        assert prediction.status == "canceled"
        assert prediction.create_attempts == 0
    assert replicate_id is None
    assert queued_jobs(app) == []
