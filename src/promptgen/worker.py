"""Worker that claims jobs from the SQLite queue and runs them in an app context.

``flask --app promptgen worker`` runs ``Worker(app).work()`` in one process, or in
--concurrency N forked processes (see promptgen.worker_pool). Settings, all optional
except QUEUE_DATABASE:

    QUEUE_DATABASE               the queue file, unless a Queue is passed
    QUEUE_PRIORITIES             queue names and weights (see promptgen.queue_priorities)
    QUEUE_LEASE_SECONDS          how long a claim lasts without a heartbeat
    QUEUE_DEFAULT_TIMEOUT        seconds a job may run when it has no timeout of its own
    QUEUE_SHUTDOWN_GRACE_SECONDS how long a stop signal waits for the running job
    PERIODIC_JOBS                jobs the scheduler enqueues at intervals (promptgen.scheduler)

Each worker runs one job at a time in its main thread. A job's timeout is enforced
with SIGALRM: the handler raises JobTimeout inside the job, the attempt is recorded as
failed, and the worker goes on with the next job. Python runs signal handlers in the
main thread only, so a Worker started in another thread runs jobs without timeouts.
A job blocked in C code that does not return to the interpreter is not interrupted.

On SIGINT or SIGTERM the worker claims nothing more and gives the running job
QUEUE_SHUTDOWN_GRACE_SECONDS to end. A job still running then is interrupted and
released, queued again without counting the attempt, and work() returns. A second
SIGINT or SIGTERM ends the grace period at once. A job that raises SystemExit, such
as by calling sys.exit(), fails that attempt like any other error.

A claim that fails with sqlite3.OperationalError, such as "database is locked", is
retried after the idle sleep. In burst mode work() raises ClaimError once
BURST_CLAIM_ATTEMPTS claims in a row have failed.

A second thread renews the running job's lease and, unless in burst mode, runs the
periodic scheduler, which one worker at a time leads.
"""

import logging
import os
import secrets
import signal
import socket
import sqlite3
import threading
import time

from .queue import (
    DEFAULT_LEASE_SECONDS,
    SCHEDULED,
    Queue,
    queue_path_from_config,
    retry_delay,
)
from .queue_priorities import DEFAULT_PRIORITIES, QueuePriorities
from .scheduler import PeriodicScheduler, periodic_entries

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

#: Claims that may fail in a row in burst mode before work() raises ClaimError.
BURST_CLAIM_ATTEMPTS = 3

DEFAULT_JOB_TIMEOUT_SECONDS = 600.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class JobTimeout(BaseException):
    """Raised inside a job that ran past its timeout.

    It derives from BaseException so that a job's own ``except Exception`` does not
    swallow it.
    """


class ShutdownInterrupt(BaseException):
    """Raised inside a job still running when the shutdown grace period ends."""


class ClaimError(RuntimeError):
    """Raised by work() in burst mode when BURST_CLAIM_ATTEMPTS claims in a row failed."""


class Worker:
    """Claims ready jobs one at a time and runs each inside ``app.app_context()``."""

    def __init__(
        self,
        app,
        queue=None,
        *,
        queues=None,
        worker_id=None,
        default_timeout=None,
        grace_seconds=None,
        rng=None,
    ):
        config = app.config
        self.app = app
        self.queue = queue if queue is not None else queue_for_app(app)
        self.priorities = QueuePriorities.for_worker(
            config.get("QUEUE_PRIORITIES", DEFAULT_PRIORITIES), queues, rng
        )
        self.worker_id = worker_id or make_worker_id()
        self.heartbeat_interval = self.queue.lease_seconds / HEARTBEATS_PER_LEASE
        self.default_timeout = _setting(
            default_timeout, config, "QUEUE_DEFAULT_TIMEOUT", DEFAULT_JOB_TIMEOUT_SECONDS
        )
        self.grace_seconds = _setting(
            grace_seconds, config, "QUEUE_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS
        )
        self.periodic = periodic_entries(config.get("PERIODIC_JOBS", ()))

        self.current_job = None
        self._stop_signal = None
        self._stop_requested = False
        self._failed_claims = 0
        self._signal_log = None
        self._alarm_enabled = False
        self._timeout_seconds = None
        self._job_deadline = None
        self._shutdown_deadline = None
        #: time.monotonic() when the armed SIGALRM timer fires, or None if none is armed.
        self._alarm_at = None

    @property
    def queues(self):
        """Names of the queues this worker takes jobs from, highest weight first."""
        return self.priorities.names

    def work(self, burst=False):
        """Run jobs until a stop signal, or until none is ready if burst. Return the job count."""
        self._log_start(burst)
        previous_handlers = self._install_signal_handlers()
        maintenance = Maintenance(self, scheduler=None if burst else self._scheduler())
        maintenance.start()
        try:
            jobs_run = self._run_loop(burst)
        finally:
            maintenance.stop()
            self._cancel_alarm()
            _restore_signal_handlers(previous_handlers)
            # The restored handlers no longer write to the signal log's pipe, so it can close.
            if self._signal_log is not None:
                self._signal_log.stop()
            self.queue.close()

        reason = "no job ready" if self._stop_signal is None else self._stop_signal.name
        logger.info("worker %s stopped (%s) after %d jobs", self.worker_id, reason, jobs_run)
        return jobs_run

    def request_stop(self):
        """Make work() return once the current job, if any, has ended."""
        self._stop_requested = True

    def perform_job(self, job, claim_next=False):
        """Run a claimed job, record it finished or failed, and return the next job or None.

        With claim_next, a finished job's result and the next claim share one
        transaction. SystemExit counts as a failed attempt, with the exit code in the
        error message. Other exceptions that are not Exception subclasses, such as
        KeyboardInterrupt, propagate and leave the job started, so it is claimed again
        once its lease expires.
        """
        started = time.monotonic()
        try:
            result = self._call_with_timeout(job)
        except JobTimeout as error:
            return self._record_failed(job, error, started)
        except ShutdownInterrupt:
            self._release(job, started)
            return None
        except Exception as error:
            return self._record_failed(job, error, started)
        except SystemExit as error:
            return self._record_failed(job, _job_exit_error(error), started)

        return self._record_finished(job, result, started, claim_next)

    def _run_loop(self, burst):
        jobs_run = 0
        idle_sleep = IDLE_SLEEP_START_SECONDS
        job = None

        while True:
            if self._stop_requested:
                if job is not None:
                    self._release(job, time.monotonic())
                break

            if job is None:
                job = self._claim(idle_sleep, burst)
            if job is None:
                if burst and not self._failed_claims:
                    break
                time.sleep(idle_sleep)
                idle_sleep = next_idle_sleep(idle_sleep)
                continue

            job = self.perform_job(job, claim_next=True)
            jobs_run += 1
            idle_sleep = IDLE_SLEEP_START_SECONDS
        return jobs_run

    def _claim(self, idle_sleep, burst):
        """Claim the next ready job, or return None if none is ready or the claim failed.

        In burst mode the claim that makes BURST_CLAIM_ATTEMPTS failures in a row
        raises ClaimError instead.
        """
        try:
            job = self.queue.claim(self.worker_id, queues=self.priorities.order())
        except sqlite3.OperationalError as error:
            self._failed_claims += 1
            if burst and self._failed_claims >= BURST_CLAIM_ATTEMPTS:
                raise ClaimError(
                    f"failed to claim a job from {self.queue.path}"
                    f" {self._failed_claims} times in a row: {error}"
                ) from error
            attempts = ""
            if burst:
                attempts = f" (attempt {self._failed_claims} of {BURST_CLAIM_ATTEMPTS})"
            logger.exception(
                "worker %s failed to claim a job from %s%s, retrying in %g s",
                self.worker_id,
                self.queue.path,
                attempts,
                idle_sleep,
            )
            return None

        self._failed_claims = 0
        return job

    def _call_with_timeout(self, job):
        timeout = job.timeout if job.timeout is not None else self.default_timeout
        with self.app.app_context():
            try:
                # The SIGALRM and stop signal handlers interrupt only while current_job
                # is set, so they do not interrupt the recording of the job's outcome.
                self.current_job = job
                self._arm_alarm(timeout)
                return job.perform()
            finally:
                self.current_job = None
                self._job_deadline = None
                _remove_db_session(self.app)

    def _record_finished(self, job, result, started, claim_next):
        duration_ms = _elapsed_ms(started)
        queues = self.priorities.order() if claim_next and not self._stop_requested else None
        try:
            stored, next_job = self.queue.finish_and_claim(
                job,
                result,
                worker_id=None if queues is None else self.worker_id,
                queues=queues,
            )
        except sqlite3.Error:
            logger.exception(
                "job %s %s finished in %d ms, but storing the result failed,"
                " so it runs again after its lease expires",
                job.id,
                job.func,
                duration_ms,
            )
            return None

        if stored:
            self._log_job(logging.INFO, job, "finished", duration_ms)
        else:
            self._log_job(
                logging.WARNING,
                job,
                "finished, but its lease had expired and the result was not stored",
                duration_ms,
            )
        return next_job

    def _record_failed(self, job, error, started):
        duration_ms = _elapsed_ms(started)
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
            return None

        attempt = f"attempt {job.attempts} of {job.max_attempts}"
        if updated is None:
            outcome = f"failed ({attempt}), but its lease had expired and the failure was not stored"
            self._log_job(logging.WARNING, job, outcome, duration_ms, error)
        elif updated.status == SCHEDULED:
            delay = updated.run_at - self.queue.clock()
            outcome = f"failed ({attempt}), retry in {max(delay, 0):.3g} s"
            self._log_job(logging.WARNING, job, outcome, duration_ms, error)
        else:
            outcome = f"failed ({attempt}), no attempts left"
            self._log_job(logging.ERROR, job, outcome, duration_ms, error)
        return None

    def _release(self, job, started):
        try:
            released = self.queue.release(job)
        except sqlite3.Error:
            logger.exception("job %s %s could not be released", job.id, job.func)
            return
        outcome = "released unfinished at shutdown" if released else "no longer leased"
        self._log_job(logging.WARNING, job, outcome, _elapsed_ms(started))

    def _log_job(self, level, job, outcome, duration_ms, error=None):
        """Log the one line that each job gets: id, function, queue, wait, duration and outcome."""
        if not logger.isEnabledFor(level):
            return
        wait_ms = (job.wait_seconds or 0.0) * 1000
        logger.log(
            level,
            "job %s %s queue %s waited %d ms, ran %d ms: %s",
            job.id,
            job.func,
            job.queue,
            wait_ms,
            duration_ms,
            outcome,
            exc_info=error,
        )

    def _log_start(self, burst):
        logger.info(
            "worker %s started: pid %d, queue file %s, queues %s, lease %g s,"
            " default timeout %g s, shutdown grace %g s, timeouts %s%s",
            self.worker_id,
            os.getpid(),
            self.queue.path,
            self.priorities.describe(),
            self.queue.lease_seconds,
            self.default_timeout,
            self.grace_seconds,
            "on" if _in_main_thread() else "off (not the main thread)",
            ", burst mode" if burst else "",
        )

    def _scheduler(self):
        if not self.periodic:
            return None
        return PeriodicScheduler(self.queue, self.periodic, owner=self.worker_id)

    def _install_signal_handlers(self):
        """Set SIGINT, SIGTERM and SIGALRM handlers, and return the previous handlers."""
        # Python only lets the main thread set signal handlers.
        if not _in_main_thread():
            return {}
        self._signal_log = StopSignalLog(self)
        self._signal_log.start()
        previous = {
            signum: signal.signal(signum, self._handle_stop_signal) for signum in STOP_SIGNALS
        }
        previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._handle_alarm)
        self._alarm_enabled = True
        return previous

    def _handle_stop_signal(self, signum, frame):
        # Only set flags and the timer, and leave the log line to StopSignalLog, because
        # logging here could deadlock on a lock that the interrupted main thread has taken.
        if self._stop_signal is None:
            self._stop_signal = signal.Signals(signum)
            self._stop_requested = True
            self._shutdown_deadline = time.monotonic() + self.grace_seconds
        else:
            # A repeated signal ends the grace period now, so _handle_alarm interrupts
            # the running job and perform_job releases it.
            self._shutdown_deadline = time.monotonic()
        self._rearm_alarm()
        self._signal_log.notify(signum, job_running=self.current_job is not None)

    def _handle_alarm(self, signum, frame):
        self._alarm_at = None
        if self.current_job is None:
            return
        now = time.monotonic()
        if self._shutdown_deadline is not None and now >= self._shutdown_deadline:
            raise ShutdownInterrupt()
        if self._job_deadline is not None and now >= self._job_deadline:
            raise JobTimeout(f"job ran past its timeout of {self._timeout_seconds:g} s")
        # A timer that fired early, such as one set for an earlier job, is set again
        # for what remains.
        self._rearm_alarm()

    def _arm_alarm(self, timeout):
        self._timeout_seconds = timeout
        self._job_deadline = None if timeout is None else time.monotonic() + timeout
        self._rearm_alarm()

    def _rearm_alarm(self):
        """Make sure the SIGALRM timer fires no later than the nearest deadline.

        A timer that will fire sooner is left alone: most jobs end well before their
        timeout, and leaving the timer set spares each job two setitimer calls. When
        that timer fires during a later job, the handler sets it again for what remains.
        """
        if not self._alarm_enabled:
            return
        deadline = self._job_deadline
        shutdown = self._shutdown_deadline
        if deadline is None or (shutdown is not None and shutdown < deadline):
            deadline = shutdown
        if deadline is None or (self._alarm_at is not None and self._alarm_at <= deadline):
            return
        now = time.monotonic()
        remaining = max(deadline - now, 0.001)
        signal.setitimer(signal.ITIMER_REAL, remaining)
        self._alarm_at = now + remaining

    def _cancel_alarm(self):
        self._job_deadline = None
        if self._alarm_enabled:
            signal.setitimer(signal.ITIMER_REAL, 0)
        self._alarm_at = None


class Maintenance(threading.Thread):
    """Thread that renews the running job's lease and runs the periodic scheduler."""

    def __init__(self, worker, scheduler=None):
        super().__init__(name=f"maintenance-{worker.worker_id}", daemon=True)
        self.worker = worker
        self.scheduler = scheduler
        self.interval = worker.heartbeat_interval
        if scheduler is not None:
            self.interval = min(self.interval, scheduler.tick_seconds)
        self._stopped = threading.Event()
        self._leased_job = None
        self._lease_until = None

    def run(self):
        queue = self.worker.queue
        try:
            while not self._stopped.wait(self.interval):
                self._renew_lease()
                if self.scheduler is not None:
                    self.scheduler.tick_logging_errors()
        finally:
            if self.scheduler is not None:
                self.scheduler.resign()
            queue.close()

    def stop(self):
        """Stop the thread and wait for it to end."""
        self._stopped.set()
        self.join()

    def _renew_lease(self):
        """Renew the running job's lease when a heartbeat interval has passed since the last renewal."""
        job = self.worker.current_job
        if job is None:
            return
        if job is not self._leased_job:
            self._leased_job = job
            self._lease_until = job.lease_until

        queue = self.worker.queue
        renew_at = self._lease_until - queue.lease_seconds + self.worker.heartbeat_interval
        if queue.clock() < renew_at:
            return
        self._lease_until = queue.clock() + queue.lease_seconds
        try:
            renewed = self.worker.queue.extend_lease(job)
        except sqlite3.Error:
            logger.exception(
                "job %s: renewing its lease failed, retrying in %g s", job.id, self.interval
            )
            return

        # The job may have ended between reading current_job and the renewal.
        if not renewed and self.worker.current_job is job:
            logger.warning(
                "job %s %s is no longer leased to worker %s, so it may run twice",
                job.id,
                job.func,
                job.worker_id,
            )


class StopSignalLog(threading.Thread):
    """Thread that logs each stop signal that the worker's signal handler received.

    The handler writes one byte per signal to a pipe, because a write(2) takes no
    lock that the interrupted main thread could hold, and this thread logs it.
    """

    #: Set in a byte whose low bits are the signal number when a job was running.
    JOB_RUNNING = 0x80
    #: The byte that makes run() return. No signal has the number 0.
    STOP = 0

    def __init__(self, worker):
        super().__init__(name=f"signals-{worker.worker_id}", daemon=True)
        self.worker = worker
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)

    def notify(self, signum, job_running):
        """Queue one log line for signum. Safe to call from a signal handler."""
        value = signum | self.JOB_RUNNING if job_running else signum
        try:
            os.write(self._write_fd, bytes((value,)))
        except BlockingIOError:
            # NOTE: the line is lost when the pipe is full, which on Linux takes 64 KiB
            # of unlogged signals by default.
            pass

    def run(self):
        signals_received = 0
        try:
            while True:
                for value in os.read(self._read_fd, 64):
                    if value == self.STOP:
                        return
                    signals_received += 1
                    self._log(signals_received, value)
        finally:
            os.close(self._read_fd)

    def stop(self):
        """Log the signals still in the pipe, then end the thread and wait for it."""
        os.write(self._write_fd, bytes((self.STOP,)))
        self.join()
        os.close(self._write_fd)

    def _log(self, signals_received, value):
        worker = self.worker
        name = signal.Signals(value & ~self.JOB_RUNNING).name
        job_running = bool(value & self.JOB_RUNNING)
        if signals_received == 1 and job_running:
            logger.info(
                "worker %s received %s: finishing the current job within the grace period"
                " of %g s; send the signal again to stop now",
                worker.worker_id,
                name,
                worker.grace_seconds,
            )
        elif signals_received == 1:
            logger.info(
                "worker %s received %s: stopping, no job is running", worker.worker_id, name
            )
        elif job_running:
            logger.warning(
                "worker %s received %s again: stopping now and releasing the current job",
                worker.worker_id,
                name,
            )
        else:
            logger.warning("worker %s received %s again: stopping now", worker.worker_id, name)


def queue_for_app(app):
    """Open the Queue named by app.config["QUEUE_DATABASE"] with the app's settings."""
    return Queue(
        queue_path_from_config(app.config),
        lease_seconds=app.config.get("QUEUE_LEASE_SECONDS", DEFAULT_LEASE_SECONDS),
        synchronous=app.config.get("QUEUE_SYNCHRONOUS", "NORMAL"),
    )


def make_worker_id():
    """Return "hostname.pid.suffix", whose random suffix distinguishes workers that reuse a pid."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"


def next_idle_sleep(seconds):
    """Return the idle sleep that follows one of `seconds`, capped at IDLE_SLEEP_MAX_SECONDS."""
    return min(seconds * IDLE_SLEEP_FACTOR, IDLE_SLEEP_MAX_SECONDS)


def _setting(value, config, key, default):
    if value is not None:
        return float(value)
    return float(config.get(key, default))


def _job_exit_error(error):
    """Return a SystemExit for the job's failure record whose message names the exit code.

    str() of sys.exit(0) is only "0", and of sys.exit() is empty.
    """
    described = SystemExit(f"job exited with code {error.code!r}")
    return described.with_traceback(error.__traceback__)


def _elapsed_ms(started):
    return (time.monotonic() - started) * 1000


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


def _remove_db_session(app):
    """Roll back and close the job's SQLAlchemy session so the next job starts clean."""
    if db is not None and app.extensions.get("sqlalchemy") is db:
        db.session.remove()


def _restore_signal_handlers(previous_handlers):
    for signum, handler in previous_handlers.items():
        # None means the handler was not set from Python and cannot be restored.
        if handler is not None:
            signal.signal(signum, handler)
