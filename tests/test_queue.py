"""Tests of the SQLite job queue: enqueue, claim order, leases, retries and storage."""

import functools
import math
import multiprocessing
import os
import re
import sqlite3
import sys
import threading

import pytest
from flask import Flask

from promptgen import queue as queue_module
from promptgen import queue_admin
from promptgen.queue import (
    DEFAULT_MAX_ATTEMPTS,
    RETRY_BACKOFF_BASE_SECONDS,
    RETRY_BACKOFF_MAX_SECONDS,
    SCHEMA_VERSION,
    Queue,
    retry_delay,
)
from promptgen.queue_schema import PAGE_SIZE_BYTES, open_connection

from . import jobs_for_tests
# The clock, queue_path and queue fixtures come from queue_support.
from .queue_support import LEASE, START, clock, queue, queue_path  # noqa: F401

JOBS = jobs_for_tests.__name__


def test_enqueue_fetch_round_trip(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 2, b=3)
    job = queue.fetch_job(job_id)

    assert isinstance(job_id, str)
    assert job.id == job_id
    assert job.func == f"{JOBS}:add"
    assert job.args == [2]
    assert job.kwargs == {"b": 3}
    assert job.queue == "default"
    assert job.status == "queued"
    assert job.priority == 0
    assert job.attempts == 0
    assert job.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert job.run_at == START
    assert job.enqueued_at == START
    assert job.lease_until is None
    assert job.worker_id is None
    assert job.result is None
    assert job.error is None
    assert job.started_at is None
    assert job.ended_at is None
    assert job.perform() == 5


def test_enqueue_ids_are_unique(queue):
    ids = {queue.enqueue(jobs_for_tests.add, 1, 1) for _ in range(20)}

    assert len(ids) == 20


def test_enqueue_accepts_function_string(queue):
    job = queue.fetch_job(queue.enqueue(f"{JOBS}:add", 4, 5))

    assert job.func == f"{JOBS}:add"
    assert job.perform() == 9


def test_enqueue_accepts_static_method(queue):
    job = queue.fetch_job(queue.enqueue(jobs_for_tests.Tasks.multiply, 3, 4))

    assert job.func == f"{JOBS}:Tasks.multiply"
    assert job.perform() == 12


def test_enqueue_call_options(queue):
    job_id = queue.enqueue_call(
        jobs_for_tests.add,
        args=(1,),
        kwargs={"b": 2},
        queue="images",
        priority=7,
        delay=12.5,
        max_attempts=5,
    )
    job = queue.fetch_job(job_id)

    assert job.args == [1]
    assert job.kwargs == {"b": 2}
    assert job.queue == "images"
    assert job.priority == 7
    assert job.run_at == START + 12.5
    assert job.enqueued_at == START
    assert job.max_attempts == 5


def test_enqueue_reserves_option_names(queue):
    job_id = queue.enqueue(jobs_for_tests.echo, queue="q", priority=1, delay=2)
    job = queue.fetch_job(job_id)

    assert job.kwargs == {"priority": 1}
    assert job.queue == "q"
    assert job.priority == 0
    assert job.run_at == START + 2
    assert set(queue_module.RESERVED_OPTIONS) == {
        "queue", "at", "delay", "retries", "timeout", "key",
    }  # fmt: skip


def test_enqueue_call_passes_option_names_to_job(queue):
    kwargs = {"queue": "q", "at": 1, "delay": 2, "retries": 3, "timeout": 4, "key": "k"}
    job_id = queue.enqueue_call(jobs_for_tests.echo, kwargs=kwargs)
    job = queue.fetch_job(job_id)

    assert job.kwargs == kwargs
    assert job.queue == "default"
    assert job.run_at == START
    assert job.key is None
    assert job.timeout is None


def test_arguments_round_trip_as_json(queue):
    arguments = {
        "text": "é ünïcode",
        "number": 1.5,
        "flag": True,
        "nothing": None,
        "nested": {"list": [1, [2, 3]], "pair": (4, 5)},
    }
    job = queue.fetch_job(queue.enqueue(jobs_for_tests.echo, (1, 2), "x", **arguments))

    assert job.args == [[1, 2], "x"]
    assert job.kwargs["nested"] == {"list": [1, [2, 3]], "pair": [4, 5]}
    assert job.kwargs["text"] == "é ünïcode"
    assert job.kwargs["number"] == 1.5
    assert job.kwargs["flag"] is True
    assert job.kwargs["nothing"] is None


def test_job_id_is_row_number_and_token(queue):
    first = queue.enqueue(jobs_for_tests.add, 1, 2)
    second = queue.enqueue(jobs_for_tests.add, 3, 4)

    assert re.fullmatch(r"1-[0-9a-f]{12}", first)
    assert re.fullmatch(r"2-[0-9a-f]{12}", second)


@pytest.mark.parametrize(
    "job_id",
    ["", "1", "1-", "-abc", "x-abc", "-1-abc", "²-abc", "١-abc", "99999999999999999999-abc", None, 1],
)
def test_malformed_job_id_finds_nothing(queue, job_id):
    queue.enqueue(jobs_for_tests.add, 1, 2)

    assert queue.fetch_job(job_id) is None
    assert queue.cancel(job_id) is False
    assert queue.requeue(job_id) is False


def test_stale_id_after_row_reuse(queue):
    old_id = queue.enqueue(jobs_for_tests.add, 1, 2)
    queue.cancel(old_id)
    queue_admin.purge(queue)

    new_id = queue.enqueue(jobs_for_tests.add, 3, 4)

    assert new_id.split("-")[0] == old_id.split("-")[0]
    assert queue.fetch_job(old_id) is None
    assert queue.cancel(old_id) is False
    assert queue.fetch_job(new_id).status == "queued"


def test_fetch_unknown_job_returns_none(queue):
    assert queue.fetch_job("no-such-id") is None


def _function_in_main():
    return None


_function_in_main.__module__ = "__main__"


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (lambda: None, "lambda or nested function"),
        (jobs_for_tests.make_nested_function(), "lambda or nested function"),
        (jobs_for_tests.Tasks().instance_method, "cannot be imported as"),
        (functools.partial(jobs_for_tests.add, 1), "no module and qualified name"),
        (_function_in_main, "defined in __main__"),
        ("jobs_for_tests.add", "expected 'module:qualname'"),
        (":add", "expected 'module:qualname'"),
        ("jobs_for_tests:", "expected 'module:qualname'"),
    ],
    ids=["lambda", "nested", "bound-method", "partial", "main", "dotted", "no-module", "no-name"],
)
def test_enqueue_rejects_unimportable_function(queue, func, message):
    with pytest.raises(ValueError, match=message):
        queue.enqueue(func)

    assert queue.counts() == {}


def test_enqueue_rejects_non_callable(queue):
    message = "must be a callable or a 'module:qualname' string, not int"
    with pytest.raises(TypeError, match=message):
        queue.enqueue(42)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (({1, 2},), {}, r"args\[0\] is a set, which is not JSON-serializable"),
        ((), {"when": object()}, r"kwargs\['when'\] is a object"),
        ((b"bytes",), {}, r"args\[0\] is a bytes"),
        ((math.nan,), {}, r"args\[0\] is nan, which JSON cannot represent"),
        (([1, math.inf],), {}, r"args\[0\]\[1\] is inf"),
        (({1: "a"},), {}, r"args\[0\] has key 1 of type int, but JSON object keys must be"),
        ((), {"data": {"deep": [{"x": {3}}]}}, r"kwargs\['data'\]\['deep'\]\[0\]\['x'\] is a set"),
    ],
    ids=["set", "object", "bytes", "nan", "inf", "int-key", "deep"],
)
def test_enqueue_rejects_non_json_arguments(queue, args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        queue.enqueue(jobs_for_tests.echo, *args, **kwargs)

    assert queue.counts() == {}


def test_enqueue_call_rejects_non_dict_kwargs(queue):
    with pytest.raises(TypeError, match="job kwargs must be a dict, not list"):
        queue.enqueue_call(jobs_for_tests.echo, kwargs=[1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"queue": 5}, "queue must be a non-empty string"),
        ({"priority": 1.5}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ({"delay": -1}, "delay must be zero or more seconds"),
        ({"delay": math.inf}, "delay must be a finite number of seconds"),
        ({"delay": "5"}, "delay must be a number of seconds"),
        ({"max_attempts": 0}, "max_attempts must be an integer of 1 or more"),
        ({"max_attempts": 2.0}, "max_attempts must be an integer of 1 or more"),
    ],
)
def test_enqueue_call_rejects_invalid_options(queue, options, message):
    with pytest.raises(ValueError, match=message):
        queue.enqueue_call(jobs_for_tests.add, (1, 2), **options)

    assert queue.counts() == {}


def test_queue_rejects_non_positive_lease(queue_path):
    with pytest.raises(ValueError, match="lease_seconds must be positive, got 0.0"):
        Queue(queue_path, lease_seconds=0)


def test_claim_empty_queue_returns_none(queue):
    assert queue.claim("worker-a") is None


def test_claim_order_priority_then_fifo(queue):
    priorities = {"low": -1, "first": 0, "urgent-1": 5, "second": 0, "urgent-2": 5}
    ids = {
        name: queue.enqueue_call(jobs_for_tests.add, (1, 2), priority=priority)
        for name, priority in priorities.items()
    }

    claimed = [queue.claim("worker-a").id for _ in range(len(ids))]

    expected = ["urgent-1", "urgent-2", "first", "second", "low"]
    assert claimed == [ids[name] for name in expected]
    assert queue.claim("worker-a") is None


def test_claim_orders_equal_priority_by_run_at(queue, clock):
    later = queue.enqueue_call(jobs_for_tests.add, (1, 2), delay=5)
    clock.now = START + 1
    sooner = queue.enqueue(jobs_for_tests.add, 1, 2)

    assert queue.claim("worker-a", now=START + 10).id == sooner
    assert queue.claim("worker-a", now=START + 10).id == later


def test_delayed_job_not_claimed_before_run_at(queue):
    job_id = queue.enqueue_call(jobs_for_tests.add, (1, 2), delay=10)

    assert queue.claim("worker-a", now=START) is None
    assert queue.claim("worker-a", now=START + 9.999) is None
    assert queue.claim("worker-a", now=START + 10).id == job_id


def test_claim_filters_by_queue_name(queue):
    image_job = queue.enqueue_call(jobs_for_tests.add, (1, 2), queue="images")
    mail_job = queue.enqueue_call(jobs_for_tests.add, (1, 2), queue="mail", priority=9)

    assert queue.claim("worker-a", queues=["images"]).id == image_job
    assert queue.claim("worker-a", queues=["images"]) is None
    assert queue.claim("worker-a", queues=["images", "mail"]).id == mail_job


def test_claim_rejects_empty_queue_list(queue):
    with pytest.raises(ValueError, match="queues must name at least one queue"):
        queue.claim("worker-a", queues=[])


def test_claim_sets_lease_and_attempt(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)

    job = queue.claim("worker-a", now=START + 3)

    assert job.id == job_id
    assert job.status == "started"
    assert job.attempts == 1
    assert job.worker_id == "worker-a"
    assert job.started_at == START + 3
    assert job.lease_until == START + 3 + LEASE
    assert queue.fetch_job(job_id) == job


def test_expired_lease_is_reclaimed(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)
    first = queue.claim("worker-a", now=START)

    assert queue.claim("worker-b", now=START + LEASE - 0.001) is None

    second = queue.claim("worker-b", now=START + LEASE)
    assert second.id == job_id
    assert second.attempts == 2
    assert second.worker_id == "worker-b"
    assert second.started_at == START + LEASE
    assert second.lease_until == START + 2 * LEASE
    assert first.attempts == 1


def test_extend_lease_moves_expiry(queue):
    queue.enqueue(jobs_for_tests.add, 1, 2)
    job = queue.claim("worker-a", now=START)

    assert queue.extend_lease(job, now=START + 20) is True
    assert queue.fetch_job(job.id).lease_until == START + 20 + LEASE
    assert queue.claim("worker-b", now=START + LEASE + 1) is None
    assert queue.claim("worker-b", now=START + 20 + LEASE).attempts == 2


def test_stale_claim_cannot_update_job(queue):
    queue.enqueue(jobs_for_tests.add, 1, 2)
    stale = queue.claim("worker-a", now=START)
    current = queue.claim("worker-b", now=START + LEASE)

    assert queue.extend_lease(stale, now=START + LEASE + 1) is False
    assert queue.finish(stale, 3, now=START + LEASE + 1) is False
    assert queue.fail(stale, "boom", now=START + LEASE + 1) is None
    assert queue.fetch_job(current.id) == current


def test_finish_stores_result(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)
    job = queue.claim("worker-a", now=START)

    assert queue.finish(job, {"sum": 3}, now=START + 4) is True

    finished = queue.fetch_job(job_id)
    assert finished.status == "finished"
    assert finished.result == {"sum": 3}
    assert finished.ended_at == START + 4
    assert finished.lease_until is None
    assert finished.worker_id == "worker-a"
    assert queue.claim("worker-b", now=START + 10 * LEASE) is None


def test_finish_stores_repr_of_non_json_result(queue):
    job_id = queue.enqueue(jobs_for_tests.return_object)
    job = queue.claim("worker-a")

    assert queue.finish(job, {1, 2}) is True
    assert queue.fetch_job(job_id).result == "{1, 2}"


def test_lease_expiry_after_last_attempt_fails_job(queue):
    job_id = queue.enqueue_call(jobs_for_tests.add, (1, 2), max_attempts=2)
    first = queue.claim("worker-a", now=START)
    second = queue.claim("worker-b", now=first.lease_until)

    assert second.attempts == 2
    assert queue.claim("worker-c", now=second.lease_until) is None

    failed = queue.fetch_job(job_id)
    assert failed.status == "failed"
    assert failed.attempts == 2
    assert failed.ended_at == second.lease_until
    assert failed.lease_until is None
    assert failed.error == (
        "worker died: worker worker-b stopped renewing its lease during attempt 2 of 2"
    )


def test_failing_job_backoff_schedule(queue):
    job_id = queue.enqueue_call(jobs_for_tests.raise_error, ("boom",), max_attempts=4)
    now = START

    for expected_delay in (2, 4, 8):
        job = queue.claim("worker-a", now=now)
        assert job.id == job_id
        assert queue.claim("worker-b", now=now) is None

        error = _raised(job)
        retried = queue.fail(job, error, now=now)

        assert retried.status == "scheduled"
        assert retried.run_at == now + expected_delay
        assert retried.lease_until is None
        assert retried.worker_id is None
        assert "RuntimeError: boom" in retried.error
        assert queue.claim("worker-b", now=now + expected_delay - 0.001) is None
        now += expected_delay

    job = queue.claim("worker-a", now=now)
    assert job.attempts == 4
    failed = queue.fail(job, _raised(job), now=now)

    assert failed.status == "failed"
    assert failed.ended_at == now
    assert failed.error.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError(message)' in failed.error
    assert failed.error.endswith("RuntimeError: boom\n")
    assert queue.claim("worker-b", now=now + RETRY_BACKOFF_MAX_SECONDS) is None


def _raised(job):
    try:
        job.perform()
    except RuntimeError as error:
        return error
    raise AssertionError(f"job {job.func} did not raise")


def test_retry_delay_doubles_up_to_cap():
    delays = [retry_delay(attempt) for attempt in range(1, 6)]

    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert RETRY_BACKOFF_BASE_SECONDS == 2.0
    assert retry_delay(40) == RETRY_BACKOFF_MAX_SECONDS


def test_fail_accepts_text_and_exc_info(queue):
    queue.enqueue_call(jobs_for_tests.add, (1, 2), max_attempts=1)
    queue.enqueue_call(jobs_for_tests.add, (1, 2), max_attempts=1)

    with_text = queue.fail(queue.claim("worker-a"), "plain text")
    try:
        raise KeyError("missing")
    except KeyError:
        with_exc_info = queue.fail(queue.claim("worker-a"), sys.exc_info())

    assert with_text.error == "plain text"
    assert with_exc_info.error.endswith("KeyError: 'missing'\n")
    assert queue.counts() == {"failed": 2}


def test_fail_rejects_other_error_types(queue):
    queue.enqueue(jobs_for_tests.add, 1, 2)
    job = queue.claim("worker-a")

    with pytest.raises(TypeError, match="error must be an exception, an exc_info tuple or a text"):
        queue.fail(job, 42)

    assert queue.fetch_job(job.id).status == "started"


def test_counts_by_status(queue):
    for _ in range(3):
        queue.enqueue(jobs_for_tests.add, 1, 2)
    queue.finish(queue.claim("worker-a"), 3)
    queue.claim("worker-a")

    assert queue.counts() == {"finished": 1, "queued": 1, "started": 1}


def test_database_file_settings(queue, queue_path):
    queue.enqueue(jobs_for_tests.add, 1, 2)
    connection = sqlite3.connect(queue_path)
    try:
        journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        columns = [row[1] for row in connection.execute("PRAGMA table_info(jobs)")]
        indexes = [row[1] for row in connection.execute("PRAGMA index_list(jobs)")]
    finally:
        connection.close()

    assert journal_mode == "wal"
    assert version == SCHEMA_VERSION
    assert columns == [
        "seq", "token", "queue", "func", "args", "kwargs", "status", "priority", "run_at",
        "attempts", "max_attempts", "lease_until", "worker_id", "result", "error",
        "enqueued_at", "started_at", "ended_at", "timeout", "unique_key", "error_type",
        "error_message",
    ]  # fmt: skip
    assert set(indexes) == {"jobs_active", "jobs_unique_key"}


def test_switch_to_wal_waits_for_lock(queue_path):
    # Another connection is about to write to a file not yet in WAL mode, as happens when
    # several workers open a new queue file at once. The switch to WAL mode reads the
    # file first, and SQLite does not wait through the busy timeout for a reader's write
    # lock, so without a retry the open fails at once.
    holder = sqlite3.connect(queue_path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, holder.execute, args=("COMMIT",))
    release.start()
    try:
        connection = open_connection(queue_path)
        journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        connection.close()
    finally:
        release.join()
        holder.close()

    assert journal_mode == "wal"


def test_several_processes_open_new_file(tmp_path):
    context = multiprocessing.get_context("fork")
    for round_number in range(5):
        path = tmp_path / f"queue-{round_number}.sqlite3"
        start = context.Event()
        results = context.Queue()
        processes = [
            context.Process(target=_open_when_started, args=(path, start, results))
            for _ in range(6)
        ]
        for process in processes:
            process.start()
        start.set()
        outcomes = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)

        assert outcomes == ["wal"] * 6


def _open_when_started(path, start, results):
    start.wait()
    try:
        queue = Queue(path)
        results.put(queue.read("PRAGMA journal_mode")[0][0])
        queue.close()
    except Exception as error:
        results.put(f"{type(error).__name__}: {error}")


def test_new_file_page_size(queue, queue_path):
    connection = sqlite3.connect(queue_path)
    try:
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    finally:
        connection.close()

    assert page_size == PAGE_SIZE_BYTES


def test_existing_file_keeps_page_size(queue_path):
    connection = sqlite3.connect(queue_path)
    connection.execute("PRAGMA page_size = 8192")
    connection.execute("CREATE TABLE other (x)")
    connection.close()

    reopened = Queue(queue_path)
    try:
        page_size = reopened.read("PRAGMA page_size")[0][0]
    finally:
        reopened.close()

    assert page_size == 8192


def test_failed_block_rolls_back(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)

    with pytest.raises(RuntimeError, match="stop"):
        with queue.transaction() as connection:
            connection.execute("UPDATE jobs SET status = 'canceled' WHERE seq = 1")
            raise RuntimeError("stop")

    assert queue.fetch_job(job_id).status == "queued"
    assert not queue._connection().in_transaction


def test_claim_query_reads_active_index_only(queue):
    sql = f"EXPLAIN QUERY PLAN {queue_module.CLAIM_FROM_QUEUE_SQL}"
    plan = queue._connection().execute(sql, ("worker-a", START, LEASE, "default")).fetchall()

    details = [row["detail"] for row in plan]
    assert "SEARCH jobs USING COVERING INDEX jobs_active (queue=?)" in details


def test_lease_sweep_reads_active_index_only(queue):
    sql = f"EXPLAIN QUERY PLAN {queue_module.LEASES_SQL}"
    plan = queue._connection().execute(sql, (START,)).fetchall()

    assert [row["detail"] for row in plan] == ["SCAN jobs USING COVERING INDEX jobs_active"]


@pytest.mark.parametrize(
    ("name", "params", "temporary_tables"),
    [
        (
            "INSERT_JOB_SQL",
            ("tok", "default", "tests.jobs_for_tests:add", "[]", "{}", "queued", 0, START, 3,
             START, None, None),
            0,
        ),
        # The one temporary table of a claim keeps the rows that RETURNING sends back.
        ("CLAIM_FROM_QUEUE_SQL", ("worker-a", START, LEASE, "default"), 1),
        ("FINISH_SQL", (1, "tok", "worker-a", 1, None, START), 0),
    ],
)
def test_per_job_statement_temporary_tables(queue, name, params, temporary_tables):
    # An IN list of three or more constants, in the statement or in a CHECK constraint or
    # partial index it evaluates, makes SQLite fill a temporary b-tree every time it runs.
    # With such lists these statements opened 3, 6 and 5 temporary tables.
    sql = f"EXPLAIN {getattr(queue_module, name)}"
    opcodes = [row["opcode"] for row in queue._connection().execute(sql, params)]

    assert opcodes.count("OpenEphemeral") == temporary_tables


def test_busy_timeout_is_set(queue):
    timeout_ms = queue._connection().execute("PRAGMA busy_timeout").fetchone()[0]

    assert timeout_ms == 10_000


def test_reopened_file_keeps_jobs(queue, queue_path):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)
    reopened = Queue(queue_path)

    try:
        assert reopened.fetch_job(job_id).func == f"{JOBS}:add"
    finally:
        reopened.close()


def test_queue_creates_missing_folder(tmp_path):
    queue = Queue(tmp_path / "instance" / "nested" / "queue.sqlite3")

    try:
        assert queue.counts() == {}
    finally:
        queue.close()


def test_newer_schema_version_rejected(queue_path):
    connection = sqlite3.connect(queue_path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()

    with pytest.raises(RuntimeError, match=f"has schema version {SCHEMA_VERSION + 1}, newer"):
        Queue(queue_path)


def test_threads_use_own_connections(queue):
    connections = []
    errors = []

    def enqueue_batch():
        try:
            connections.append(queue._connection())
            for number in range(50):
                queue.enqueue(jobs_for_tests.add, number, 1)
        except Exception as error:
            errors.append(error)
        finally:
            queue.close()

    threads = [threading.Thread(target=enqueue_batch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len({id(connection) for connection in connections}) == 4
    assert queue.counts() == {"queued": 200}


@pytest.fixture
def app(queue_path):
    app = Flask(__name__)
    app.config["QUEUE_DATABASE"] = str(queue_path)
    return app


def test_module_enqueue_uses_app_config(app, queue_path):
    with app.app_context():
        job_id = queue_module.enqueue(jobs_for_tests.echo, 1, job_queue="not an option")
        same_queue = queue_module.get_queue()

    job = Queue(queue_path).fetch_job(job_id)
    assert job.kwargs == {"job_queue": "not an option"}
    assert job.args == [1]
    with app.app_context():
        assert queue_module.get_queue() is same_queue


def test_module_enqueue_call_options(app, queue_path):
    with app.app_context():
        job_id = queue_module.enqueue_call(
            jobs_for_tests.add, (1, 2), queue="images", priority=3, max_attempts=1
        )

    job = Queue(queue_path).fetch_job(job_id)
    assert job.queue == "images"
    assert job.priority == 3
    assert job.max_attempts == 1


def test_module_enqueue_requires_queue_database():
    with Flask(__name__).app_context():
        with pytest.raises(RuntimeError, match="QUEUE_DATABASE is not set"):
            queue_module.enqueue(jobs_for_tests.add, 1, 2)


def test_module_enqueue_needs_app_context():
    with pytest.raises(RuntimeError, match="application context"):
        queue_module.enqueue(jobs_for_tests.add, 1, 2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_module_enqueue_after_fork(app, queue_path):
    with app.app_context():
        queue_module.enqueue(jobs_for_tests.add, 1, 2)
        parent_connection = queue_module.get_queue()._connection()

        pid = os.fork()
        if pid == 0:
            _enqueue_in_child_and_exit(parent_connection)

        _, status = os.waitpid(pid, 0)
        queue_module.enqueue(jobs_for_tests.add, 3, 4)

    assert os.waitstatus_to_exitcode(status) == 0
    assert Queue(queue_path).counts() == {"queued": 3}


def _enqueue_in_child_and_exit(parent_connection):
    """Enqueue from a forked child, then exit 0 if that used a new connection and 1 if not."""
    code = 1
    try:
        queue_module.enqueue(jobs_for_tests.add, 5, 6)
        if queue_module.get_queue()._connection() is not parent_connection:
            code = 0
    finally:
        os._exit(code)
