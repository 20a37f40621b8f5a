"""Helpers for tests that start real processes on free local ports."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from werkzeug.serving import make_server

FIXTURES = Path(__file__).parent / "fixtures"
BIN = Path(sys.executable).parent


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout=30.0, interval=0.05, message="condition"):
    """Poll condition() until it returns a true value, and return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def is_serving(url):
    try:
        httpx.get(url, timeout=1.0)
    except httpx.TransportError:
        return False
    return True


class Process:
    """A child process whose output goes to a log file that a failing test can print."""

    def __init__(self, name, args, env, log_dir):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=10.0):
        """Send SIGTERM, wait, and SIGKILL if the process is still running."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


def is_running(pid):
    """Return whether process `pid` exists and has not exited.

    An exited process that its parent has not reaped yet (a zombie) counts as exited.
    An orphan stays a zombie until init reaps it, so os.kill(pid, 0) alone can't tell.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    try:
        stat = (proc / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in brackets and may contain spaces.
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def kill_if_running(pid):
    """Send SIGKILL to process `pid` unless it has already exited."""
    if not is_running(pid):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def flask_command(*args):
    return [str(BIN / "flask"), "--app", "promptgen", *args]


class ServerThread:
    """A werkzeug server for a WSGI app on a free 127.0.0.1 port, run in a thread."""

    def __init__(self, app):
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # A short poll interval lets stop() return quickly.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

        # A simulator's webhook deliveries and retries would otherwise go on after the test.
        simulator = getattr(self.app, "extensions", {}).get("replicate_simulator")
        if simulator is not None:
            simulator.close()
