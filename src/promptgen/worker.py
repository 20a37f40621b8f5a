"""Worker process that claims jobs from the SQLite queue and runs them in an app context.

``flask --app promptgen worker`` runs ``Worker(app).work()``. The worker reads two
config keys: QUEUE_DATABASE (the queue file, required unless a Queue is passed) and
QUEUE_LEASE_SECONDS (how long a claim lasts without a heartbeat, default
queue.DEFAULT_LEASE_SECONDS). On SIGINT or SIGTERM the worker lets the current job
finish and then returns, so the command exits with status 0.
"""

import logging
import os
import secrets
import signal
import socket
import sqlite3
import threading
import time

from .queue import DEFAULT_LEASE_SECONDS, QUEUED, Queue, queue_path_from_config, retry_delay

try:
    from .extensions import db
except ImportError:
    db = None

logger = logging.getLogger(__name__)

#: The lease is renewed this many times per lease period while a job runs.
HEARTBEATS_PER_LEASE = 3

#: An idle worker sleeps this long first, then longer by IDLE_SLEEP_FACTOR each time.
IDLE_SLEEP_START_SECONDS = 0.05
IDLE_SLEEP_FACTOR = 1.5
#: Also the longest time a stop signal waits while the worker is idle.
IDLE_SLEEP_MAX_SECONDS = 1.0

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Worker:
    """Claims ready jobs one at a time and runs each inside ``app.app_context()``."""

    def __init__(self, app, queue=None, *, queues=None, worker_id=None):
        self.app = app
        self.queue = queue if queue is not None else queue_for_app(app)
        self.queues = None if queues is None else tuple(queues)
        self.worker_id = worker_id or make_worker_id()
        self.heartbeat_interval = self.queue.lease_seconds / HEARTBEATS_PER_LEASE
        self._stop_signal = None
        self._stop_requested = False

    def work(self, burst=False):
        """Run jobs until a stop signal, or until none is ready if burst. Return the job count."""
        logger.info(
            "worker %s started: pid %d, queue %s, lease %g s%s",
            self.worker_id,
            os.getpid(),
            self.queue.path,
            self.queue.lease_seconds,
            ", burst mode" if burst else "",
        )

        previous_handlers = self._install_signal_handlers()
        try:
            jobs_run = self._run_loop(burst)
        finally:
            _restore_signal_handlers(previous_handlers)
            self.queue.close()

        reason = "no job ready" if self._stop_signal is None else self._stop_signal.name
        logger.info("worker %s stopped (%s) after %d jobs", self.worker_id, reason, jobs_run)
        return jobs_run

    def request_stop(self):
        """Make work() return once the current job, if any, has ended."""
        self._stop_requested = True

    def perform_job(self, job):
        """Run a claimed job with a lease heartbeat, then record it finished or failed.

        An exception that is not an Exception subclass, such as SystemExit, propagates
        and leaves the job started, so it is claimed again once its lease expires.
        """
        heartbeat = Heartbeat(self.queue, job, self.heartbeat_interval)
        heartbeat.start()
        started = time.monotonic()
        error = None

        try:
            result = self._call_in_app_context(job)
        except Exception as exc:
            error = exc
        finally:
            heartbeat.stop()

        duration_ms = (time.monotonic() - started) * 1000
        if error is None:
            self._record_finished(job, result, duration_ms)
        else:
            self._record_failed(job, error, duration_ms)

    def _run_loop(self, burst):
        jobs_run = 0
        idle_sleep = IDLE_SLEEP_START_SECONDS

        while not self._stop_requested:
            try:
                job = self.queue.claim(self.worker_id, queues=self.queues)
            except sqlite3.OperationalError:
                logger.exception(
                    "worker %s failed to claim a job from %s, retrying in %g s",
                    self.worker_id,
                    self.queue.path,
                    idle_sleep,
                )
                job = None
            else:
                if job is None and burst:
                    break

            if job is None:
                time.sleep(idle_sleep)
                idle_sleep = next_idle_sleep(idle_sleep)
                continue

            self.perform_job(job)
            jobs_run += 1
            idle_sleep = IDLE_SLEEP_START_SECONDS
        return jobs_run

    def _call_in_app_context(self, job):
        with self.app.app_context():
            try:
                return job.perform()
            finally:
                _remove_db_session(self.app)

    def _record_finished(self, job, result, duration_ms):
        try:
            stored = self.queue.finish(job, result)
        except sqlite3.Error:
            logger.exception(
                "job %s %s finished in %d ms, but storing the result failed,"
                " so it runs again after its lease expires",
                job.id,
                job.func,
                duration_ms,
            )
            return

        if stored:
            logger.info("job %s %s finished in %d ms", job.id, job.func, duration_ms)
        else:
            logger.warning(
                "job %s %s finished in %d ms, but its lease had expired and the result"
                " was not stored",
                job.id,
                job.func,
                duration_ms,
            )

    def _record_failed(self, job, error, duration_ms):
        try:
            updated = self.queue.fail(job, error)
        except sqlite3.Error:
            logger.exception(
                "job %s %s failed in %d ms, and storing the failure failed too,"
                " so it runs again after its lease expires",
                job.id,
                job.func,
                duration_ms,
            )
            return

        attempt = f"attempt {job.attempts} of {job.max_attempts}"
        if updated is None:
            logger.warning(
                "job %s %s failed in %d ms (%s), but its lease had expired and the"
                " failure was not stored",
                job.id,
                job.func,
                duration_ms,
                attempt,
                exc_info=error,
            )
        elif updated.status == QUEUED:
            logger.warning(
                "job %s %s failed in %d ms (%s), retry in %g s",
                job.id,
                job.func,
                duration_ms,
                attempt,
                retry_delay(job.attempts),
                exc_info=error,
            )
        else:
            logger.error(
                "job %s %s failed in %d ms (%s), no attempts left",
                job.id,
                job.func,
                duration_ms,
                attempt,
                exc_info=error,
            )

    def _install_signal_handlers(self):
        """Set SIGINT and SIGTERM to request a stop, and return the previous handlers."""
        # Python only lets the main thread set signal handlers.
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, self._handle_stop_signal) for signum in STOP_SIGNALS}

    def _handle_stop_signal(self, signum, frame):
        # Only set flags, because logging here could deadlock on a lock that the
        # interrupted main thread has taken.
        self._stop_signal = signal.Signals(signum)
        self._stop_requested = True


class Heartbeat(threading.Thread):
    """Thread that renews a job's lease every interval seconds until stop() is called."""

    def __init__(self, queue, job, interval):
        super().__init__(name=f"heartbeat-{job.id}", daemon=True)
        self.queue = queue
        self.job = job
        self.interval = interval
        self._stopped = threading.Event()

    def run(self):
        try:
            while not self._stopped.wait(self.interval):
                if not self._renew():
                    return
        finally:
            self.queue.close()

    def stop(self):
        """Stop renewing and wait for the thread to end."""
        self._stopped.set()
        self.join()

    def _renew(self):
        """Extend the lease once, and return False if the job is no longer leased to this worker."""
        try:
            renewed = self.queue.extend_lease(self.job)
        except sqlite3.Error:
            logger.exception(
                "job %s: renewing its lease failed, retrying in %g s",
                self.job.id,
                self.interval,
            )
            return True

        if not renewed:
            logger.warning(
                "job %s %s is no longer leased to worker %s, so it may run twice",
                self.job.id,
                self.job.func,
                self.job.worker_id,
            )
        return renewed


def queue_for_app(app):
    """Open the Queue named by app.config["QUEUE_DATABASE"] with the app's lease length."""
    lease_seconds = app.config.get("QUEUE_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)
    return Queue(queue_path_from_config(app.config), lease_seconds=lease_seconds)


def make_worker_id():
    """Return "hostname.pid.suffix", whose random suffix distinguishes workers that reuse a pid."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"


def next_idle_sleep(seconds):
    """Return the idle sleep that follows one of `seconds`, capped at IDLE_SLEEP_MAX_SECONDS."""
    return min(seconds * IDLE_SLEEP_FACTOR, IDLE_SLEEP_MAX_SECONDS)


def _remove_db_session(app):
    """Roll back and close the job's SQLAlchemy session so the next job starts clean."""
    if db is not None and app.extensions.get("sqlalchemy") is db:
        db.session.remove()


def _restore_signal_handlers(previous_handlers):
    for signum, handler in previous_handlers.items():
        # None means the handler was not set from Python and cannot be restored.
        if handler is not None:
            signal.signal(signum, handler)
