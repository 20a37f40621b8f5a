"""Supervisor that runs several worker processes on one queue file.

``flask --app promptgen worker --concurrency N`` forks N child processes. Each runs its
own Worker in its own main thread, one job at a time, so job timeouts (SIGALRM) work
in every child. The parent runs no jobs. It forwards SIGINT and SIGTERM to the
children, and SIGKILLs any child still running QUEUE_SHUTDOWN_GRACE_SECONDS plus
KILL_MARGIN_SECONDS after the first signal. The job of a killed child is taken again
once its lease expires. Outside burst mode a child that exits on its own is logged
and replaced.

Each child runs in its own process group, so it gets only the pool's forwarded copy
of a stop signal, and not also the copy that a terminal's Ctrl-C or a killpg() sends
to the pool's group. Two copies would count as a second signal, which makes a worker
stop at once.

A child stops when the parent exits in any way, SIGKILL and crashes included. On
Linux the kernel sends the child SIGTERM when the parent exits (prctl
PR_SET_PDEATHSIG). Elsewhere a thread in the child checks its parent every
PARENT_POLL_SECONDS and sends the SIGTERM itself. The child then stops as on a
forwarded SIGTERM. It claims no more jobs, lets the running job finish within the
grace period and releases it otherwise. If the child still runs grace plus
KILL_MARGIN_SECONDS after that thread noticed the exit, the thread sends it SIGKILL,
as the parent would have. It can't while a job blocked in C code holds the GIL. A
child whose parent exited before the child started work exits at once.
"""

import ctypes
import logging
import os
import signal
import sys
import threading
import time

from .worker import STOP_SIGNALS, ClaimError

logger = logging.getLogger(__name__)

#: Extra time a stopping child gets after its grace period before it is killed.
KILL_MARGIN_SECONDS = 10.0
#: How often the parent checks on its children.
POLL_SECONDS = 0.2
#: A child that exits within this many seconds of starting is replaced only after a pause.
RESTART_PAUSE_SECONDS = 1.0
#: How often a child checks whether its parent has exited.
PARENT_POLL_SECONDS = 1.0
#: The prctl(2) option that sets the signal a process gets when its parent exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1


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
        parent_pid = os.getpid()
        # Stop signals are blocked across fork(). The child must not run the pool's
        # handler, which would forward the signal to the other children. The pool must
        # record the child before it forwards a signal, so that the child gets it too.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            # PR_SET_PDEATHSIG fires when the thread that forked the child exits. Only
            # the main thread can call run(), because run() sets signal handlers, and
            # the main thread lives as long as the pool process.
            pid = os.fork()
            if pid == 0:
                self._run_child(slot, parent_pid, previous_mask)
            self.children[pid] = (slot, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)

    def _run_child(self, slot, parent_pid, signal_mask):
        """Run one Worker in this forked child and exit without returning."""
        code = 1
        try:
            # Until the Worker sets its own handlers, a stop signal ends the child at
            # once, which is safe because it has claimed no job yet.
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            os.setpgid(0, 0)
            signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
            if watch_parent(parent_pid, self.grace_seconds + KILL_MARGIN_SECONDS):
                self.make_worker(slot).work(burst=self.burst)
                _log_parent_exit(parent_pid)
            code = 0
        except ClaimError as error:
            logger.error("worker process %d stopped: %s", os.getpid(), error)
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


class ParentWatch(threading.Thread):
    """Daemon thread that stops this worker process once its pool process has exited.

    With send_sigterm it sends the process SIGTERM, for platforms where the kernel
    does not. If the process still runs kill_after_seconds later, the thread sends it
    SIGKILL, as the pool process would have.
    """

    def __init__(self, parent_pid, kill_after_seconds, send_sigterm, poll_seconds=PARENT_POLL_SECONDS):
        super().__init__(name=f"parent-watch-{parent_pid}", daemon=True)
        self.parent_pid = parent_pid
        self.kill_after_seconds = kill_after_seconds
        self.send_sigterm = send_sigterm
        self.poll_seconds = poll_seconds

    def run(self):
        # After the parent exits, the child is reparented and getppid() changes.
        while os.getppid() == self.parent_pid:
            time.sleep(self.poll_seconds)

        if self.send_sigterm:
            logger.warning(
                "pool process %d exited, sending SIGTERM to worker process %d",
                self.parent_pid,
                os.getpid(),
            )
            os.kill(os.getpid(), signal.SIGTERM)

        # NOTE: this thread needs the GIL, so a job blocked in C code that holds the
        # GIL keeps the process alive until the job returns.
        time.sleep(self.kill_after_seconds)
        logger.warning(
            "worker process %d still running %g s after pool process %d exited, killing it",
            os.getpid(),
            self.kill_after_seconds,
            self.parent_pid,
        )
        os.kill(os.getpid(), signal.SIGKILL)


def watch_parent(parent_pid, kill_after_seconds):
    """Make this worker process stop when its pool process parent_pid exits.

    Return False if the parent has already exited, in which case the caller must not
    start work. See ParentWatch for kill_after_seconds.
    """
    kernel_sends_sigterm = set_parent_death_signal(signal.SIGTERM)
    # The parent may have exited between fork() and prctl(), and then no signal comes.
    if os.getppid() != parent_pid:
        logger.warning(
            "worker process %d exits without taking jobs because pool process %d has exited",
            os.getpid(),
            parent_pid,
        )
        return False

    ParentWatch(parent_pid, kill_after_seconds, send_sigterm=not kernel_sends_sigterm).start()
    return True


def set_parent_death_signal(signum):
    """Ask Linux to send this process signum when its parent exits. Return True on success.

    Return False on other platforms and when prctl(2) fails.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        # CDLL(None) opens the running program, whose symbols include libc's prctl().
        libc = ctypes.CDLL(None, use_errno=True)
        unused = ctypes.c_ulong(0)
        result = libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), unused, unused, unused)
    except (OSError, AttributeError) as error:
        logger.warning(
            "prctl() is not available in worker process %d (%s), so it polls its parent instead",
            os.getpid(),
            error,
        )
        return False

    if result != 0:
        logger.warning(
            "prctl(PR_SET_PDEATHSIG) failed in worker process %d (%s),"
            " so it polls its parent instead",
            os.getpid(),
            os.strerror(ctypes.get_errno()),
        )
        return False
    return True


def _log_parent_exit(parent_pid):
    if os.getppid() != parent_pid:
        logger.warning(
            "worker process %d stopped because pool process %d exited", os.getpid(), parent_pid
        )
