"""Tests of worker timeouts, shutdown, concurrency and crashes, in threads and real processes."""

import logging
import os
import re
import signal
import sys
import threading
import time

import pytest

from promptgen.queue import Queue
from promptgen.worker import Worker
from promptgen.worker_pool import KILL_MARGIN_SECONDS, PARENT_POLL_SECONDS

from . import jobs_for_tests
from .queue_support import (  # noqa: F401 (app, processes, queue_path and real_clock_queue are fixtures)
    REPOSITORY,
    app,
    processes,
    queue_path,
    real_clock_queue,
    start_flask_worker,
    start_worker,
)
from .support import Process, is_running, kill_if_running, wait_for

#: A script that makes itself a session leader, so a signal sent to its process group
#: reaches no other process, and then runs Python with the remaining arguments.
SESSION_LEADER_SCRIPT = """
import os, sys
os.setsid()
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

GRACE_LINE = (
    "worker {worker_id} received {signal}: finishing the current job within the grace period"
    " of 30 s; send the signal again to stop now"
)
AGAIN_LINE = (
    "worker {worker_id} received {signal} again: stopping now and releasing the current job"
)

#: A script that runs ParentWatch with its own PID as the parent's, which makes the
#: watch act as if the parent had exited.
PARENT_WATCH_SCRIPT = """
import os, signal, time
from promptgen.worker_pool import ParentWatch

signal.signal(signal.SIGTERM, lambda signum, frame: print("SIGTERM received", flush=True))
ParentWatch(os.getpid(), kill_after_seconds=0.2, send_sigterm=True, poll_seconds=0.01).start()
time.sleep(60)
"""


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



def test_short_timeout_after_long_timeout_job(app, queue):
    queue.enqueue(jobs_for_tests.add, 1, 2, timeout=600)
    slow = queue.enqueue(jobs_for_tests.sleep_for, 60, timeout=0.3, retries=0)

    Worker(app, queue).work(burst=True)

    failed = queue.fetch_job(slow)
    assert failed.error_message == "job ran past its timeout of 0.3 s"
    assert failed.duration_seconds < 5


def test_earlier_short_timeout_spares_next_job(app, queue):
    queue.enqueue(jobs_for_tests.sleep_for, 0.01, timeout=0.2)
    longer = queue.enqueue(jobs_for_tests.sleep_for, 0.5, timeout=30)

    Worker(app, queue).work(burst=True)

    finished = queue.fetch_job(longer)
    assert finished.status == "finished"
    assert finished.result == "slept"


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


@pytest.mark.parametrize(
    "signal_names", [("SIGTERM", "SIGTERM"), ("SIGINT", "SIGINT"), ("SIGINT", "SIGTERM")]
)
def test_second_signal_releases_job_at_once(app, queue, caplog, signal_names):
    caplog.set_level(logging.INFO, logger="promptgen")
    stuck = queue.enqueue(jobs_for_tests.stop_repeatedly_then_sleep, list(signal_names), 60)
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2)
    worker = Worker(app, queue, worker_id="test-worker", grace_seconds=30)
    started = time.monotonic()

    assert worker.work() == 1

    assert time.monotonic() - started < 10
    released = queue.fetch_job(stuck)
    assert released.status == "queued"
    assert released.attempts == 0
    assert released.worker_id is None
    assert queue.fetch_job(waiting).status == "queued"
    messages = [record.getMessage() for record in caplog.records]
    first, second = signal_names
    assert messages.count(GRACE_LINE.format(worker_id="test-worker", signal=first)) == 1
    assert messages.count(AGAIN_LINE.format(worker_id="test-worker", signal=second)) == 1
    released_lines = [
        line for line in messages if line.endswith(": released unfinished at shutdown")
    ]
    assert len(released_lines) == 1
    assert released_lines[0].startswith(f"job {stuck} ")
    assert messages[-1] == f"worker test-worker stopped ({first}) after 1 jobs"
    assert len(messages) == 5


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


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_second_signal_stops_flask_worker(queue, queue_path, tmp_path, processes, signal_name):
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    job_id = queue.enqueue(jobs_for_tests.block_until_file, str(release), str(starts))
    worker = start_flask_worker("flask-worker", queue_path, tmp_path, "--grace", "30")
    processes.append(worker)
    stop_signal = signal.Signals[signal_name]

    worker_id = wait_for(
        lambda: re.search(r"worker (\S+) started: pid", worker.log()), message="the worker to start"
    ).group(1)
    wait_for(starts.exists, message="the job to start")
    worker.popen.send_signal(stop_signal)
    grace_line = GRACE_LINE.format(worker_id=worker_id, signal=signal_name)
    wait_for(lambda: grace_line in worker.log(), message="the first signal's log line")
    worker.popen.send_signal(stop_signal)

    # The grace period is 30 s, so an exit within 15 s comes from the second signal.
    assert worker.popen.wait(timeout=15) == 0, worker.log()
    job = queue.fetch_job(job_id)
    assert job.status == "queued"
    assert job.attempts == 0
    assert job.worker_id is None
    log = worker.log()
    assert log.count(grace_line) == 1
    assert log.count(AGAIN_LINE.format(worker_id=worker_id, signal=signal_name)) == 1
    assert log.count(f"job {job_id} ") == 1
    assert log.count("released unfinished at shutdown") == 1
    assert log.count(f"worker {worker_id} stopped ({signal_name}) after 1 jobs") == 1


def test_pool_second_sigterm_releases_jobs(queue, queue_path, tmp_path, processes):
    starts = tmp_path / "starts"
    blocking = _enqueue_blocking_jobs(queue, tmp_path / "release", starts, count=2)
    pool = start_worker("pool", queue_path, tmp_path, "--concurrency", "2", "--grace", "30")
    processes.append(pool)

    wait_for(lambda: starts.exists() and len(starts.read_text().split()) == 2,
             message="both jobs to start")
    pool.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: pool.log().count("received SIGTERM: finishing the current job") == 2,
             message="both worker processes to log the first signal")
    pool.popen.send_signal(signal.SIGTERM)

    assert pool.popen.wait(timeout=15) == 0, pool.log()
    jobs = [queue.fetch_job(job_id) for job_id in blocking]
    assert [job.status for job in jobs] == ["queued", "queued"]
    assert [job.attempts for job in jobs] == [0, 0]
    log = pool.log()
    assert log.count("received SIGTERM again: stopping now and releasing the current job") == 2
    assert log.count("released unfinished at shutdown") == 2
    assert log.count("stopped (SIGTERM) after 1 jobs") == 2


def test_pool_group_sigint_counts_once(queue, queue_path, tmp_path, processes):
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    blocking = _enqueue_blocking_jobs(queue, release, starts, count=2)
    # A terminal's Ctrl-C sends SIGINT to every process in the foreground process
    # group, so the pool gets its own group here and the test signals that group.
    pool = Process(
        "pool",
        [
            sys.executable, "-c", SESSION_LEADER_SCRIPT,
            "-m", "tests.queue_app", str(queue_path), "--concurrency", "2", "--grace", "30",
        ],
        env={"PYTHONPATH": str(REPOSITORY)},
        log_dir=tmp_path,
    )
    processes.append(pool)

    wait_for(lambda: starts.exists() and len(starts.read_text().split()) == 2,
             message="both jobs to start")
    os.killpg(pool.popen.pid, signal.SIGINT)
    wait_for(lambda: pool.log().count("received SIGINT: finishing the current job") == 2,
             message="both worker processes to log the signal")
    release.touch()

    assert pool.popen.wait(timeout=30) == 0, pool.log()
    jobs = [queue.fetch_job(job_id) for job_id in blocking]
    assert [job.status for job in jobs] == ["finished", "finished"]
    assert [job.result for job in jobs] == ["released", "released"]
    log = pool.log()
    assert "received SIGINT again" not in log
    assert log.count("stopped (SIGINT) after 1 jobs") == 2


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
    worker = start_flask_worker(
        "flask-worker", queue_path, tmp_path, "--concurrency", "3", "--burst"
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


# Children of a pool process killed with SIGKILL stop as on SIGTERM


@pytest.fixture
def orphan_pids():
    """Collect PIDs of pool children, and SIGKILL each one still running after the test."""
    pids = []
    yield pids
    for pid in pids:
        kill_if_running(pid)


def _kill_pool_with_blocked_children(queue_path, tmp_path, grace, processes, orphan_pids):
    """Start a pool of 2, wait until both children block in a job, and SIGKILL the pool.

    Returns the pool's Process and the children's PIDs.
    """
    pool = start_flask_worker(
        "pool", queue_path, tmp_path, "--concurrency", "2", "--grace", str(grace)
    )
    processes.append(pool)
    children = _wait_for_blocked_children(pool, tmp_path / "starts", orphan_pids)

    pool.popen.kill()
    assert pool.popen.wait(timeout=30) == -signal.SIGKILL
    return pool, children


def test_killed_pool_children_finish_jobs(queue, queue_path, tmp_path, processes, orphan_pids):
    grace = 30.0
    release = tmp_path / "release"
    blocking = _enqueue_blocking_jobs(queue, release, tmp_path / "starts", count=2)
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2)
    pool, children = _kill_pool_with_blocked_children(
        queue_path, tmp_path, grace, processes, orphan_pids
    )
    release.touch()
    _wait_for_exit(children, timeout=grace + KILL_MARGIN_SECONDS)

    jobs = [queue.fetch_job(job_id) for job_id in blocking]
    assert [job.status for job in jobs] == ["finished", "finished"]
    assert [job.result for job in jobs] == ["released", "released"]
    assert [job.attempts for job in jobs] == [1, 1]
    assert queue.fetch_job(waiting).status == "queued"
    assert queue.fetch_job(waiting).attempts == 0
    assert pool.log().count("stopped (SIGTERM) after 1 jobs") == 2, pool.log()
    assert pool.log().count("stopped because pool process") == 2, pool.log()


def test_killed_pool_children_release_jobs(queue, queue_path, tmp_path, processes, orphan_pids):
    grace = 0.5
    blocking = _enqueue_blocking_jobs(queue, tmp_path / "release", tmp_path / "starts", count=2)
    pool, children = _kill_pool_with_blocked_children(
        queue_path, tmp_path, grace, processes, orphan_pids
    )
    _wait_for_exit(children, timeout=grace + KILL_MARGIN_SECONDS)

    jobs = [queue.fetch_job(job_id) for job_id in blocking]
    assert [job.status for job in jobs] == ["queued", "queued"]
    assert [job.attempts for job in jobs] == [0, 0]
    assert [job.worker_id for job in jobs] == [None, None]
    assert pool.log().count("released unfinished at shutdown") == 2, pool.log()
    assert pool.log().count("stopped (SIGTERM) after 1 jobs") == 2, pool.log()
    assert pool.log().count("stopped because pool process") == 2, pool.log()


def test_killed_pool_children_kill_stuck_jobs(queue, queue_path, tmp_path, processes, orphan_pids):
    grace = 0.5
    starts = tmp_path / "starts"
    stuck = [queue.enqueue(sleep_through_shutdown, str(starts), 60) for _ in range(2)]
    pool = start_flask_worker(
        "pool", queue_path, tmp_path, "--concurrency", "2", "--grace", str(grace)
    )
    processes.append(pool)
    children = _wait_for_blocked_children(pool, starts, orphan_pids)

    pool.popen.kill()
    assert pool.popen.wait(timeout=30) == -signal.SIGKILL
    _wait_for_exit(children, timeout=grace + KILL_MARGIN_SECONDS + PARENT_POLL_SECONDS + 5)

    jobs = [queue.fetch_job(job_id) for job_id in stuck]
    assert [job.status for job in jobs] == ["started", "started"]
    assert [job.attempts for job in jobs] == [1, 1]
    kill_message = f"still running {grace + KILL_MARGIN_SECONDS:g} s after pool process"
    assert pool.log().count(kill_message) == 2, pool.log()
    assert "stopped (SIGTERM)" not in pool.log()


def test_parent_watch_sends_sigterm_then_sigkill(tmp_path, processes):
    watched = Process(
        "parent-watch", [sys.executable, "-c", PARENT_WATCH_SCRIPT], env={}, log_dir=tmp_path
    )
    processes.append(watched)

    assert watched.popen.wait(timeout=30) == -signal.SIGKILL, watched.log()
    assert "SIGTERM received" in watched.log()
    assert f"pool process {watched.popen.pid} exited, sending SIGTERM" in watched.log()
    assert "still running 0.2 s after pool process" in watched.log()


def sleep_through_shutdown(starts_path, seconds):
    """Append this pid to starts_path, then sleep, swallowing the shutdown interrupt.

    It stands for a job that the worker can't interrupt, such as one blocked in C code.
    """
    with open(starts_path, "a") as file:
        file.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except BaseException:
            pass


def _enqueue_blocking_jobs(queue, release, starts, count):
    return [
        queue.enqueue(jobs_for_tests.block_until_file, str(release), str(starts))
        for _ in range(count)
    ]


def _wait_for_blocked_children(pool, starts, orphan_pids):
    """Wait until each of the pool's two children runs a blocking job, and return their PIDs.

    The PIDs go into orphan_pids as soon as the pool logs them, so that the test kills
    the children even when it fails before the pool is killed.
    """
    started = wait_for(
        lambda: re.search(r"started 2 worker processes: (\d+), (\d+)", pool.log()),
        message="the pool to start its worker processes",
    )
    children = sorted(int(pid) for pid in started.groups())
    orphan_pids.extend(children)
    wait_for(
        lambda: starts.exists() and len(starts.read_text().split()) == 2,
        message="both jobs to start",
    )
    assert sorted(int(pid) for pid in starts.read_text().split()) == children
    return children


def _wait_for_exit(pids, timeout):
    wait_for(
        lambda: not any(is_running(pid) for pid in pids),
        timeout=timeout,
        message=f"worker processes {pids} to exit",
    )


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
