"""Tests of named queues, delays, unique keys, retries, cancel, pruning, stats and migration."""

import collections
import datetime
import random
import sqlite3

import pytest

from promptgen import queue_admin
from promptgen.queue import (
    RETRY_BACKOFF_MAX_SECONDS,
    SCHEMA_VERSION,
    Queue,
    retry_delay,
)
from promptgen.queue_priorities import QueuePriorities, parse_queue_names, validate_priorities
from promptgen.scheduler import LOCK_SECONDS, PeriodicEntry, PeriodicScheduler, periodic_entries

from . import jobs_for_tests
# The clock, queue_path and queue fixtures come from queue_support.
from .queue_support import LEASE, START, FixedRandom, clock, queue, queue_path  # noqa: F401

NOTHING = "tests.jobs_for_tests:nothing"


# Delays


def test_delayed_job_is_scheduled_until_its_time(queue, clock):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2, delay=10)

    assert queue.fetch_job(job_id).status == "scheduled"
    assert queue.claim("worker-a", queues=["default"]) is None

    clock.now = START + 9.99
    assert queue.claim("worker-a", queues=["default"]) is None

    clock.now = START + 10
    assert queue.claim("worker-a", queues=["default"]).id == job_id


def test_enqueue_at_epoch_and_datetime(queue):
    at_epoch = queue.enqueue(jobs_for_tests.add, 1, 2, at=START + 60)
    moment = datetime.datetime.fromtimestamp(START + 90, datetime.timezone.utc)
    at_datetime = queue.enqueue(jobs_for_tests.add, 1, 2, at=moment)
    in_past = queue.enqueue(jobs_for_tests.add, 1, 2, at=START - 5)

    assert queue.fetch_job(at_epoch).run_at == START + 60
    assert queue.fetch_job(at_datetime).run_at == START + 90
    assert queue.fetch_job(in_past).status == "queued"


def test_enqueue_delay_accepts_timedelta(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2, delay=datetime.timedelta(minutes=2))

    assert queue.fetch_job(job_id).run_at == START + 120


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"at": START, "delay": 1}, "give at or delay, not both"),
        ({"at": datetime.datetime(2030, 1, 1)}, "at must be timezone-aware"),
        ({"at": "tomorrow"}, "at must be a number of seconds"),
        ({"retries": -1}, "retries must be an integer of 0 or more"),
        ({"retries": 1.5}, "retries must be an integer of 0 or more"),
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
        ({"timeout": "5"}, "timeout must be a number of seconds"),
        ({"key": ""}, "key must be a non-empty string"),
        ({"key": 5}, "key must be a non-empty string"),
        ({"queue": "a,b"}, "queue name must not contain a comma"),
        ({"queue": " padded"}, "or start or end with whitespace"),
        ({"queue": "padded\t"}, "or start or end with whitespace"),
        ({"delay": 1e308}, "delay puts the job's start after the year 9999"),
        ({"at": 253402300800}, "at puts the job's start after the year 9999"),
    ],
)
def test_enqueue_rejects_invalid_job_options(queue, options, message):
    with pytest.raises(ValueError, match=message):
        queue.enqueue(jobs_for_tests.add, 1, 2, **options)

    assert queue.counts() == {}


def test_enqueue_call_rejects_retries_with_max_attempts(queue):
    with pytest.raises(ValueError, match="give retries or max_attempts, not both"):
        queue.enqueue_call(jobs_for_tests.add, (1, 2), retries=1, max_attempts=2)


def test_enqueue_stores_options(queue):
    job_id = queue.enqueue(
        jobs_for_tests.add, 1, 2, queue="urgent", retries=4, timeout=7.5, key="sum-1-2"
    )
    job = queue.fetch_job(job_id)

    assert job.queue == "urgent"
    assert job.max_attempts == 5
    assert job.timeout == 7.5
    assert job.key == "sum-1-2"
    assert job.kwargs == {}


# Unique keys


def test_unique_key_returns_waiting_job(queue):
    first = queue.enqueue(jobs_for_tests.add, 1, 2, key="k")
    second = queue.enqueue(jobs_for_tests.add, 3, 4, key="k")
    other = queue.enqueue(jobs_for_tests.add, 5, 6, key="other")

    assert second == first
    assert other != first
    assert queue.counts() == {"queued": 2}


def test_unique_key_blocks_while_started(queue):
    first = queue.enqueue(jobs_for_tests.add, 1, 2, key="k")
    job = queue.claim("worker-a", queues=["default"])

    assert queue.enqueue(jobs_for_tests.add, 1, 2, key="k") == first

    queue.finish(job, 3)
    after_finish = queue.enqueue(jobs_for_tests.add, 1, 2, key="k")
    assert after_finish != first
    assert queue.fetch_job(after_finish).status == "queued"


def test_unique_key_blocks_scheduled_retry(queue):
    first = queue.enqueue(jobs_for_tests.raise_error, "boom", key="k")
    job = queue.claim("worker-a", queues=["default"])
    queue.fail(job, "boom")

    assert queue.fetch_job(first).status == "scheduled"
    assert queue.enqueue(jobs_for_tests.raise_error, "boom", key="k") == first


def test_unique_key_free_after_final_failure(queue):
    first = queue.enqueue(jobs_for_tests.raise_error, "boom", key="k", retries=0)
    queue.fail(queue.claim("worker-a", queues=["default"]), "boom")

    second = queue.enqueue(jobs_for_tests.raise_error, "boom", key="k")

    assert second != first
    with pytest.raises(ValueError, match="another job with its key is waiting or running"):
        queue.requeue(first)


# Retries


def test_retry_backoff_schedule_with_jitter(queue_path, clock):
    rng = FixedRandom(1.0)
    queue = Queue(queue_path, lease_seconds=LEASE, clock=clock, rng=rng)
    job_id = queue.enqueue(jobs_for_tests.raise_error, "boom", retries=3)

    delays = []
    for _ in range(3):
        job = queue.claim("worker-a", queues=["default"])
        retried = queue.fail(job, RuntimeError("boom"))
        delays.append(retried.run_at - clock.now)
        assert queue.claim("worker-a", queues=["default"]) is None
        clock.now = retried.run_at

    job = queue.claim("worker-a", queues=["default"])
    failed = queue.fail(job, RuntimeError("boom"))

    assert delays == [3.0, 6.0, 12.0]
    assert failed.id == job_id
    assert failed.status == "failed"
    assert failed.attempts == 4
    assert failed.error_type == "RuntimeError"
    assert failed.error_message == "boom"
    assert failed.error.endswith("RuntimeError: boom\n")
    queue.close()


def test_retry_delay_jitter_bounds():
    assert retry_delay(1, 0.0) == 2.0
    assert retry_delay(1, 1.0) == 3.0
    assert retry_delay(3, 0.5) == 10.0
    assert retry_delay(30, 1.0) == RETRY_BACKOFF_MAX_SECONDS


def test_retry_delays_spread_with_real_random(queue_path, clock):
    queue = Queue(queue_path, lease_seconds=LEASE, clock=clock, rng=random.Random(7))
    for _ in range(20):
        queue.enqueue(jobs_for_tests.raise_error, "boom")

    run_ats = set()
    for _ in range(20):
        job = queue.claim("worker-a", queues=["default"])
        run_ats.add(queue.fail(job, "boom").run_at - START)

    assert len(run_ats) == 20
    assert min(run_ats) >= 2.0
    assert max(run_ats) <= 3.0
    queue.close()


def test_error_type_names_module_of_custom_exception(queue):
    queue.enqueue(jobs_for_tests.add, 1, 2, retries=0)
    job = queue.claim("worker-a", queues=["default"])

    failed = queue.fail(job, jobs_for_tests.CustomError("bad input"))

    assert failed.error_type == "tests.jobs_for_tests.CustomError"
    assert failed.error_message == "bad input"


# Leases


def test_expired_lease_counts_attempt_then_fails(queue, clock):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2, retries=1)
    first = queue.claim("worker-a", queues=["default"])

    clock.now = first.lease_until
    second = queue.claim("worker-b", queues=["default"])
    assert second.id == job_id
    assert second.attempts == 2
    assert queue.fetch_job(job_id).error_type == "WorkerDied"

    clock.now = second.lease_until
    assert queue.claim("worker-c", queues=["default"]) is None
    failed = queue.fetch_job(job_id)
    assert failed.status == "failed"
    assert failed.error_type == "WorkerDied"
    assert failed.error_message == (
        "worker worker-b stopped renewing its lease during attempt 2 of 2"
    )


def test_finished_job_never_claimed_again(queue, clock):
    queue.enqueue(jobs_for_tests.add, 1, 2)
    job = queue.claim("worker-a", queues=["default"])
    queue.finish(job, 3)

    for hours in (1, 24, 24 * 30):
        clock.now = START + hours * 3600
        assert queue.claim("worker-b", queues=["default"]) is None


def test_release_returns_job_without_attempt(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)
    job = queue.claim("worker-a", queues=["default"])

    assert queue.release(job) is True
    released = queue.fetch_job(job_id)
    assert released.status == "queued"
    assert released.attempts == 0
    assert released.worker_id is None
    assert queue.release(job) is False


def test_finish_and_claim_takes_next_job(queue):
    first = queue.enqueue(jobs_for_tests.add, 1, 2)
    second = queue.enqueue(jobs_for_tests.add, 3, 4)
    job = queue.claim("worker-a", queues=["default"])

    stored, next_job = queue.finish_and_claim(job, 3, worker_id="worker-a", queues=["default"])

    assert stored is True
    assert next_job.id == second
    assert queue.fetch_job(first).status == "finished"
    assert queue.fetch_job(second).status == "started"


# Named queues and their weights


def test_claim_tries_queues_in_given_order(queue):
    default_job = queue.enqueue(jobs_for_tests.add, 1, 2)
    urgent_job = queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")

    assert queue.claim("worker-a", queues=["default", "urgent"]).id == default_job
    assert queue.claim("worker-a", queues=["default", "urgent"]).id == urgent_job
    assert queue.claim("worker-a", queues=["default", "urgent"]) is None


def test_priorities_weight_claims(queue):
    for name in ("critical", "urgent", "default"):
        for _ in range(1600):
            queue.enqueue_call(NOTHING, queue=name)
    priorities = QueuePriorities(
        {"critical": 10, "urgent": 5, "default": 1}, rng=random.Random(1)
    )

    claimed = collections.Counter(
        queue.claim("worker-a", queues=priorities.order()).queue for _ in range(1600)
    )

    # Expected 1000, 500 and 100; each bound is more than four standard deviations away.
    assert 920 <= claimed["critical"] <= 1080
    assert 430 <= claimed["urgent"] <= 570
    assert 60 <= claimed["default"] <= 140


def test_low_queue_gets_all_claims_when_others_empty(queue):
    for _ in range(50):
        queue.enqueue_call(NOTHING, queue="default")
    priorities = QueuePriorities({"critical": 10, "urgent": 5, "default": 1})

    claimed = [queue.claim("worker-a", queues=priorities.order()) for _ in range(51)]

    assert [job.queue for job in claimed[:50]] == ["default"] * 50
    assert claimed[50] is None


def test_priorities_for_worker_subset():
    priorities = QueuePriorities.for_worker(
        {"critical": 10, "urgent": 5, "default": 1}, ["default", "images"]
    )

    assert priorities.weights == {"default": 1, "images": 1}
    assert set(priorities.order()) == {"default", "images"}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "must map queue names to weights"),
        ({"a": 0}, "weight of queue 'a' must be positive"),
        ({"a": "high"}, "weight of queue 'a' must be a number"),
        ({"": 1}, "queue name must be a non-empty string"),
    ],
)
def test_priorities_reject_invalid_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        validate_priorities(weights)


def test_parse_queue_names():
    assert parse_queue_names(" urgent, default ,") == ["urgent", "default"]
    with pytest.raises(ValueError, match="no queue names"):
        parse_queue_names(" , ")


# Cancel and requeue


def test_cancel_waiting_job_only(queue):
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2)
    scheduled = queue.enqueue(jobs_for_tests.add, 1, 2, delay=60)
    running = queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")
    queue.claim("worker-a", queues=["urgent"])

    assert queue.cancel(waiting) is True
    assert queue.cancel(scheduled) is True
    assert queue.cancel(running) is False
    assert queue.cancel("no-such-id") is False
    assert queue.fetch_job(waiting).status == "canceled"
    assert queue.fetch_job(waiting).ended_at == START
    assert queue.claim("worker-a", queues=["default"]) is None


def test_enqueue_accepts_last_second_of_year_9999(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2, at=253402300799)

    assert queue.fetch_job(job_id).status == "scheduled"


def test_cancel_started_job_after_lease_expired(queue, clock):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)
    queue.claim("dead-worker", queues=["default"])

    clock.now = START + LEASE - 1
    assert queue.cancel(job_id) is False

    clock.now = START + LEASE
    assert queue.cancel(job_id) is True

    job = queue.fetch_job(job_id)
    assert job.status == "canceled"
    assert job.ended_at == START + LEASE
    assert job.lease_until is None
    assert queue.claim("worker-b", queues=["default"]) is None


def test_requeue_failed_job_resets_attempts(queue, clock):
    job_id = queue.enqueue(jobs_for_tests.raise_error, "boom", retries=0)
    queue.fail(queue.claim("worker-a", queues=["default"]), "boom")
    clock.now = START + 100

    assert queue.requeue(job_id) is True

    job = queue.fetch_job(job_id)
    assert job.status == "queued"
    assert job.attempts == 0
    assert job.error is None
    assert job.run_at == START + 100
    assert queue.requeue(job_id) is False


def test_requeue_failed_by_queue(queue):
    for name in ("urgent", "urgent", "default"):
        queue.enqueue(jobs_for_tests.raise_error, "boom", queue=name, retries=0)
    for name in ("urgent", "urgent", "default"):
        queue.fail(queue.claim("worker-a", queues=[name]), "boom")

    assert queue.requeue_failed(queue="urgent") == 2
    assert queue.requeue_failed() == 1
    assert queue.counts() == {"queued": 3}


# Pruning, purging and stats


def _end_job(queue, clock, at, outcome, name="default"):
    clock.now = at
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2, queue=name, retries=0)
    job = queue.claim("worker-a", queues=[name])
    if outcome == "finished":
        queue.finish(job, 3)
    else:
        queue.fail(job, "boom")
    return job_id


def test_prune_keeps_failed_longer(queue, clock):
    old_finished = _end_job(queue, clock, START, "finished")
    old_failed = _end_job(queue, clock, START, "failed")
    very_old_failed = _end_job(queue, clock, START - 10 * 86400, "failed")
    recent_finished = _end_job(queue, clock, START + 86000, "finished")
    clock.now = START + 86500

    deleted = queue_admin.prune(queue, keep_finished=86400, keep_failed=7 * 86400)

    assert deleted == {"finished": 1, "failed": 1}
    assert queue.fetch_job(old_finished) is None
    assert queue.fetch_job(very_old_failed) is None
    assert queue.fetch_job(old_failed).status == "failed"
    assert queue.fetch_job(recent_finished).status == "finished"


def test_purge_statuses_and_queue(queue, clock):
    _end_job(queue, clock, START, "finished")
    _end_job(queue, clock, START, "failed", name="urgent")
    waiting = queue.enqueue(jobs_for_tests.add, 1, 2)

    assert queue_admin.purge(queue, ["failed"], queue_name="default") == 0
    assert queue_admin.purge(queue) == 2
    assert queue.fetch_job(waiting).status == "queued"
    assert queue_admin.purge(queue, ["queued"]) == 1
    with pytest.raises(ValueError, match="started jobs cannot be purged"):
        queue_admin.purge(queue, ["started"])


def test_stats_counts_rates_and_times(queue, clock):
    for offset in (0, 10, 20):
        clock.now = START + offset
        queue.enqueue(jobs_for_tests.add, 1, 2)
        clock.now = START + offset + 2
        job = queue.claim("worker-a", queues=["default"])
        clock.now = START + offset + 5
        queue.finish(job, 3)
    clock.now = START + 100
    oldest = queue.enqueue(jobs_for_tests.add, 1, 2, queue="urgent")
    queue.enqueue(jobs_for_tests.add, 1, 2, delay=3600)
    clock.now = START + 160

    stats = queue_admin.collect_stats(queue)

    assert stats.counts == {"default": {"finished": 3, "scheduled": 1}, "urgent": {"queued": 1}}
    assert stats.oldest_waiting == (oldest, "urgent", 60.0)
    assert stats.jobs_per_minute == pytest.approx(3 / 5)
    assert stats.mean_wait_seconds == pytest.approx(2.0)
    assert stats.mean_run_seconds == pytest.approx(3.0)


# Periodic scheduler


def test_scheduler_enqueues_due_jobs_once_per_interval(queue, clock):
    entries = periodic_entries([{"func": NOTHING, "interval": 60}])
    scheduler = PeriodicScheduler(queue, entries, owner="worker-a")

    first = scheduler.tick()
    assert len(first) == 1
    assert scheduler.tick() == []

    queue.finish(queue.claim("worker-a", queues=["default"]), None)
    clock.now = START + 59
    assert scheduler.tick() == []
    clock.now = START + 60
    second = scheduler.tick()
    assert len(second) == 1
    assert second != first
    assert queue.fetch_job(second[0]).key == f"periodic:{NOTHING}"


def test_scheduler_skips_run_while_previous_waits(queue, clock):
    scheduler = PeriodicScheduler(queue, [PeriodicEntry(NOTHING, 10)], owner="worker-a")
    first = scheduler.tick()

    clock.now = START + 10
    assert scheduler.tick() == first
    assert queue.counts() == {"queued": 1}


def test_scheduler_lock_one_leader(queue, clock):
    entries = [PeriodicEntry(NOTHING, 5)]
    leader = PeriodicScheduler(queue, entries, owner="worker-a")
    follower = PeriodicScheduler(queue, entries, owner="worker-b")

    assert len(leader.tick()) == 1
    assert follower.tick() == []
    assert leader.is_leader is True
    assert follower.is_leader is False

    # The leader stops renewing, so the follower takes over when the lock expires.
    queue.finish(queue.claim("worker-a", queues=["default"]), None)
    clock.now = START + LOCK_SECONDS - 0.01
    assert follower.tick() == []
    clock.now = START + LOCK_SECONDS
    assert len(follower.tick()) == 1
    assert follower.is_leader is True
    assert leader.tick() == []


def test_scheduler_resign_hands_over(queue):
    leader = PeriodicScheduler(queue, [PeriodicEntry(NOTHING, 5)], owner="worker-a")
    follower = PeriodicScheduler(queue, [PeriodicEntry(NOTHING, 5)], owner="worker-b")
    leader.tick()

    leader.resign()
    follower.tick()

    assert follower.is_leader is True


@pytest.mark.parametrize(
    ("configured", "message"),
    [
        ([{"func": NOTHING, "interval": 0}], "must be a positive number of seconds"),
        ([{"func": "no-colon", "interval": 5}], "expected 'module:qualname'"),
        (["text"], "must be a dict"),
        ([(NOTHING, 5), {"func": NOTHING, "interval": 9}], "names these jobs twice"),
    ],
)
def test_periodic_entries_reject_invalid(configured, message):
    with pytest.raises(ValueError, match=message):
        periodic_entries(configured)


# Migration from schema version 1

VERSION_1_SCHEMA = """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        queue TEXT NOT NULL,
        func TEXT NOT NULL,
        args TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'scheduled', 'started', 'finished', 'failed', 'canceled')),
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
        lease_until REAL,
        worker_id TEXT,
        result TEXT,
        error TEXT,
        enqueued_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL
    );
    CREATE INDEX jobs_claim_order ON jobs (priority DESC, run_at, seq)
    WHERE status IN ('queued', 'started');
    CREATE INDEX jobs_lease_until ON jobs (lease_until) WHERE status = 'started';
    PRAGMA user_version = 1;
"""


def test_version_1_file_migrated(queue_path):
    connection = sqlite3.connect(queue_path)
    connection.executescript(VERSION_1_SCHEMA)
    rows = [
        ("ready", "queued", 1.0, None),
        ("later", "queued", 4_000_000_000.0, None),
        ("done", "finished", 1.0, "5"),
    ]
    for job_id, status, run_at, result in rows:
        connection.execute(
            "INSERT INTO jobs (id, queue, func, args, kwargs, status, priority, run_at,"
            " max_attempts, enqueued_at, result) VALUES (?, 'default', ?, '[1, 2]', '{}',"
            " ?, 0, ?, 3, 1.0, ?)",
            (job_id, "tests.jobs_for_tests:add", status, run_at, result),
        )
    connection.commit()
    connection.close()

    queue = Queue(queue_path)
    try:
        assert queue.fetch_job("1-ready").status == "queued"
        assert queue.fetch_job("2-later").status == "scheduled"
        assert queue.fetch_job("3-done").result == 5
        assert queue.fetch_job("3-done").key is None
        assert queue.claim("worker-a", queues=["default"]).id == "1-ready"
        assert queue.claim("worker-a", queues=["default"]) is None
        version = queue.read("PRAGMA user_version")[0][0]
        indexes = {row[1] for row in queue.read("PRAGMA index_list(jobs)")}
    finally:
        queue.close()

    assert version == SCHEMA_VERSION
    assert indexes == {"jobs_active", "jobs_unique_key"}


VERSION_2_SCHEMA = """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        queue TEXT NOT NULL,
        func TEXT NOT NULL,
        args TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'scheduled', 'started', 'finished', 'failed', 'canceled')),
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
        lease_until REAL,
        worker_id TEXT,
        result TEXT,
        error TEXT,
        enqueued_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        timeout REAL,
        unique_key TEXT,
        error_type TEXT,
        error_message TEXT
    );
    CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, seq)
    WHERE status IN ('queued', 'scheduled');
    CREATE INDEX jobs_lease_until ON jobs (lease_until) WHERE status = 'started';
    CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('queued', 'scheduled', 'started');
    CREATE TABLE locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
    CREATE TABLE periodic_jobs (name TEXT PRIMARY KEY, next_run_at REAL NOT NULL);
    PRAGMA user_version = 2;
"""


def test_version_2_file_migrated(queue_path):
    connection = sqlite3.connect(queue_path)
    connection.executescript(VERSION_2_SCHEMA)
    rows = [
        ("0190aa", "started", START - 100, 3, "dead-worker", START + 5, "nightly"),
        ("0190ab", "queued", START, 0, None, None, None),
        ("0190ac", "failed", START, 3, None, None, None),
    ]
    for job_id, status, run_at, attempts, worker_id, lease_until, key in rows:
        connection.execute(
            "INSERT INTO jobs (id, queue, func, args, kwargs, status, priority, run_at,"
            " attempts, max_attempts, lease_until, worker_id, enqueued_at, unique_key)"
            " VALUES (?, 'default', 'tests.jobs_for_tests:add', '[1, 2]', '{}', ?, 0, ?,"
            " ?, 3, ?, ?, 1.0, ?)",
            (job_id, status, run_at, attempts, lease_until, worker_id, key),
        )
    connection.commit()
    connection.close()

    queue = Queue(queue_path)
    try:
        duplicate = queue.enqueue_call(jobs_for_tests.add, (1, 2), key="nightly", now=START)
        waiting = queue.claim("worker-a", now=START, queues=["default"])
        nothing_left = queue.claim("worker-a", now=START + 5, queues=["default"])
        abandoned = queue.fetch_job("1-0190aa")
        assert queue.requeue("3-0190ac", now=START + 5)
        indexes = {row[1] for row in queue.read("PRAGMA index_list(jobs)")}
        version = queue.read("PRAGMA user_version")[0][0]
    finally:
        queue.close()

    assert duplicate == "1-0190aa"
    assert waiting.id == "2-0190ab"
    assert nothing_left is None
    assert (abandoned.status, abandoned.error_type) == ("failed", "WorkerDied")
    assert version == SCHEMA_VERSION
    assert indexes == {"jobs_active", "jobs_unique_key"}


VERSION_3_SCHEMA = """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY,
        token TEXT NOT NULL,
        queue TEXT NOT NULL,
        func TEXT NOT NULL,
        args TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'scheduled', 'started', 'finished', 'failed', 'canceled')),
        priority INTEGER NOT NULL,
        run_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
        lease_until REAL,
        worker_id TEXT,
        result TEXT,
        error TEXT,
        enqueued_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        timeout REAL,
        unique_key TEXT,
        error_type TEXT,
        error_message TEXT
    );
    CREATE INDEX jobs_active ON jobs (queue, priority DESC, run_at, seq, status, lease_until)
    WHERE status IN ('queued', 'scheduled', 'started');
    CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('queued', 'scheduled', 'started');
    CREATE TABLE locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
    CREATE TABLE periodic_jobs (name TEXT PRIMARY KEY, next_run_at REAL NOT NULL);
    PRAGMA user_version = 3;
"""


def test_version_3_file_migrated(queue_path):
    connection = sqlite3.connect(queue_path)
    connection.executescript(VERSION_3_SCHEMA)
    rows = [
        ("5f0c9a1e7b3d", "queued", 0, None, "nightly"),
        ("a1b2c3d4e5f6", "finished", 1, "7", None),
    ]
    for token, status, attempts, result, key in rows:
        connection.execute(
            "INSERT INTO jobs (token, queue, func, args, kwargs, status, priority, run_at,"
            " attempts, max_attempts, result, enqueued_at, unique_key) VALUES (?, 'default',"
            " 'tests.jobs_for_tests:add', '[3, 4]', '{}', ?, 0, ?, ?, 3, ?, 1.0, ?)",
            (token, status, START, attempts, result, key),
        )
    connection.commit()
    connection.close()

    queue = Queue(queue_path)
    try:
        duplicate = queue.enqueue_call(jobs_for_tests.add, (3, 4), key="nightly", now=START)
        finished = queue.fetch_job("2-a1b2c3d4e5f6")
        claimed = queue.claim("worker-a", now=START, queues=["default"])
        version = queue.read("PRAGMA user_version")[0][0]
        indexes = {row[1] for row in queue.read("PRAGMA index_list(jobs)")}
        tables = {row[0] for row in queue.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        queue.close()

    assert duplicate == "1-5f0c9a1e7b3d"
    assert (finished.status, finished.result) == ("finished", 7)
    assert (claimed.id, claimed.args) == ("1-5f0c9a1e7b3d", [3, 4])
    assert version == SCHEMA_VERSION
    assert indexes == {"jobs_active", "jobs_unique_key"}
    assert tables == {"jobs", "locks", "periodic_jobs"}


def test_unknown_status_is_refused_by_the_file(queue):
    job_id = queue.enqueue(jobs_for_tests.add, 1, 2)
    seq = int(job_id.split("-")[0])

    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        with queue.transaction() as connection:
            connection.execute("UPDATE jobs SET status = 'paused' WHERE seq = ?", (seq,))

    assert queue.fetch_job(job_id).status == "queued"
