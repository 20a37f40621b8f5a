"""Tests of the queue worker, in this process and as real worker processes."""

import logging
import os
import re
import signal
import socket
import sqlite3

import pytest
from flask import Flask

from promptgen import worker as worker_module
from promptgen.extensions import db
from promptgen.queue import DEFAULT_LEASE_SECONDS, SCHEMA_VERSION, Queue
from promptgen.worker import (
    BURST_CLAIM_ATTEMPTS,
    IDLE_SLEEP_FACTOR,
    IDLE_SLEEP_MAX_SECONDS,
    IDLE_SLEEP_START_SECONDS,
    ClaimError,
    Worker,
    make_worker_id,
    next_idle_sleep,
)

from . import jobs_for_tests
from .queue_support import (  # noqa: F401 (app, processes, queue_path and real_clock_queue are fixtures)
    START,
    FakeClock,
    FixedRandom,
    app,
    processes,
    queue_path,
    real_clock_queue,
    start_flask_worker,
    start_worker,
)
from .support import wait_for


def test_burst_on_empty_queue_returns_zero(app, queue):
    assert Worker(app, queue).work(burst=True) == 0


def test_burst_runs_ready_jobs_in_app_context(app, queue):
    app.config["MARKER"] = "from the app config"
    config_job = queue.enqueue(jobs_for_tests.config_value, "MARKER")
    add_job = queue.enqueue(jobs_for_tests.add, 2, 3)
    delayed_job = queue.enqueue_call(jobs_for_tests.add, (1, 1), delay=3600)

    assert Worker(app, queue).work(burst=True) == 2

    assert queue.fetch_job(config_job).result == "from the app config"
    assert queue.fetch_job(add_job).result == 5
    assert queue.fetch_job(add_job).status == "finished"
    assert queue.fetch_job(delayed_job).status == "scheduled"


def test_worker_opens_queue_from_config(app, queue_path):
    app.config["QUEUE_LEASE_SECONDS"] = 12
    worker = Worker(app)

    assert worker.queue.path == str(queue_path)
    assert worker.queue.lease_seconds == 12.0
    assert worker.heartbeat_interval == 4.0


def test_worker_default_lease(app):
    assert Worker(app).queue.lease_seconds == DEFAULT_LEASE_SECONDS


def test_worker_requires_queue_database():
    with pytest.raises(RuntimeError, match="QUEUE_DATABASE is not set"):
        Worker(Flask(__name__))


def test_failing_job_does_not_stop_worker(app, queue):
    failing_job = queue.enqueue_call(jobs_for_tests.raise_error, ("boom",), max_attempts=1)
    add_job = queue.enqueue(jobs_for_tests.add, 2, 3)

    assert Worker(app, queue).work(burst=True) == 2

    failed = queue.fetch_job(failing_job)
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert failed.error.endswith("RuntimeError: boom\n")
    assert queue.fetch_job(add_job).status == "finished"


def test_failing_job_is_retried_after_backoff(app, queue_path):
    clock = FakeClock(START)
    queue = Queue(queue_path, lease_seconds=30, clock=clock, rng=FixedRandom(0.0))
    job_id = queue.enqueue(jobs_for_tests.raise_error, "boom")

    assert Worker(app, queue).work(burst=True) == 1
    retried = queue.fetch_job(job_id)
    assert retried.status == "scheduled"
    assert retried.attempts == 1
    assert retried.run_at == START + 2
    assert "RuntimeError: boom" in retried.error

    clock.now = START + 2
    assert Worker(app, queue).work(burst=True) == 1
    assert queue.fetch_job(job_id).run_at == START + 2 + 4
    queue.close()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (0, "job exited with code 0"),
        (3, "job exited with code 3"),
        (None, "job exited with code None"),
        ("bad input", "job exited with code 'bad input'"),
    ],
)
def test_system_exit_fails_job(app, queue, code, message):
    exiting_job = queue.enqueue(jobs_for_tests.exit_with, code, retries=0)
    next_job = queue.enqueue(jobs_for_tests.add, 2, 3)

    assert Worker(app, queue).work(burst=True) == 2

    failed = queue.fetch_job(exiting_job)
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert failed.error_type == "SystemExit"
    assert failed.error_message == message
    assert "in exit_with" in failed.error
    assert failed.error.endswith(f"SystemExit: {message}\n")
    assert queue.fetch_job(next_job).result == 5


def test_system_exit_is_retried(app, queue):
    job_id = queue.enqueue(jobs_for_tests.exit_with, 0, retries=1)

    assert Worker(app, queue).work(burst=True) == 1

    retried = queue.fetch_job(job_id)
    assert retried.status == "scheduled"
    assert retried.attempts == 1
    assert retried.error_type == "SystemExit"
    assert retried.error_message == "job exited with code 0"


def test_keyboard_interrupt_propagates(app, queue):
    job_id = queue.enqueue(jobs_for_tests.raise_keyboard_interrupt)
    next_job = queue.enqueue(jobs_for_tests.add, 2, 3)

    with pytest.raises(KeyboardInterrupt):
        Worker(app, queue).work(burst=True)

    interrupted = queue.fetch_job(job_id)
    assert interrupted.status == "started"
    assert interrupted.attempts == 1
    assert queue.fetch_job(next_job).status == "queued"


def test_unimportable_function_fails_job(app, queue):
    job_id = queue.enqueue_call("tests.no_such_module:run", max_attempts=1)

    assert Worker(app, queue).work(burst=True) == 1

    failed = queue.fetch_job(job_id)
    assert failed.status == "failed"
    assert "ModuleNotFoundError: No module named 'tests.no_such_module'" in failed.error


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_stop_signal_finishes_current_job(app, queue, signal_name):
    signalled_job = queue.enqueue(jobs_for_tests.send_signal_to_self, signal_name)
    next_job = queue.enqueue(jobs_for_tests.add, 1, 2)
    handler_before = signal.getsignal(signal.Signals[signal_name])

    assert Worker(app, queue).work() == 1

    assert queue.fetch_job(signalled_job).status == "finished"
    assert queue.fetch_job(signalled_job).result == "signalled"
    assert queue.fetch_job(next_job).status == "queued"
    assert signal.getsignal(signal.Signals[signal_name]) is handler_before


def test_request_stop_ends_idle_worker(app, queue, monkeypatch):
    worker = Worker(app, queue)
    sleeps = []

    def record_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 12:
            worker.request_stop()

    monkeypatch.setattr(worker_module.time, "sleep", record_sleep)

    assert worker.work() == 0
    expected = [0.05, 0.075, 0.1125, 0.16875, 0.253125, 0.3796875, 0.56953125, 0.854296875]
    assert sleeps[:8] == pytest.approx(expected)
    assert sleeps[8:] == [1.0, 1.0, 1.0, 1.0]


def test_idle_stop_signal_logs_line(app, queue, monkeypatch, worker_logs):
    worker = Worker(app, queue, worker_id="test-worker")

    def signal_self(seconds):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(worker_module.time, "sleep", signal_self)

    assert worker.work() == 0
    messages = [record.getMessage() for record in worker_logs.records]
    assert messages[1:] == [
        "worker test-worker received SIGTERM: stopping, no job is running",
        "worker test-worker stopped (SIGTERM) after 0 jobs",
    ]


def test_idle_second_signal_logs_line(app, queue, monkeypatch, worker_logs):
    worker = Worker(app, queue, worker_id="test-worker")

    def signal_self_twice(seconds):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(worker_module.time, "sleep", signal_self_twice)

    assert worker.work() == 0
    messages = [record.getMessage() for record in worker_logs.records]
    assert messages[1:] == [
        "worker test-worker received SIGINT: stopping, no job is running",
        "worker test-worker received SIGTERM again: stopping now",
        "worker test-worker stopped (SIGINT) after 0 jobs",
    ]


def test_idle_sleep_backoff_constants():
    assert IDLE_SLEEP_START_SECONDS == 0.05
    assert IDLE_SLEEP_FACTOR == 1.5
    assert IDLE_SLEEP_MAX_SECONDS == 1.0
    assert next_idle_sleep(0.05) == pytest.approx(0.075)
    assert next_idle_sleep(0.9) == 1.0


def test_idle_sleep_resets_after_job(app, queue, monkeypatch):
    worker = Worker(app, queue)
    sleeps = []

    def record_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            queue.enqueue(jobs_for_tests.add, 1, 2)
        if len(sleeps) == 5:
            worker.request_stop()

    monkeypatch.setattr(worker_module.time, "sleep", record_sleep)

    assert worker.work() == 1
    assert sleeps == pytest.approx([0.05, 0.075, 0.1125, 0.05, 0.075])


def test_heartbeat_renews_lease(app, queue_path):
    queue = Queue(queue_path, lease_seconds=0.3)
    job_id = queue.enqueue(jobs_for_tests.wait_for_lease_renewals, str(queue_path), 2)

    assert Worker(app, queue).work(burst=True) == 1

    job = queue.fetch_job(job_id)
    assert job.status == "finished"
    assert job.attempts == 1
    assert len(job.result) == 3
    assert job.result == sorted(job.result)
    queue.close()


def test_db_session_removed_after_each_job(queue_path, queue, monkeypatch):
    app = Flask(__name__)
    app.config["QUEUE_DATABASE"] = str(queue_path)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{queue_path.parent / 'app.sqlite3'}"
    db.init_app(app)
    removals = []
    remove = db.session.remove

    def record_remove():
        removals.append(db.session.registry.has())
        remove()

    monkeypatch.setattr(db.session, "remove", record_remove)
    queue.enqueue(jobs_for_tests.query_database)
    queue.enqueue_call(jobs_for_tests.query_database, kwargs={"then_fail": True}, max_attempts=1)

    assert Worker(app, queue).work(burst=True) == 2

    # The worker removes each job's session, so Flask-SQLAlchemy's own app-context
    # teardown then finds none left.
    assert removals == [True, False, True, False]
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def worker_logs(caplog, monkeypatch):
    """Capture the worker's INFO records."""
    caplog.set_level(logging.INFO, logger="promptgen")
    return caplog


def test_worker_logs_start_jobs_and_stop(app, queue_path, worker_logs):
    queue = Queue(queue_path, lease_seconds=30, rng=FixedRandom(0.0))
    finished_job = queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")
    failed_job = queue.enqueue_call(jobs_for_tests.raise_error, ("boom",), max_attempts=2)
    worker = Worker(
        app, queue, worker_id="test-worker", default_timeout=120, grace_seconds=5, rng=FixedRandom(0.0)
    )

    worker.work(burst=True)

    messages = [record.getMessage() for record in worker_logs.records]
    assert messages[0] == (
        f"worker test-worker started: pid {os.getpid()}, queue file {queue.path},"
        " queues critical:10, urgent:5, default:1, lease 30 s, default timeout 120 s,"
        " shutdown grace 5 s, timeouts on, burst mode"
    )
    finished = messages[1]
    assert finished.startswith(f"job {finished_job} tests.jobs_for_tests:add queue urgent waited ")
    assert re.search(r" waited \d+ ms, ran \d+ ms: finished$", finished), finished
    failed = messages[2]
    assert failed.startswith(f"job {failed_job} tests.jobs_for_tests:raise_error queue default ")
    assert re.search(r"ms: failed \(attempt 1 of 2\), retry in [12](\.\d+)? s$", failed), failed
    assert messages[3] == "worker test-worker stopped (no job ready) after 2 jobs"
    assert len(messages) == 4
    assert "RuntimeError: boom" in worker_logs.records[2].exc_text
    assert worker_logs.records[2].levelno == logging.WARNING


def test_worker_logs_final_failure_as_error(app, queue, worker_logs):
    queue.enqueue_call(jobs_for_tests.raise_error, ("boom",), max_attempts=1)

    Worker(app, queue).work(burst=True)

    failure = worker_logs.records[1]
    assert failure.levelno == logging.ERROR
    assert failure.getMessage().endswith("(attempt 1 of 1), no attempts left")
    assert "RuntimeError: boom" in failure.exc_text


def break_queue_file(path):
    """Create a queue file at path, then drop its jobs table.

    The schema version stays current, so the file opens, but every claim fails with
    sqlite3.OperationalError "no such table: jobs".
    """
    Queue(path).close()
    connection = sqlite3.connect(path)
    try:
        connection.execute("DROP TABLE jobs")
        connection.commit()
    finally:
        connection.close()


def test_burst_stops_after_failed_claims(app, queue_path, monkeypatch, worker_logs):
    break_queue_file(queue_path)
    worker = Worker(app, worker_id="test-worker")
    sleeps = []
    monkeypatch.setattr(worker_module.time, "sleep", sleeps.append)

    with pytest.raises(ClaimError) as raised:
        worker.work(burst=True)

    assert BURST_CLAIM_ATTEMPTS == 3
    assert str(raised.value) == (
        f"failed to claim a job from {queue_path} 3 times in a row: no such table: jobs"
    )
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert sleeps == pytest.approx([0.05, 0.075])
    failures = [record.getMessage() for record in worker_logs.records[1:]]
    assert failures == [
        f"worker test-worker failed to claim a job from {queue_path} (attempt 1 of 3),"
        " retrying in 0.05 s",
        f"worker test-worker failed to claim a job from {queue_path} (attempt 2 of 3),"
        " retrying in 0.075 s",
    ]


def test_burst_failed_claim_count_resets(app, queue, monkeypatch):
    job_id = queue.enqueue(jobs_for_tests.add, 2, 3)
    worker = Worker(app)
    claim = worker.queue.claim
    # Two failures, a claim of the job, then two failures and a claim of nothing.
    outcomes = iter(["fail", "fail", "claim", "fail", "fail", "claim"])

    def claim_or_fail(*args, **kwargs):
        if next(outcomes) == "fail":
            raise sqlite3.OperationalError("database is locked")
        return claim(*args, **kwargs)

    monkeypatch.setattr(worker.queue, "claim", claim_or_fail)
    monkeypatch.setattr(worker_module.time, "sleep", lambda seconds: None)

    assert worker.work(burst=True) == 1
    assert queue.fetch_job(job_id).result == 5
    assert next(outcomes, "all used") == "all used"


def test_worker_retries_failed_claims_without_burst(app, queue_path, monkeypatch, worker_logs):
    break_queue_file(queue_path)
    worker = Worker(app, worker_id="test-worker")
    sleeps = []

    def record_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == BURST_CLAIM_ATTEMPTS + 2:
            worker.request_stop()

    monkeypatch.setattr(worker_module.time, "sleep", record_sleep)

    assert worker.work() == 0
    assert sleeps == pytest.approx([0.05, 0.075, 0.1125, 0.16875, 0.253125])
    messages = [record.getMessage() for record in worker_logs.records]
    failures = [message for message in messages if "failed to claim a job" in message]
    assert len(failures) == 5
    assert failures[4] == (
        f"worker test-worker failed to claim a job from {queue_path}, retrying in 0.253125 s"
    )
    assert messages[-1] == "worker test-worker stopped (no job ready) after 0 jobs"


def test_worker_id_names_host_and_pid():
    first = make_worker_id()
    second = make_worker_id()

    host, pid, suffix = first.rsplit(".", 2)
    assert host == socket.gethostname()
    assert pid == str(os.getpid())
    assert len(suffix) == 6
    assert first != second


# Tests with real worker processes started as `python -m tests.queue_app`.


def test_worker_processes_run_each_job_once(queue, queue_path, tmp_path, processes):
    job_count = 2000
    results = tmp_path / "results"
    results.mkdir()
    for index in range(4):
        processes.append(start_worker(f"worker-{index}", queue_path, tmp_path))
    for process in processes:
        wait_for(lambda: " started: pid " in process.log(), message=f"{process.name} to start")

    job_ids = [queue.enqueue(jobs_for_tests.record_run, str(results), n) for n in range(job_count)]
    wait_for(lambda: queue.counts() == {"finished": job_count}, message="all jobs to finish")
    exit_codes = [process.stop() for process in processes]

    runs_by_process = {
        path.stem: [int(line) for line in path.read_text().splitlines()]
        for path in results.iterdir()
    }
    runs = sorted(number for numbers in runs_by_process.values() for number in numbers)
    assert runs == list(range(job_count))
    assert exit_codes == [0, 0, 0, 0]
    assert {queue.fetch_job(job_id).attempts for job_id in job_ids} == {1}
    assert len(runs_by_process) > 1, "one process ran every job, so no claims competed"
    assert set(runs_by_process) <= {str(process.popen.pid) for process in processes}


def test_sigterm_lets_running_job_finish(queue, queue_path, tmp_path, processes):
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    blocking_job = queue.enqueue(jobs_for_tests.block_until_file, str(release), str(starts))
    next_job = queue.enqueue(jobs_for_tests.add, 1, 2)
    worker = start_worker("worker", queue_path, tmp_path)
    processes.append(worker)

    wait_for(starts.exists, message="the job to start")
    worker.popen.send_signal(signal.SIGTERM)
    release.touch()

    assert worker.popen.wait(timeout=30) == 0, worker.log()
    assert queue.fetch_job(blocking_job).status == "finished"
    assert queue.fetch_job(blocking_job).result == "released"
    assert queue.fetch_job(next_job).status == "queued"
    assert "stopped (SIGTERM) after 1 jobs" in worker.log()


def test_killed_worker_job_redelivered_after_lease(queue, queue_path, tmp_path, processes):
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    job_id = queue.enqueue(jobs_for_tests.block_until_file, str(release), str(starts))
    first = start_worker("first", queue_path, tmp_path, "--lease-seconds", "1")
    processes.append(first)

    wait_for(starts.exists, message="the job to start")
    first.popen.kill()
    first.popen.wait(timeout=30)
    abandoned = queue.fetch_job(job_id)
    release.touch()
    second = start_worker("second", queue_path, tmp_path, "--lease-seconds", "1")
    processes.append(second)

    finished = wait_for(lambda: _finished(queue, job_id), message="the job to finish")
    assert abandoned.status == "started"
    assert abandoned.attempts == 1
    assert finished.attempts == 2
    assert finished.result == "released"
    assert finished.worker_id != abandoned.worker_id
    assert starts.read_text().split() == [str(first.popen.pid), str(second.popen.pid)]


def _finished(queue, job_id):
    job = queue.fetch_job(job_id)
    return job if job.status == "finished" else None


def test_burst_process_exits_when_queue_empty(queue, queue_path, tmp_path, processes):
    job_id = queue.enqueue(jobs_for_tests.add, 2, 3)
    worker = start_worker("worker", queue_path, tmp_path, "--burst")
    processes.append(worker)

    assert worker.popen.wait(timeout=30) == 0, worker.log()
    assert queue.fetch_job(job_id).result == 5
    assert "stopped (no job ready) after 1 jobs" in worker.log()


def test_flask_worker_command_runs_jobs(queue, queue_path, tmp_path, processes):
    job_id = queue.enqueue(jobs_for_tests.add, 2, 3)
    worker = start_flask_worker("flask-worker", queue_path, tmp_path, "--burst")
    processes.append(worker)

    assert worker.popen.wait(timeout=30) == 0, worker.log()
    assert queue.fetch_job(job_id).result == 5
    assert "stopped (no job ready) after 1 jobs" in worker.log()


def test_flask_worker_burst_exits_on_failed_claims(queue_path, tmp_path, processes):
    break_queue_file(queue_path)
    worker = start_flask_worker("flask-worker", queue_path, tmp_path, "--burst")
    processes.append(worker)

    assert worker.popen.wait(timeout=30) == 1, worker.log()
    log = worker.log()
    assert log.splitlines()[-1] == (
        f"Error: failed to claim a job from {queue_path} 3 times in a row: no such table: jobs"
    )
    assert log.count(f"failed to claim a job from {queue_path} (attempt 1 of 3)") == 1
    assert log.count(f"failed to claim a job from {queue_path} (attempt 2 of 3)") == 1


def test_flask_pool_burst_exits_on_failed_claims(queue_path, tmp_path, processes):
    break_queue_file(queue_path)
    pool = start_flask_worker("pool", queue_path, tmp_path, "--burst", "--concurrency", "2")
    processes.append(pool)

    assert pool.popen.wait(timeout=30) == 1, pool.log()
    log = pool.log()
    stopped = re.findall(r"worker process \d+ stopped: (.*)", log)
    expected = f"failed to claim a job from {queue_path} 3 times in a row: no such table: jobs"
    assert stopped == [expected, expected]
    assert len(re.findall(r"worker process \d+ exited with status 1$", log, re.MULTILINE)) == 2
    assert "crashed" not in log


def _write_text_file(path):
    path.write_text("not a database\n" * 100)


def _make_directory(path):
    path.mkdir()


def _write_newer_schema(path):
    Queue(path).close()
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (_write_text_file, "Error: cannot open queue file {path}: file is not a database"),
        (_make_directory, "Error: cannot open queue file {path}: unable to open database file"),
        (
            _write_newer_schema,
            "Error: queue database {path} has schema version {newer}, newer than version"
            " {current} that this code supports. Upgrade promptgen.",
        ),
    ],
    ids=["text file", "directory", "newer schema"],
)
@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_flask_worker_rejects_unusable_queue_file(
    queue_path, tmp_path, processes, make_file, expected, concurrency
):
    make_file(queue_path)
    worker = start_flask_worker(
        "flask-worker", queue_path, tmp_path, "--burst", "--concurrency", concurrency
    )
    processes.append(worker)

    assert worker.popen.wait(timeout=30) == 1, worker.log()
    log = worker.log()
    message = expected.format(path=queue_path, newer=SCHEMA_VERSION + 1, current=SCHEMA_VERSION)
    assert log.splitlines()[-1] == message
    assert "Traceback" not in log
    assert " started" not in log


def test_system_exit_in_process_worker(queue, queue_path, tmp_path, processes):
    exiting_job = queue.enqueue(jobs_for_tests.exit_with, 0, retries=0)
    next_job = queue.enqueue(jobs_for_tests.add, 2, 3)
    worker = start_worker("worker", queue_path, tmp_path, "--burst")
    processes.append(worker)

    assert worker.popen.wait(timeout=30) == 0, worker.log()
    failed = queue.fetch_job(exiting_job)
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert failed.error_type == "SystemExit"
    assert failed.error_message == "job exited with code 0"
    assert queue.fetch_job(next_job).result == 5
    log = worker.log()
    line = re.search(rf"job {exiting_job} tests.jobs_for_tests:exit_with .*", log)
    assert line is not None, log
    assert line.group().endswith("ms: failed (attempt 1 of 1), no attempts left")
    assert "stopped (no job ready) after 2 jobs" in log
