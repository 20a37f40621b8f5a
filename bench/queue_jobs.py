"""The benchmark's job: record the job number in the consumer's record file, and nothing else.

Every system under test runs these functions, so each consumer process leaves a file
with one line per job it ran. Duplicates and lost jobs are counted from those files.
"""

import os
import time
from pathlib import Path

#: Maximum time a held job waits for its release file.
HOLD_SECONDS = 30.0

_record_fd = None


def open_record(path):
    """Direct this process's records to path, appending."""
    global _record_fd
    _record_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def record(number, payload):
    """Append the job number to the record file. The payload is only carried."""
    os.write(_record_fd, b"%d\n" % number)


def hold(number, payload, started_path, release_path):
    """Note this pid and the time in started_path, wait for release_path, then record the job."""
    with open(started_path, "a") as file:
        file.write(f"{os.getpid()} {time.time()}\n")

    deadline = time.monotonic() + HOLD_SECONDS
    while not Path(release_path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    record(number, payload)


def read_records(folder):
    """Return how many times each job number was recorded by the files in folder."""
    counts = {}
    for path in Path(folder).glob("*.records"):
        for line in path.read_text().split():
            number = int(line)
            counts[number] = counts.get(number, 0) + 1
    return counts
