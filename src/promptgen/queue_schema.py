"""The queue file's tables, indexes and connection settings, and migrations between versions.

PRAGMA user_version records the schema version. Opening a file of an older version
migrates it forward in one write transaction, so existing jobs keep their state.
"""

import sqlite3
import time
from pathlib import Path

#: Stored in PRAGMA user_version. Raise it with every change to the schema.
SCHEMA_VERSION = 4

#: How long a connection waits for another process's write lock before failing.
BUSY_TIMEOUT_SECONDS = 10.0

#: Pauses between attempts to switch a new file to WAL mode while another process
#: holds its lock: doubling from the first to the maximum.
WAL_RETRY_FIRST_PAUSE_SECONDS = 0.001
WAL_RETRY_MAX_PAUSE_SECONDS = 0.05

#: Values accepted for PRAGMA synchronous. In WAL mode NORMAL keeps the file
#: consistent after a crash, but a power loss can undo the last few commits. FULL
#: syncs the WAL at every commit, so a committed job survives a power loss too.
SYNCHRONOUS_MODES = ("NORMAL", "FULL")

#: Page size of a new queue file. Every commit writes each page it changed to the
#: WAL, and an enqueue, claim or finish changes a page of the table and a page of
#: each index it touches, so smaller pages mean fewer bytes per commit. On a 2-CPU
#: VM (SQLite 3.40.1), 2048 instead of SQLite's default 4096 raised bare INSERTs
#: into this schema from about 29,000 to 35,000 per second, and claim-and-finish
#: transactions from about 21,500 to 24,000. Rows longer than about 2000 bytes
#: spill onto overflow pages. Files created before keep their page size.
PAGE_SIZE_BYTES = 2048

#: Every status a job can have.
STATUSES = ("queued", "scheduled", "started", "finished", "failed", "canceled")


def any_status(*statuses):
    """Return an SQL condition that is true when status is one of statuses.

    SQLite runs "status IN ('a', 'b', 'c')" with three or more values by filling a
    temporary b-tree each time the statement runs, and it tests a CHECK constraint
    or a partial index's WHERE clause on every row it writes. Chained "=" terms are
    compared directly: on a 2-CPU VM (SQLite 3.40.1) this took a finish-and-claim
    transaction from 45.6 to 33.2 us.
    """
    return "(" + " OR ".join(f"status = '{status}'" for status in statuses) + ")"


#: Statuses of the jobs in the jobs_active index. A query can use that partial index
#: only if its WHERE clause contains this term word for word.
ACTIVE_FILTER = any_status("queued", "scheduled", "started")

#: A job's id is "<seq>-<token>". seq, the integer primary key, makes it unique, so
#: the id needs no index of its own, which spares every enqueue an index write. The
#: random token keeps an old id from naming a newer job if SQLite reuses a seq after
#: the newest rows were deleted.
JOBS_TABLE = f"""
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY,
        token TEXT NOT NULL,
        queue TEXT NOT NULL,
        func TEXT NOT NULL,
        args TEXT NOT NULL,
        kwargs TEXT NOT NULL,
        status TEXT NOT NULL CHECK {any_status(*STATUSES)},
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
    )
"""

#: Columns that version 2 added to the version 1 jobs table.
VERSION_2_COLUMNS = (
    "timeout REAL",
    "unique_key TEXT",
    "error_type TEXT",
    "error_message TEXT",
)

INDEXES = (
    # A claim scans this index for one queue in claim order and stops at the first
    # waiting job whose run_at has come. Started jobs stay in it, next to where they
    # were claimed, so that claiming a job changes one entry in place instead of
    # moving it to a separate index of leases, and finishing it removes that entry.
    # Status and lease_until at the end let the sweep for expired leases read the
    # index alone.
    f"""
    CREATE INDEX IF NOT EXISTS jobs_active
    ON jobs (queue, priority DESC, run_at, seq, status, lease_until)
    WHERE {ACTIVE_FILTER}
    """,
    # At most one waiting or running job per unique key.
    f"""
    CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique_key
    ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND {ACTIVE_FILTER}
    """,
)

#: Leader leases, such as the one that lets a single worker run the periodic scheduler.
LOCKS_TABLE = """
    CREATE TABLE IF NOT EXISTS locks (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL
    )
"""

#: When each periodic job is next due.
PERIODIC_TABLE = """
    CREATE TABLE IF NOT EXISTS periodic_jobs (
        name TEXT PRIMARY KEY,
        next_run_at REAL NOT NULL
    )
"""


def open_connection(path, synchronous="NORMAL"):
    """Open path as a WAL-mode SQLite database, creating the file and its folder."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(
            f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
        )

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    connection.row_factory = sqlite3.Row

    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    # Takes effect only in a new, empty file. Must come before journal_mode, which
    # writes the file's first page.
    connection.execute(f"PRAGMA page_size = {PAGE_SIZE_BYTES}")
    journal_mode = _use_wal(connection)
    if journal_mode != "wal":
        connection.close()
        raise RuntimeError(
            f"queue database {path} cannot use WAL mode (journal_mode is {journal_mode})."
            " Set QUEUE_DATABASE to a file on a local disk."
        )

    connection.execute(f"PRAGMA synchronous = {synchronous}")
    return connection


def _use_wal(connection):
    """Switch the file to WAL mode unless it is already, and return the journal mode now set.

    The switch reads the file, then needs its write lock. SQLite does not wait through
    the busy timeout for a lock that another connection holds once this one has read,
    so processes that open a new file at the same moment would fail with "database is
    locked". This retries for up to BUSY_TIMEOUT_SECONDS.
    """
    journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    if journal_mode == "wal":
        return journal_mode

    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = WAL_RETRY_FIRST_PAUSE_SECONDS
    while True:
        try:
            return connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, WAL_RETRY_MAX_PAUSE_SECONDS)


def create_schema(connection, path):
    """Create the queue's tables and indexes, or migrate an older file to SCHEMA_VERSION."""
    with immediate_transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"queue database {path} has schema version {version}, newer than"
                f" version {SCHEMA_VERSION} that this code supports. Upgrade promptgen."
            )
        if version == SCHEMA_VERSION:
            return

        has_jobs = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
        ).fetchone()
        if not has_jobs:
            connection.execute(JOBS_TABLE)
        else:
            if version <= 1:
                _migrate_version_1(connection)
            _rebuild_jobs_table(connection)

        for statement in (*INDEXES, LOCKS_TABLE, PERIODIC_TABLE):
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_version_1(connection):
    """Add the version 2 columns and replace the claim index, keeping every job."""
    for column in VERSION_2_COLUMNS:
        connection.execute(f"ALTER TABLE jobs ADD COLUMN {column}")

    # Version 1 claimed across all queues in one index, and kept delayed jobs queued.
    connection.execute("DROP INDEX IF EXISTS jobs_claim_order")
    connection.execute(
        "UPDATE jobs SET status = 'scheduled' WHERE status = 'queued' AND run_at > ?",
        (time.time(),),
    )


def _rebuild_jobs_table(connection):
    """Copy the jobs into a new table of the current layout, keeping every job and its id.

    SQLite cannot change a column's constraints in place, so the table is rebuilt:
    version 3 dropped the UNIQUE id column of version 2, and version 4 rewrote the
    CHECK constraint and the indexes' WHERE clauses. A version 2 job's old id becomes
    its token, so its new id is "<seq>-<old id>".
    """
    columns = [row[1] for row in connection.execute("PRAGMA table_info(jobs)")]
    copied = ", ".join(name for name in columns if name not in ("id", "token"))
    token = "id" if "id" in columns else "token"

    connection.execute("ALTER TABLE jobs RENAME TO jobs_before_rebuild")
    connection.execute(JOBS_TABLE)
    connection.execute(
        f"INSERT INTO jobs (token, {copied}) SELECT {token}, {copied} FROM jobs_before_rebuild"
    )
    # Dropping the old table drops its indexes, whose names the new ones reuse.
    connection.execute("DROP TABLE jobs_before_rebuild")


def immediate_transaction(connection):
    """Return a context manager that runs its block in a BEGIN IMMEDIATE transaction.

    BEGIN IMMEDIATE takes the write lock first. Entering and leaving this class
    took 0.35 us where a generator context manager took 1.06 us (Python 3.11).
    """
    return _ImmediateTransaction(connection)


class _ImmediateTransaction:
    __slots__ = ("connection",)

    def __init__(self, connection):
        self.connection = connection

    def __enter__(self):
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, exc_type, exc_value, traceback):
        connection = self.connection
        if exc_type is None:
            try:
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
            return False
        _rollback(connection)
        return False


def _rollback(connection):
    # SQLite ends the transaction by itself after some errors.
    if connection.in_transaction:
        connection.execute("ROLLBACK")
