"""Supervisor that runs several worker processes on one queue file.

``flask --app promptgen worker --concurrency N`` forks N child processes. Each runs its
own Worker in its own main thread, one job at a time, so job timeouts (SIGALRM) work
in every child. The parent runs no jobs. It forwards SIGINT and SIGTERM to the
children, and SIGKILLs any child still running QUEUE_SHUTDOWN_GRACE_SECONDS plus
KILL_MARGIN_SECONDS after the signal. The job of a killed child is taken again once
its lease expires. Outside burst mode a child that exits on its own is logged and
replaced.

NOTE: a child whose parent is killed with SIGKILL keeps running jobs until it is
stopped itself, because it does not check whether its parent is alive.
"""

import logging
import os
import signal
import time

from .worker import STOP_SIGNALS

logger = logging.getLogger(__name__)

#: Extra time a stopping child gets after its grace period before it is killed.
KILL_MARGIN_SECONDS = 10.0
#: How often the parent checks on its children.
POLL_SECONDS = 0.2
#: A child that exits within this many seconds of starting is replaced only after a pause.
RESTART_PAUSE_SECONDS = 1.0


class WorkerPool:
    """Forks, watches and stops `concurrency` worker processes."""

    def __init__(self, make_worker, concurrency, *, burst=False, grace_seconds=30.0):
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, got {concurrency!r}")
        self.make_worker = make_worker
        self.concurrency = concurrency
        self.burst = burst
        self.grace_seconds = grace_seconds
        self.children = {}
        self._stop_signal = None
        self._kill_at = None

    def run(self):
        """Start the children and return once all of them have exited. Return the exit status."""
        previous = {signum: signal.signal(signum, self._handle_stop_signal) for signum in STOP_SIGNALS}
        failures = 0
        try:
            for slot in range(self.concurrency):
                self._start(slot)
            logger.info(
                "worker pool %d started %d worker processes: %s",
                os.getpid(),
                self.concurrency,
                ", ".join(str(pid) for pid in self.children),
            )
            failures = self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        reason = "all workers done" if self._stop_signal is None else self._stop_signal.name
        logger.info("worker pool %d stopped (%s)", os.getpid(), reason)
        return 1 if failures else 0

    def _start(self, slot):
        pid = os.fork()
        if pid == 0:
            self._run_child(slot)
        self.children[pid] = (slot, time.monotonic())

    def _run_child(self, slot):
        """Run one Worker in this forked child and exit without returning."""
        code = 1
        try:
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            self.make_worker(slot).work(burst=self.burst)
            code = 0
        except BaseException:
            logger.exception("worker process %d crashed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def _supervise(self):
        failures = 0
        while self.children:
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self._kill_remaining()

            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(POLL_SECONDS)
                continue

            slot, started = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                failures += 1
                logger.error("worker process %d exited with status %d", pid, code)
            if self._stop_signal is None and not self.burst:
                if time.monotonic() - started < RESTART_PAUSE_SECONDS:
                    time.sleep(RESTART_PAUSE_SECONDS)
                self._start(slot)
                logger.info("worker process %d replaces %d", self._pid_of(slot), pid)
        return failures

    def _pid_of(self, slot):
        return next(pid for pid, (other, _) in self.children.items() if other == slot)

    def _kill_remaining(self):
        for pid in self.children:
            logger.warning(
                "worker process %d still running %g s after the stop signal, killing it",
                pid,
                self.grace_seconds + KILL_MARGIN_SECONDS,
            )
            os.kill(pid, signal.SIGKILL)
        self._kill_at = None

    def _handle_stop_signal(self, signum, frame):
        self._stop_signal = signal.Signals(signum)
        if self._kill_at is None:
            self._kill_at = time.monotonic() + self.grace_seconds + KILL_MARGIN_SECONDS
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
