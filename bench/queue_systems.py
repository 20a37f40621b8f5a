"""The queues under test, each behind the same small interface.

A system is built on a fresh work folder. ``producer()`` returns a function that
enqueues one job (number, payload). ``consumer(lease_seconds)`` returns a function that
runs jobs until the queue is empty, each job calling bench.queue_jobs.record or
bench.queue_jobs.hold. Both are called in the process that uses them, after fork.
"""

import json
import sqlite3
from pathlib import Path

from . import queue_jobs as jobs

#: Lease of the promptgen worker in the SIGKILL test, so a killed job returns quickly.
KILL_TEST_LEASE_SECONDS = 2.0


class System:
    """Base class: name, the durability setting it runs with, and its work folder."""

    name = ""
    setting = ""
    #: Fewer jobs for the drain phases of a system too slow to drain the full count
    #: within the benchmark's time budget. None drains the full count.
    max_drain_jobs = None

    def __init__(self, workdir):
        self.workdir = Path(workdir)

    def producer(self):
        raise NotImplementedError

    def consumer(self, lease_seconds=None):
        raise NotImplementedError

    def hold_producer(self, started_path, release_path):
        """Return a function that enqueues a job that blocks until release_path exists."""
        raise NotImplementedError


class PromptgenQueue(System):
    """promptgen.queue drained by the real promptgen Worker loop."""

    def __init__(self, workdir, synchronous):
        super().__init__(workdir)
        self.synchronous = synchronous
        self.name = f"promptgen ({synchronous})"
        self.setting = f"WAL, synchronous={synchronous}"
        self.path = self.workdir / "queue.sqlite3"

    def producer(self):
        from promptgen.queue import Queue

        queue = Queue(self.path, synchronous=self.synchronous)
        return lambda number, payload: queue.enqueue(jobs.record, number, payload)

    def hold_producer(self, started_path, release_path):
        from promptgen.queue import Queue

        queue = Queue(self.path, synchronous=self.synchronous)
        return lambda number, payload: queue.enqueue(
            jobs.hold, number, payload, str(started_path), str(release_path)
        )

    def consumer(self, lease_seconds=None):
        from flask import Flask

        from promptgen.worker import Worker

        app = Flask("bench")
        app.config.update(
            QUEUE_DATABASE=str(self.path),
            QUEUE_SYNCHRONOUS=self.synchronous,
            QUEUE_LEASE_SECONDS=lease_seconds or 60.0,
            PERIODIC_JOBS=[],
        )
        worker = Worker(app, queues=["default"])
        return lambda: worker.work(burst=True)


class BareSqlite(System):
    """The reference: one INSERT per enqueue, one UPDATE ... RETURNING per claim, no ack."""

    def __init__(self, workdir, synchronous):
        super().__init__(workdir)
        self.synchronous = synchronous
        self.name = f"bare SQLite ({synchronous})"
        self.setting = f"WAL, synchronous={synchronous}"
        self.path = self.workdir / "bare.sqlite3"

    def _connect(self):
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL,"
            " status INTEGER NOT NULL DEFAULT 0, taken_at REAL)"
        )
        connection.execute("CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (id) WHERE status = 0")
        return connection

    def producer(self):
        connection = self._connect()

        def enqueue(number, payload):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO jobs (payload) VALUES (?)", (json.dumps(["record", number, payload]),)
            )
            connection.execute("COMMIT")

        return enqueue

    def hold_producer(self, started_path, release_path):
        connection = self._connect()

        def enqueue(number, payload):
            body = ["hold", number, payload, str(started_path), str(release_path)]
            connection.execute("INSERT INTO jobs (payload) VALUES (?)", (json.dumps(body),))

        return enqueue

    def consumer(self, lease_seconds=None):
        connection = self._connect()

        def drain():
            while True:
                connection.execute("BEGIN IMMEDIATE")
                row = connection.execute(
                    "UPDATE jobs SET status = 1, taken_at = unixepoch('subsec')"
                    " WHERE id = (SELECT id FROM jobs WHERE status = 0 ORDER BY id LIMIT 1)"
                    " RETURNING payload"
                ).fetchone()
                connection.execute("COMMIT")
                if row is None:
                    return
                _run_body(json.loads(row[0]))

        return drain


class PersistQueue(System):
    """persist-queue's SQLiteAckQueue with its defaults (auto_resume=True)."""

    name = "persist-queue SQLiteAckQueue"
    setting = "WAL, synchronous=FULL (SQLite's default; persist-queue sets none)"

    def _open(self):
        from persistqueue import SQLiteAckQueue

        return SQLiteAckQueue(str(self.workdir / "persist"))

    def producer(self):
        queue = self._open()
        return lambda number, payload: queue.put(["record", number, payload])

    def hold_producer(self, started_path, release_path):
        queue = self._open()
        return lambda number, payload: queue.put(
            ["hold", number, payload, str(started_path), str(release_path)]
        )

    def consumer(self, lease_seconds=None):
        from persistqueue import Empty

        queue = self._open()

        def drain():
            while True:
                try:
                    body = queue.get(block=False)
                except Empty:
                    return
                _run_body(body)
                queue.ack(body)

        return drain


class LiteQueuePackage(System):
    """PyPI litequeue: put, pop (locks the message) and done."""

    name = "litequeue"
    setting = "WAL, synchronous=NORMAL (set by litequeue)"
    # pop() sorts every ready message by message_id (SQLite plans its query with the
    # status index and a temporary B-tree), so 20,000 jobs take minutes to drain.
    max_drain_jobs = 5000

    def _open(self):
        from litequeue import LiteQueue

        return LiteQueue(str(self.workdir / "litequeue.sqlite3"), timeout=30)

    def producer(self):
        queue = self._open()
        return lambda number, payload: queue.put(json.dumps(["record", number, payload]))

    def hold_producer(self, started_path, release_path):
        queue = self._open()
        return lambda number, payload: queue.put(
            json.dumps(["hold", number, payload, str(started_path), str(release_path)])
        )

    def consumer(self, lease_seconds=None):
        queue = self._open()

        def drain():
            while True:
                message = queue.pop()
                if message is None:
                    return
                _run_body(json.loads(message.data))
                queue.done(message.message_id)

        return drain


class HueySqlite(System):
    """huey's SqliteHuey: tasks enqueued by calling them, run with huey.dequeue and execute."""

    name = "huey SqliteHuey"
    setting = "WAL, synchronous=FULL (SQLite's default; huey's fsync=None sets none)"

    def _open(self):
        from huey import SqliteHuey

        huey = SqliteHuey("bench", filename=str(self.workdir / "huey.sqlite3"))
        record_task = huey.task(name="record")(jobs.record)
        hold_task = huey.task(name="hold")(jobs.hold)
        return huey, record_task, hold_task

    def producer(self):
        _, record_task, _ = self._open()
        return lambda number, payload: record_task(number, payload)

    def hold_producer(self, started_path, release_path):
        _, _, hold_task = self._open()
        return lambda number, payload: hold_task(
            number, payload, str(started_path), str(release_path)
        )

    def consumer(self, lease_seconds=None):
        huey, _, _ = self._open()

        def drain():
            while True:
                task = huey.dequeue()
                if task is None:
                    return
                huey.execute(task)

        return drain


class RedisQueue(System):
    """RQ on a local redis-server, drained by rq.Worker, which forks a work horse per job."""

    name = "RQ on Redis"
    setting = "redis-server in memory only (--save '' --appendonly no)"
    # rq.Worker forks a work horse for every job, so draining 20,000 jobs would take
    # several minutes. Rates per second are still comparable.
    max_drain_jobs = 1000

    def __init__(self, workdir, port):
        super().__init__(workdir)
        self.port = port

    def _queue(self):
        from redis import Redis
        from rq import Queue

        connection = Redis(host="127.0.0.1", port=self.port)
        return connection, Queue("bench", connection=connection)

    def flush(self):
        connection, _ = self._queue()
        connection.flushall()
        connection.close()

    def producer(self):
        _, queue = self._queue()
        return lambda number, payload: queue.enqueue(jobs.record, number, payload)

    def hold_producer(self, started_path, release_path):
        _, queue = self._queue()
        return lambda number, payload: queue.enqueue(
            jobs.hold, number, payload, str(started_path), str(release_path), job_timeout=120
        )

    def consumer(self, lease_seconds=None):
        from rq import Worker

        connection, queue = self._queue()
        worker = Worker([queue], connection=connection)
        return lambda: worker.work(burst=True, logging_level="WARNING")


def _run_body(body):
    """Run a job stored as [function name, arguments...]."""
    name, *arguments = body
    getattr(jobs, name)(*arguments)
