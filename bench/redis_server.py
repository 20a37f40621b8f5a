"""A throwaway redis-server on 127.0.0.1 for the RQ runs, stopped by its own pid."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_SECONDS = 10.0


class RedisServer:
    """redis-server on a free 127.0.0.1 port, without persistence, in folder."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.port = _free_port()
        self.process = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def start(self):
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server not found on PATH. Install it with `apt-get install redis-server`"
                " or run `make bench`, which does."
            )

        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "redis.log", "wb")
        self.process = subprocess.Popen(
            [
                executable,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        self._wait_until_ready()

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _wait_until_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with status {self.process.returncode};"
                    f" see {self.folder / 'redis.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not respond to PING within {START_TIMEOUT_SECONDS} s")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
