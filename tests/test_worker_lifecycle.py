"""Tests of worker timeouts, shutdown, concurrency and crashes, in threads and real processes."""

import signal
import threading
import time

import pytest
from flask import Flask

from promptgen.queue import Queue
from promptgen.worker import Worker

from . import jobs_for_tests
from .queue_support import REPOSITORY, processes, start_worker  # noqa: F401 (processes is a fixture)
from .support import Process, flask_command, wait_for



@pytest.fixture
def queue_path(tmp_path):
    return tmp_path / "queue.sqlite3"


@pytest.fixture
def queue(queue_path):
    queue = Queue(queue_path, lease_seconds=30)
    yield queue
    queue.close()


@pytest.fixture
def app(queue_path):
    app = Flask(__name__)
    app.config["QUEUE_DATABASE"] = str(queue_path)
    return app


def read_runs(results):
    """Return every number that the record_run jobs wrote, sorted."""
    numbers = []
    for path in results.iterdir():
        numbers.extend(int(line) for line in path.read_text().splitlines())
    return sorted(numbers)


# Timeouts


def test_timeout_stops_job_and_worker_continues(app, queue):
    slow = queue.enqueue(jobs_for_tests.sleep_for, 60, timeout=0.3, retries=0)
    quick = queue.enqueue(jobs_for_tests.add, 1, 2)
    started = time.monotonic()

    assert Worker(app, queue).work(burst=True) == 2

    failed = queue.fetch_job(slow)
    assert time.monotonic() - started < 30
    assert failed.status == "failed"
    assert failed.attempts == 1
    assert failed.error_type == "promptgen.worker.JobTimeout"
    assert failed.error_message == "job ran past its timeout of 0.3 s"
    assert queue.fetch_job(quick).result == 3


def test_timeout_is_a_failed_attempt_that_retries(app, queue):
    job_id = queue.enqueue(jobs_for_tests.sleep_for, 60, timeout=0.2, retries=2)

    assert Worker(app, queue).work(burst=True) == 1

    retried = queue.fetch_job(job_id)
    assert retried.status == "scheduled"
    assert retried.attempts == 1
    assert retried.error_type == "promptgen.worker.JobTimeout"


def test_timeout_not_swallowed_by_except_exception(app, queue):
    job_id = queue.enqueue(jobs_for_tests.sleep_ignoring_exceptions, 60, timeout=0.2, retries=0)

    Worker(app, queue).work(burst=True)

    assert queue.fetch_job(job_id).error_type == "promptgen.worker.JobTimeout"


def test_default_timeout_from_config(app, queue):
    app.config["QUEUE_DEFAULT_TIMEOUT"] = 0.2
    job_id = queue.enqueue(jobs_for_tests.sleep_for, 60, retries=0)

    Worker(app, queue).work(burst=True)

    assert queue.fetch_job(job_id).error_message == "job ran past its timeout of 0.2 s"


def test_job_within_timeout_finishes(app, queue):
    job_id = queue.enqueue(jobs_for_tests.sleep_for, 0.05, timeout=30)

    Worker(app, queue).work(burst=True)

    assert queue.fetch_job(job_id).result == "slept"


# Shutdown


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_stop_signal_releases_job_after_grace(app, queue, signal_name):
    stuck = queue.enqueue(jobs_for_tests.stop_then_sleep, signal_name, 60)
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2)
    started = time.monotonic()

    assert Worker(app, queue, grace_seconds=0.3).work() == 1

    released = queue.fetch_job(stuck)
    assert time.monotonic() - started < 30
    assert released.status == "queued"
    assert released.attempts == 0
    assert released.worker_id is None
    assert queue.fetch_job(waiting).status == "queued"


def test_job_finishing_within_grace_is_stored(app, queue):
    job_id = queue.enqueue(jobs_for_tests.stop_then_sleep, "SIGTERM", 0.1)

    assert Worker(app, queue, grace_seconds=30).work() == 1

    assert queue.fetch_job(job_id).result == "slept"


def test_sigterm_process_releases_job_after_grace(queue, queue_path, tmp_path, processes):
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    job_id = queue.enqueue(jobs_for_tests.block_until_file, str(release), str(starts))
    worker = start_worker("worker", queue_path, tmp_path, "--grace", "0.5")
    processes.append(worker)

    wait_for(starts.exists, message="the job to start")
    worker.popen.send_signal(signal.SIGTERM)

    assert worker.popen.wait(timeout=30) == 0, worker.log()
    job = queue.fetch_job(job_id)
    assert job.status == "queued"
    assert job.attempts == 0
    assert "released unfinished at shutdown" in worker.log()
    assert "stopped (SIGTERM) after 1 jobs" in worker.log()


# Concurrency: every job runs exactly once


def test_worker_threads_run_each_job_once(app, queue, tmp_path):
    job_count = 2000
    results = tmp_path / "results"
    results.mkdir()
    for number in range(job_count):
        queue.enqueue(jobs_for_tests.record_run_in_thread, str(results), number)
    workers = [Worker(app, Queue(queue.path)) for _ in range(4)]
    counts = []
    threads = [
        threading.Thread(target=lambda w=w: counts.append(w.work(burst=True))) for w in workers
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert read_runs(results) == list(range(job_count))
    assert sum(counts) == job_count
    assert queue.counts() == {"finished": job_count}
    assert len(list(results.iterdir())) > 1, "one thread ran every job, so no claims competed"


def test_flask_worker_concurrency_runs_each_job_once(queue, queue_path, tmp_path, processes):
    job_count = 3000
    results = tmp_path / "results"
    results.mkdir()
    for number in range(job_count):
        queue.enqueue(jobs_for_tests.record_run, str(results), number)
    worker = Process(
        "flask-worker",
        flask_command("worker", "--concurrency", "3", "--burst"),
        env={
            "PYTHONPATH": str(REPOSITORY),
            "QUEUE_DATABASE": str(queue_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}",
            "SECRET_KEY": "test secret key",
        },
        log_dir=tmp_path,
    )
    processes.append(worker)

    assert worker.popen.wait(timeout=120) == 0, worker.log()
    assert read_runs(results) == list(range(job_count))
    assert queue.counts() == {"finished": job_count}
    assert len(list(results.iterdir())) == 3
    assert "started 3 worker processes" in worker.log()


def test_pool_sigterm_stops_every_process(queue, queue_path, tmp_path, processes):
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    blocking = [
        queue.enqueue(jobs_for_tests.block_until_file, str(release), str(starts))
        for _ in range(2)
    ]
    pool = start_worker("pool", queue_path, tmp_path, "--concurrency", "2", "--grace", "30")
    processes.append(pool)

    wait_for(lambda: starts.exists() and len(starts.read_text().split()) == 2,
             message="both jobs to start")
    pool.popen.send_signal(signal.SIGTERM)
    release.touch()

    assert pool.popen.wait(timeout=60) == 0, pool.log()
    assert [queue.fetch_job(job_id).result for job_id in blocking] == ["released", "released"]
    assert pool.log().count("stopped (SIGTERM) after 1 jobs") == 2


# Crashes


def test_job_that_kills_its_worker_ends_failed(queue, queue_path, tmp_path, processes):
    starts = tmp_path / "starts"
    job_id = queue.enqueue(jobs_for_tests.kill_own_process, str(starts), retries=1)
    after = queue.enqueue(jobs_for_tests.add, 1, 2)
    pool = start_worker(
        "pool", queue_path, tmp_path, "--concurrency", "2", "--lease-seconds", "0.5"
    )
    processes.append(pool)

    failed = wait_for(
        lambda: _in_status(queue, job_id, "failed"), timeout=60, message="the job to fail"
    )
    wait_for(lambda: _in_status(queue, after, "finished"), message="the next job to finish")

    assert failed.attempts == 2
    assert failed.error_type == "WorkerDied"
    assert len(starts.read_text().split()) == 2
    assert "exited with status -9" in pool.log()


def _in_status(queue, job_id, status):
    job = queue.fetch_job(job_id)
    return job if job.status == status else None
