"""Run every queue through the same phases and write the figures under bench/results/.

Usage: python -m bench.queue_bench [--jobs N] [--rounds R] [--only NAME ...]

For each system, in one run and one process tree:

1. enqueue: one producer process enqueues N jobs (number, payload), timed;
2. drain with 1 and with 4 consumer processes, each on a freshly filled queue. The
   consumers open their queue first, then start together; the time runs until the
   last one finds the queue empty;
3. duplicates and lost jobs: every consumer records each job number it ran;
4. SIGKILL: one consumer takes a job that blocks, its process group is killed with
   SIGKILL mid-job, and a second consumer polls for KILL_WINDOW_SECONDS. The result
   reports how often the job started again and how long after the kill.

The targets compare promptgen with the bare SQLite reference within a factor of two,
and the speed of a shared machine drifts by more than that margin from one phase to
the next. So these systems run phases 1 to 3 in R interleaved rounds (bare, promptgen,
bare, promptgen, ...), and each figure is the best of its rounds, as timeit reports
the best of its repeats. Duplicates and lost jobs add up over all rounds. The peers,
whose targets leave a wide margin, run one round.
"""

import argparse
import datetime
import json
import logging
import multiprocessing
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from . import queue_jobs as jobs
from . import queue_report as report
from .queue_systems import (
    KILL_TEST_LEASE_SECONDS,
    BareSqlite,
    HueySqlite,
    LiteQueuePackage,
    PersistQueue,
    PromptgenQueue,
    RedisQueue,
)
from .redis_server import RedisServer

DEFAULT_JOBS = 20_000
DEFAULT_ROUNDS = 3
PROCESS_COUNTS = (1, 4)
PAYLOAD = "x" * 100
#: Maximum time one drain phase may take before its consumers are killed.
DRAIN_TIMEOUT_SECONDS = 300.0
#: How long the second consumer of the SIGKILL test polls for the killed job.
KILL_WINDOW_SECONDS = 6.0
RESULTS = Path(__file__).parent / "results"

CONTEXT = multiprocessing.get_context("fork")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Benchmark promptgen's queue against its peers.")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="jobs per phase")
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help="rounds of the promptgen and bare SQLite systems, best figure kept",
    )
    parser.add_argument(
        "--only", nargs="*", help="run only systems whose name contains one of these words"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)

    workroot = Path(tempfile.mkdtemp(prefix="promptgen-bench-"))
    started = time.monotonic()
    try:
        with RedisServer(workroot / "redis") as redis:
            factories = _factories(redis.port)
            if args.only:
                factories = [
                    (name, make, repeated) for name, make, repeated in factories
                    if any(word.lower() in name.lower() for word in args.only)
                ]
            results = measure_all(factories, args.jobs, args.rounds, workroot)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)

    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jobs": args.jobs,
        "machine": _machine(),
        "seconds": round(time.monotonic() - started, 1),
        "rounds": args.rounds,
        "systems": results,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = report.markdown(summary)
    (args.output / "latest.md").write_text(markdown)

    print()
    print(markdown)
    print(report.ratios_text(summary))
    print(f"results written to {args.output / 'latest.md'} and latest.json")


def _factories(redis_port):
    """Return (name, factory, repeated) triples.

    Each factory builds the system on a work folder. Repeated systems run every round.
    """
    return [
        ("bare SQLite (NORMAL)", lambda folder: BareSqlite(folder, "NORMAL"), True),
        ("promptgen (NORMAL)", lambda folder: PromptgenQueue(folder, "NORMAL"), True),
        ("bare SQLite (FULL)", lambda folder: BareSqlite(folder, "FULL"), True),
        ("promptgen (FULL)", lambda folder: PromptgenQueue(folder, "FULL"), True),
        ("persist-queue SQLiteAckQueue", PersistQueue, False),
        ("litequeue", LiteQueuePackage, False),
        ("huey SqliteHuey", HueySqlite, False),
        ("RQ on Redis", lambda folder: RedisQueue(folder, redis_port), False),
    ]


def measure_all(factories, job_count, rounds, workroot):
    """Measure every system, the repeated ones in `rounds` interleaved rounds, and return their figures."""
    figures = {name: [] for name, _, _ in factories}
    for round_number in range(1, rounds + 1):
        for index, (name, make, repeated) in enumerate(factories):
            if round_number > 1 and not repeated:
                continue
            print(f"round {round_number}, {name}: ", end="", flush=True)
            folder = workroot / f"system-{index}"
            figures[name].append(measure_phases(make, job_count, folder))
            print(flush=True)

    results = []
    for index, (name, make, _) in enumerate(factories):
        folder = workroot / f"system-{index}"
        print(f"{name}: ", end="", flush=True)
        result = {"name": name, "setting": make(folder).setting, **best_of(figures[name])}
        result["sigkill"] = _kill_test_in(make, folder)
        print(f"SIGKILL: {result['sigkill']['outcome']}", flush=True)
        results.append(result)
    return results


def best_of(rounds):
    """Merge the figures of several rounds: each rate's best round, duplicates and losses summed."""
    merged = {
        "drain_jobs": rounds[0]["drain_jobs"],
        "enqueue_per_second": max(figures["enqueue_per_second"] for figures in rounds),
        "rounds": rounds,
    }
    for processes in PROCESS_COUNTS:
        key = f"drain_{processes}"
        drains = [figures[key] for figures in rounds]
        best = max(drains, key=lambda drain: drain["per_second"])
        merged[key] = {
            **best,
            "duplicates": sum(drain["duplicates"] for drain in drains),
            "lost": sum(drain["lost"] for drain in drains),
            "timed_out": any(drain["timed_out"] for drain in drains),
        }
    return merged


def measure_phases(make, job_count, folder):
    """Run the enqueue and drain phases once for one system and return their figures."""
    probe = make(folder)
    drain_count = min(job_count, probe.max_drain_jobs or job_count)
    result = {"drain_jobs": drain_count}

    for processes in PROCESS_COUNTS:
        workdir = _fresh(folder / f"drain-{processes}")
        system = make(workdir)
        _reset(system)

        if processes == PROCESS_COUNTS[0]:
            enqueue_seconds = _in_child(_produce, system, job_count)
            result["enqueue_per_second"] = round(job_count / enqueue_seconds)
            print(f"enqueue {result['enqueue_per_second']}/s", end="", flush=True)
        if processes != PROCESS_COUNTS[0] or drain_count != job_count:
            workdir = _fresh(folder / f"drain-{processes}")
            system = make(workdir)
            _reset(system)
            _in_child(_produce, system, drain_count)

        drain = _drain(system, processes, drain_count, workdir / "records")
        result[f"drain_{processes}"] = drain
        print(f", drain x{processes} {drain['per_second']}/s", end="", flush=True)
    return result


def _kill_test_in(make, folder):
    workdir = _fresh(folder / "kill")
    system = make(workdir)
    _reset(system)
    return _kill_test(system, workdir)


def _produce(system, job_count):
    enqueue = system.producer()
    started = time.perf_counter()
    for number in range(job_count):
        enqueue(number, PAYLOAD)
    return time.perf_counter() - started


def _drain(system, processes, job_count, records):
    """Drain the filled queue with `processes` consumers and return rate, duplicates and losses."""
    records.mkdir()
    ready = CONTEXT.Queue()
    finished = CONTEXT.Queue()
    go = CONTEXT.Event()
    consumers = [
        CONTEXT.Process(
            target=_consume,
            args=(system, records / f"consumer-{index}.records", ready, go, finished),
        )
        for index in range(processes)
    ]
    for consumer in consumers:
        consumer.start()
    for _ in consumers:
        ready.get(timeout=60)

    started = time.perf_counter()
    go.set()
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    for consumer in consumers:
        consumer.join(max(deadline - time.monotonic(), 0.1))
    timed_out = [consumer for consumer in consumers if consumer.is_alive()]
    for consumer in timed_out:
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.join()

    ended = [finished.get(timeout=5) for _ in range(processes - len(timed_out))]
    elapsed = (max(ended) if ended and not timed_out else time.perf_counter()) - started

    counts = jobs.read_records(records)
    duplicates = sum(count - 1 for count in counts.values() if count > 1)
    lost = sum(1 for number in range(job_count) if number not in counts)
    return {
        "per_second": round(len(counts) / elapsed),
        "seconds": round(elapsed, 2),
        "duplicates": duplicates,
        "lost": lost,
        "timed_out": bool(timed_out),
    }


def _consume(system, record_path, ready, go, finished):
    _log_to_file(record_path)
    jobs.open_record(record_path)
    drain = system.consumer()
    ready.put(os.getpid())
    go.wait()
    drain()
    finished.put(time.perf_counter())


def _kill_test(system, workdir):
    """Kill a consumer mid-job with SIGKILL and report what happens to its job."""
    started_path = workdir / "started"
    release_path = workdir / "release"
    records = workdir / "records"
    records.mkdir()
    _in_child(_produce_hold, system, started_path, release_path)

    first = CONTEXT.Process(
        target=_consume_killable, args=(system, records / "first.records", None)
    )
    first.start()
    if not _wait_for_lines(started_path, 1, 30):
        os.killpg(first.pid, signal.SIGKILL)
        first.join()
        return {"outcome": "the job never started", "restarts": 0}

    os.killpg(first.pid, signal.SIGKILL)
    first.join()
    killed_at = time.time()
    release_path.touch()

    second = CONTEXT.Process(
        target=_consume_killable,
        args=(system, records / "second.records", killed_at + KILL_WINDOW_SECONDS),
    )
    second.start()
    second.join(KILL_WINDOW_SECONDS + 30)
    if second.is_alive():
        os.killpg(second.pid, signal.SIGKILL)
        second.join()

    starts = _read_starts(started_path)
    restarts = len(starts) - 1
    completed = jobs.read_records(records).get(0, 0)
    if restarts == 0:
        outcome = f"not run again within {KILL_WINDOW_SECONDS:g} s"
    else:
        delay = starts[1] - killed_at
        times = "once" if restarts == 1 else f"{restarts} times"
        outcome = f"run again {times}, {delay:.1f} s after the kill"
    return {"outcome": outcome, "restarts": restarts, "completed": completed}


def _produce_hold(system, started_path, release_path):
    system.hold_producer(started_path, release_path)(0, PAYLOAD)
    return 0.0


def _consume_killable(system, record_path, until):
    """Consume in a new process group, once, or repeatedly until the epoch time `until`."""
    os.setpgrp()
    _log_to_file(record_path)
    jobs.open_record(record_path)
    drain = system.consumer(lease_seconds=KILL_TEST_LEASE_SECONDS)
    drain()
    while until is not None and time.time() < until:
        time.sleep(0.2)
        drain()


def _log_to_file(record_path):
    """Send the consumer's warnings to a file next to its records, away from the report."""
    logging.basicConfig(filename=f"{record_path}.log", level=logging.WARNING)


def _read_starts(path):
    if not path.exists():
        return []
    return [float(line.split()[1]) for line in path.read_text().splitlines() if line.strip()]


def _wait_for_lines(path, count, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return True
        time.sleep(0.02)
    return False


def _in_child(function, *args):
    """Run function(*args) in a forked child and return its result."""
    results = CONTEXT.Queue()
    child = CONTEXT.Process(target=lambda: results.put(function(*args)))
    child.start()
    value = results.get(timeout=DRAIN_TIMEOUT_SECONDS)
    child.join()
    return value


def _reset(system):
    if isinstance(system, RedisQueue):
        system.flush()


def _fresh(folder):
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _machine():
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }


if __name__ == "__main__":
    sys.exit(main())
