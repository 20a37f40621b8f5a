"""Tests of `flask --app promptgen queue ...` and the worker's options, on a real queue file."""

import datetime
import re
import shutil
import sqlite3
import subprocess
import time

import pytest

from promptgen.queue import Queue
from promptgen.queue_schema import SCHEMA_VERSION

from . import jobs_for_tests


#: One invocation of each `queue` subcommand that opens the queue file.
QUEUE_COMMANDS = [
    ("stats",),
    ("failed",),
    ("show", "1-abc"),
    ("retry", "--all"),
    ("retry", "1-abc"),
    ("cancel", "1-abc"),
    ("purge", "--yes"),
    ("prune",),
    ("enqueue",),
]


@pytest.fixture
def queue(app):
    queue = Queue(app.config["QUEUE_DATABASE"])
    # The commands reject a missing file, so create it as a worker would.
    queue.counts()
    yield queue
    queue.close()


@pytest.fixture
def run(app, queue):
    runner = app.test_cli_runner()

    def invoke(*args, input=None):
        return runner.invoke(args=list(args), input=input, catch_exceptions=False)

    return invoke


def _fail(queue, name="default", message="boom", key=None):
    job_id = queue.enqueue(jobs_for_tests.raise_error, message, queue=name, retries=0, key=key)
    job = queue.claim("cli-test", queues=[name])
    try:
        job.perform()
    except RuntimeError as error:
        queue.fail(job, error)
    return job_id


def _finish(queue, name="default"):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2, queue=name)
    queue.finish(queue.claim("cli-test", queues=[name]), 3)
    return job_id


def test_stats_on_empty_queue(run):
    result = run("queue", "stats")

    assert result.exit_code == 0
    assert "(no jobs)" in result.output
    assert "oldest waiting job: none" in result.output
    assert "jobs per minute (last 5 min): 0.0" in result.output
    assert "mean wait (last 5 min): n/a" in result.output


def test_stats_per_queue_and_status(run, queue):
    _finish(queue)
    _fail(queue, "urgent")
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")

    result = run("queue", "stats")

    lines = result.output.splitlines()
    assert result.exit_code == 0
    assert re.search(r"^queue\s+queued\s+finished\s+failed$", lines[1])
    assert re.search(r"^default\s+0\s+1\s+0$", lines[2])
    assert re.search(r"^urgent\s+1\s+0\s+1$", lines[3])
    assert f"oldest waiting job: {waiting} in urgent, waiting " in result.output
    assert "jobs per minute (last 5 min): 0.4" in result.output
    assert re.search(r"mean run time \(last 5 min\): \d+ ms", result.output)


def test_failed_lists_errors(run, queue):
    job_id = _fail(queue, message="bad prompt")

    result = run("queue", "failed")
    with_traceback = run("queue", "failed", "--traceback")

    assert result.exit_code == 0
    assert f"{job_id} tests.jobs_for_tests:raise_error queue default, 1 of 1 attempts" in (
        result.output
    )
    assert result.output.rstrip().endswith("RuntimeError: bad prompt")
    assert "Traceback (most recent call last):" not in result.output
    assert "Traceback (most recent call last):" in with_traceback.output


def test_failed_when_none(run):
    assert run("queue", "failed").output == "no failed jobs\n"


def test_retry_one_job(run, queue):
    job_id = _fail(queue)

    result = run("queue", "retry", job_id)

    assert result.exit_code == 0
    assert result.output == f"queued job {job_id} again\n"
    assert queue.fetch_job(job_id).status == "queued"
    assert queue.fetch_job(job_id).attempts == 0


def test_retry_rejects_job_in_other_status(run, queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)

    result = run("queue", "retry", job_id)
    missing = run("queue", "retry", "no-such-id")

    assert result.exit_code == 1
    assert f"job {job_id} is queued, not failed or canceled" in result.output
    assert "job no-such-id not found" in missing.output


def test_retry_all(run, queue):
    failed = [_fail(queue), _fail(queue, "urgent")]
    finished = _finish(queue)

    result = run("queue", "retry", "--all")

    assert result.output == "queued 2 failed jobs again\n"
    assert [queue.fetch_job(job_id).status for job_id in failed] == ["queued", "queued"]
    assert queue.fetch_job(finished).status == "finished"


def test_retry_all_reports_jobs_held_by_key(run, queue):
    held_by_waiting = _fail(queue, key="render-1")
    first_of_pair = _fail(queue, key="render-2")
    second_of_pair = _fail(queue, key="render-2")
    without_key = _fail(queue)
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2, key="render-1")

    result = run("queue", "retry", "--all")

    statuses = {
        job_id: queue.fetch_job(job_id).status
        for job_id in (held_by_waiting, first_of_pair, second_of_pair, without_key)
    }
    assert result.exit_code == 0
    assert result.output == (
        "queued 2 failed jobs again\n"
        "2 failed jobs stayed failed, because another waiting or running job has the same key\n"
    )
    assert statuses[held_by_waiting] == "failed"
    assert sorted([statuses[first_of_pair], statuses[second_of_pair]]) == ["failed", "queued"]
    assert statuses[without_key] == "queued"
    assert queue.fetch_job(waiting).status == "queued"


def test_retry_all_queue_ignores_others(run, queue):
    _fail(queue, key="render-1")
    urgent = _fail(queue, "urgent", key="render-2")
    queue.enqueue(jobs_for_tests.add, 1, 2, key="render-1")

    result = run("queue", "retry", "--all", "--queue", "urgent")

    assert result.exit_code == 0
    assert result.output == "queued 1 failed jobs again\n"
    assert queue.fetch_job(urgent).status == "queued"


def test_retry_needs_id_or_all(run):
    result = run("queue", "retry")

    assert result.exit_code == 2
    assert "give a job id or --all" in result.output


def test_cancel(run, queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2, delay=60)

    result = run("queue", "cancel", job_id)
    again = run("queue", "cancel", job_id)

    assert result.output == f"canceled job {job_id}\n"
    assert queue.fetch_job(job_id).status == "canceled"
    assert again.exit_code == 1
    assert f"job {job_id} is canceled, not queued or scheduled" in again.output


def test_show_failed_job(run, queue):
    job_id = _fail(queue, message="boom")
    job = queue.fetch_job(job_id)
    started = datetime.datetime.fromtimestamp(job.started_at, datetime.UTC)
    ended = datetime.datetime.fromtimestamp(job.ended_at, datetime.UTC)
    enqueued = datetime.datetime.fromtimestamp(job.enqueued_at, datetime.UTC)

    result = run("queue", "show", job_id)

    lines = result.output.splitlines()
    assert result.exit_code == 0
    assert lines[:16] == [
        f"id:          {job_id}",
        "status:      failed",
        "queue:       default",
        "function:    tests.jobs_for_tests:raise_error",
        'args:        ["boom"]',
        "kwargs:      {}",
        "key:         none",
        "attempts:    1 of 1",
        "timeout:     worker default",
        f"enqueued:    {enqueued:%Y-%m-%d %H:%M:%S} UTC",
        f"run at:      {enqueued:%Y-%m-%d %H:%M:%S} UTC",
        f"started:     {started:%Y-%m-%d %H:%M:%S} UTC",
        f"ended:       {ended:%Y-%m-%d %H:%M:%S} UTC",
        "worker:      cli-test",
        "lease until: n/a",
        "result:      null",
    ]
    assert lines[16] == "error:       RuntimeError: boom"
    assert lines[17] == ""
    assert lines[18] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"


def test_show_unknown_job(run, queue):
    result = run("queue", "show", "1-abc")

    assert result.exit_code == 1
    assert result.output == "Error: job 1-abc not found\n"


def test_cancel_started_job(run, queue):
    running = queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")
    abandoned = queue.enqueue(jobs_for_tests.add, 3, 4)
    lease_until = queue.claim("live-worker", queues=["urgent"]).lease_until
    # Claimed long enough ago that the lease has expired.
    queue.claim("dead-worker", now=time.time() - 2 * queue.lease_seconds, queues=["default"])
    lease_end = datetime.datetime.fromtimestamp(lease_until, datetime.UTC)

    rejected = run("queue", "cancel", running)
    result = run("queue", "cancel", abandoned)

    assert rejected.exit_code == 1
    assert rejected.output == (
        f"Error: job {running} is started and its worker renews the lease until"
        f" {lease_end:%Y-%m-%d %H:%M:%S} UTC. Stop that worker, or cancel the job after the"
        " lease has expired.\n"
    )
    assert queue.fetch_job(running).status == "started"
    assert result.output == f"canceled job {abandoned}\n"
    assert queue.fetch_job(abandoned).status == "canceled"


def test_purge_ended_jobs(run, queue):
    _finish(queue)
    _fail(queue)
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2)

    result = run("queue", "purge", "--yes")

    assert result.output == "deleted 2 jobs\n"
    assert queue.counts() == {"queued": 1}
    assert queue.fetch_job(waiting).status == "queued"


def test_purge_asks_for_confirmation(run, queue):
    queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")

    declined = run("queue", "purge", "--status", "queued", input="n\n")
    accepted = run("queue", "purge", "--status", "queued", "--queue", "urgent", input="y\n")

    assert declined.exit_code == 1
    assert "Delete every queued job?" in declined.output
    assert queue.counts() == {}
    assert "Delete every queued job in queue urgent?" in accepted.output
    assert "deleted 1 jobs" in accepted.output


def test_enqueue_noop_then_worker_runs_it(run, queue):
    result = run("queue", "enqueue", "--queue", "urgent")
    job_id = result.output.strip()

    job = queue.fetch_job(job_id)
    assert job.func == "promptgen.queue_admin:noop"
    assert job.queue == "urgent"

    worker = run("worker", "--burst", "--queues", "urgent")
    assert worker.exit_code == 0
    assert queue.fetch_job(job_id).result == "ok"


def test_enqueue_with_delay(run, queue):
    before = time.time()
    job_id = run("queue", "enqueue", "--delay", "30").output.strip()

    job = queue.fetch_job(job_id)
    assert job.status == "scheduled"
    assert job.run_at >= before + 30


def test_prune_command(run, queue, app):
    app.config["QUEUE_KEEP_FINISHED_SECONDS"] = 0
    _finish(queue)
    failed = _fail(queue)

    result = run("queue", "prune")

    assert result.output == "deleted 1 old jobs\n"
    assert queue.fetch_job(failed).status == "failed"


def test_worker_queues_option_limits_claims(run, queue):
    urgent = queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")
    default = queue.enqueue(jobs_for_tests.add, 1, 2)

    result = run("worker", "--burst", "--queues", "urgent")

    assert result.exit_code == 0
    assert queue.fetch_job(urgent).status == "finished"
    assert queue.fetch_job(default).status == "queued"


def test_worker_rejects_empty_queues_option(run):
    result = run("worker", "--burst", "--queues", " , ")

    assert result.exit_code == 2
    assert "no queue names" in result.output


def test_enqueue_warns_of_unlisted_queue(run, queue):
    result = run("queue", "enqueue", "--queue", "nosuchqueue")

    job_id = result.output.strip().splitlines()[-1]
    assert queue.fetch_job(job_id).queue == "nosuchqueue"
    assert (
        "warning: queue 'nosuchqueue' is not in QUEUE_PRIORITIES (critical, urgent, default),"
        " so only a worker started with --queues naming it takes this job."
        " Queue names are case-sensitive."
    ) in result.output


def test_worker_warns_of_unlisted_queue(run):
    result = run("worker", "--burst", "--queues", "URGENT,default")

    assert result.exit_code == 0
    assert (
        "warning: queue 'URGENT' is not in QUEUE_PRIORITIES (critical, urgent, default),"
        " so this worker weights it 1. Queue names are case-sensitive."
    ) in result.output


def test_listed_queue_gets_no_warning(run):
    result = run("queue", "enqueue", "--queue", "urgent")

    assert "warning" not in result.output


@pytest.mark.parametrize("job_id", ["²-abc", "x-abc", "1-"])
def test_malformed_id_not_found(run, job_id):
    cancel = run("queue", "cancel", job_id)
    retry = run("queue", "retry", job_id)

    assert cancel.exit_code == 1
    assert cancel.output == f"Error: job {job_id} not found\n"
    assert retry.exit_code == 1
    assert retry.output == f"Error: job {job_id} not found\n"


def test_enqueue_rejects_empty_queue_name(run):
    result = run("queue", "enqueue", "--queue", "")

    assert result.exit_code == 2
    assert "Invalid value for --queue: queue must be a non-empty string, got ''" in result.output


@pytest.mark.parametrize("name", ["urgent,default", " urgent", "urgent "])
def test_enqueue_rejects_unnamable_queue(run, queue, name):
    result = run("queue", "enqueue", "--queue", name)

    assert result.exit_code == 2
    assert "Invalid value for --queue: queue name " in result.output
    assert f"got {name!r}" in result.output
    assert queue.counts() == {}


@pytest.mark.parametrize(
    ("delay", "shown"), [("inf", "inf"), ("-inf", "-inf"), ("nan", "nan"), ("-1", "-1.0")]
)
def test_enqueue_rejects_invalid_delay(run, queue, delay, shown):
    result = run("queue", "enqueue", "--delay", delay)

    assert result.exit_code == 2
    assert (
        "Invalid value for --delay: delay must be a finite number of seconds, zero or more,"
        f" got {shown}"
    ) in result.output
    assert queue.counts() == {}


def test_enqueue_rejects_delay_past_year_9999(run, queue):
    # About 31,700 years.
    result = run("queue", "enqueue", "--delay", "1e12")

    assert result.exit_code == 2
    assert "Invalid value for --delay: delay " in result.output
    assert "got 1000000000000.0" in result.output
    assert "--queue" not in result.output
    assert queue.counts() == {}


@pytest.mark.parametrize("command", QUEUE_COMMANDS, ids=" ".join)
def test_missing_queue_file_rejected(run, app, tmp_path, command):
    missing_folder = tmp_path / "missing"
    path = missing_folder / "folder" / "queue.sqlite3"
    app.config["QUEUE_DATABASE"] = str(path)

    result = run("queue", *command)

    assert result.exit_code == 1
    assert result.output == (
        f"Error: queue file {path} not found. Check QUEUE_DATABASE,"
        " or start a worker once to create it.\n"
    )
    assert not missing_folder.exists()


@pytest.mark.parametrize("command", QUEUE_COMMANDS, ids=" ".join)
def test_text_file_rejected(run, app, tmp_path, command):
    path = tmp_path / "notes.txt"
    path.write_text("not a queue\n")
    app.config["QUEUE_DATABASE"] = str(path)

    result = run("queue", *command)

    assert result.exit_code == 1
    assert result.output == (
        f"Error: queue file {path} failed: file is not a database."
        " Check that QUEUE_DATABASE names the queue's SQLite file.\n"
    )
    assert path.read_text() == "not a queue\n"


def test_folder_rejected(run, app, tmp_path):
    path = tmp_path / "queue-folder"
    path.mkdir()
    app.config["QUEUE_DATABASE"] = str(path)

    result = run("queue", "stats")

    assert result.exit_code == 1
    assert result.output == (
        f"Error: queue file {path} failed: unable to open database file."
        " Check that QUEUE_DATABASE names a file, not a folder, and that this user can read it.\n"
    )
    assert list(path.iterdir()) == []


def test_newer_schema_version_rejected(run, app, tmp_path):
    path = tmp_path / "newer.sqlite3"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    app.config["QUEUE_DATABASE"] = str(path)

    result = run("queue", "stats")

    lines = result.output.splitlines()
    assert result.exit_code == 1
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert str(path) in lines[0]
    assert f"schema version {SCHEMA_VERSION + 1}" in lines[0]
    assert lines[0].endswith("Upgrade promptgen.")


@pytest.fixture
def immutable_queue_file(queue):
    """Mark the queue file immutable, which stops writes even by root, or skip the test."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    marked = subprocess.run([chattr, "+i", queue.path], capture_output=True, text=True)
    if marked.returncode != 0:
        pytest.skip(f"chattr +i failed: {marked.stderr.strip()}")
    try:
        yield queue.path
    finally:
        subprocess.run([chattr, "-i", queue.path], check=True)


def test_enqueue_on_readonly_file_rejected(run, queue, immutable_queue_file):
    result = run("queue", "enqueue")

    assert result.exit_code == 1
    assert result.output == (
        f"Error: queue file {immutable_queue_file} failed: attempt to write a readonly"
        " database. Check that this user can write the file and its folder.\n"
    )
    assert queue.counts() == {}
