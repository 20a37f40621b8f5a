"""Webhook load run: signed deliveries against gunicorn while a worker stores the outputs.

Starts the simulator, gunicorn (threaded workers) and one promptgen worker on free
127.0.0.1 ports in a temporary instance folder, then:

1. creates one remote prediction per row on the simulator (without a webhook) and
   waits until they have all succeeded, so their output files can be downloaded;
2. logs in the page pollers and builds the senders' HTTP clients, so that this setup
   work (a login is about 100 ms of scrypt) does not share the CPU with the deliveries.
   On a 2-core machine, two logins during the first deliveries raised the webhook p99
   from about 20 ms to 90-240 ms, and building the clients in the sender threads raised
   it to 110-210 ms;
3. posts the "start" and "completed" events of every row from several threads, signed
   as Replicate signs them. A third of all deliveries repeat an earlier one with the
   same webhook-id, some at the same moment. A quarter of the rows get "completed"
   before "start";
4. polls the prediction pages as a browser would while the deliveries run;
5. waits until every row has its image, then prints latency percentiles, responses by
   status, the final counts and whether each target was met. Exits 1 if one was missed.

Webhook latency is counted from the planned start of each delivery, so it includes
any time the delivery waited for a free sender thread. The time gunicorn logged for each
request is printed beside it, and the two differ by the time spent in the network stack,
in gunicorn before the view runs and in this process.

Run it with `make bench` or `.venv/bin/python bench/webhook_bench.py`.
"""

import argparse
import gc
import io
import json
import os
import queue
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

# The repository root, so the script can reuse the test helpers that start servers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import free_port, is_serving  # noqa: E402

BIN = Path(sys.executable).parent
WEBHOOK_SECRET = "whsec_J0wEhVsSvVa0cCHsOLFGXZJh4fSnNPJsDd7R3m6cyQg="
PASSWORD = "bench password 123"
P99_TARGET_MS = 100.0


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000, help="webhook requests to send in all")
    parser.add_argument("--senders", type=int, default=16, help="threads that send webhooks")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="webhook deliveries started per second; 0 sends as fast as the threads can"
    )
    parser.add_argument("--pollers", type=int, default=2, help="threads that poll prediction cards")
    parser.add_argument("--poll-rate", type=float, default=50.0, help="card requests per second, all pollers together")
    parser.add_argument("--gunicorn-workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--gunicorn-threads", type=int, default=2, help="threads per gunicorn worker")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for all images")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and its logs")
    return parser.parse_args()


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class Processes:
    """Child processes with their output in log files; stop() ends them by PID."""

    def __init__(self, folder, env):
        self.folder = folder
        self.env = env
        self.started = []

    def start(self, name, args):
        log = open(self.folder / f"{name}.log", "wb")
        process = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.started.append((name, process, log))
        return process

    def run(self, name, args):
        process = self.start(name, args)
        if process.wait(120) != 0:
            raise RuntimeError(f"{name} failed: see {self.folder / (name + '.log')}")

    def stop(self):
        for _, process, log in reversed(self.started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()

    def logs(self):
        return {path.name: path.read_text(errors="replace") for path in self.folder.glob("*.log")}


def small_photo():
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((96, 96)).save(buffer, format="JPEG")
    return buffer.getvalue()


def prepare_rows(app, count, simulator_url):
    """Insert one prompt with count predictions, each tied to a finished simulator prediction.

    Returns (prompt id, [(prediction id, token, starting body, completed body)]).
    """
    import base64

    from promptgen.extensions import db
    from promptgen.models import Prediction, Prompt, User
    from promptgen.tokens import sign_prediction_id

    photo = small_photo()
    photo_url = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    api = httpx.Client(base_url=simulator_url, headers={"Authorization": "Bearer bench"}, timeout=30)
    remote_ids = []
    for index in range(count):
        response = api.post(
            "/v1/models/stability-ai/stable-diffusion-img2img/predictions",
            json={"input": {"prompt": f"bench {index}", "image": photo_url, "num_inference_steps": 1}},
        )
        response.raise_for_status()
        remote_ids.append(response.json()["id"])

    def remote(prediction_id):
        return api.get(f"/v1/predictions/{prediction_id}").json()

    wait_until(lambda: all(remote(i)["status"] == "succeeded" for i in remote_ids[-5:]), 120, "simulator runs")
    finished = [remote(i) for i in remote_ids]
    api.close()
    if any(body["status"] != "succeeded" for body in finished):
        raise RuntimeError("some simulator predictions did not succeed")

    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(email="bench@example.com"))
        prompt = Prompt(user=user, title="bench prompt", image=photo, image_mime="image/jpeg", thumbnail=photo)
        predictions = [
            Prediction(prompt=prompt, replicate_id=body["id"], status=Prediction.QUEUED) for body in finished
        ]
        db.session.add_all([prompt, *predictions])
        db.session.commit()

        rows = []
        with app.test_request_context():
            for prediction, body in zip(predictions, finished):
                starting = {**body, "status": "starting", "output": None, "completed_at": None, "logs": ""}
                rows.append((prediction.id, sign_prediction_id(prediction.id), starting, body))
        return prompt.id, rows


def plan_deliveries(rows, total, rng):
    """Return (webhook-id, token, body) in sending order; a third of them are repeats."""
    unique = []
    for index, (prediction_id, token, starting, completed) in enumerate(rows):
        events = [("start", starting), ("completed", completed)]
        if index % 4 == 0:
            events.reverse()
        unique.extend((f"msg_{prediction_id}_{name}", token, body) for name, body in events)

    repeats = [rng.choice(unique) for _ in range(total - len(unique))]
    deliveries = list(unique)
    for repeat in repeats:
        # Half of the repeats follow right after their original, so both can be in flight at once.
        position = deliveries.index(repeat) + 1 if rng.random() < 0.5 else rng.randrange(len(deliveries) + 1)
        deliveries.insert(position, repeat)
    return deliveries


def send_all(web_url, deliveries, senders, rate):
    """Post every delivery from senders threads; return [(status or error, seconds, start lag)].

    With a rate, delivery n is planned n / rate seconds after the first (an open loop, as
    webhooks arrive) and starts then, or as soon as a thread is free if that is later. The
    start lag is how many seconds after its planned time a delivery was sent.

    The HTTP clients are built before the first delivery is planned. Building one loads the
    TLS certificate store, about 20 ms of CPU, and when each thread built its own at the
    start, the first deliveries were sent up to 190 ms late.
    """
    from promptgen.simulator.signing import sign

    clients = [httpx.Client(timeout=30) for _ in range(senders)]
    unused_clients = queue.SimpleQueue()
    for client in clients:
        unused_clients.put(client)
    local = threading.local()

    def take_client():
        local.client = unused_clients.get()

    start = time.monotonic() + 0.1

    def send(numbered):
        number, (webhook_id, token, body) = numbered
        planned = start + number / rate if rate else start
        if rate:
            time.sleep(max(0.0, planned - time.monotonic()))
        raw = json.dumps(body).encode()
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(WEBHOOK_SECRET, webhook_id, timestamp, raw),
        }
        started = time.perf_counter()
        lag = max(0.0, time.monotonic() - planned) if rate else 0.0
        try:
            response = local.client.post(f"{web_url}/replicate/webhook?token={token}", content=raw, headers=headers)
            outcome = response.status_code
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        return outcome, time.perf_counter() - started, lag

    try:
        with ThreadPoolExecutor(senders, initializer=take_client) as pool:
            return list(pool.map(send, enumerate(deliveries)))
    finally:
        for client in clients:
            client.close()


def logged_in_client(web_url):
    """Log in as the bench account and return the HTTP client that holds the session cookie.

    Logging in checks the password with scrypt, about 100 ms of CPU per login on a
    2-core test machine, so the pollers log in before the deliveries start.
    """
    client = httpx.Client(base_url=web_url, timeout=30)
    page = client.get("/login").text
    token = re.search(r'name="csrf_token"[^>]* value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": token})
    if response.status_code != 302:
        raise RuntimeError(f"bench login failed with status {response.status_code}. Run with --keep and read web.log.")
    return client


def poll_pages(client, prompt_id, prediction_ids, stop, results, interval):
    """GET prediction cards, as pending cards on a page do, until stop is set."""
    rng = random.Random()
    while not stop.wait(interval):
        path = f"/prompts/{prompt_id}/predictions/{rng.choice(prediction_ids)}"
        started = time.perf_counter()
        try:
            outcome = client.get(path).status_code
        except httpx.HTTPError as error:
            outcome = type(error).__name__
        results.append((outcome, time.perf_counter() - started))
    client.close()


def final_counts(app, prediction_ids):
    from promptgen.extensions import db
    from promptgen.models import Prediction, PredictionImage, WebhookDelivery

    with app.app_context():
        images = (
            db.select(db.func.count(PredictionImage.id))
            .where(PredictionImage.prediction_id == Prediction.id)
            .scalar_subquery()
        )
        rows = db.session.execute(
            db.select(Prediction.status, images > 0, Prediction.error)
            .where(Prediction.id.in_(prediction_ids))
        ).all()
        deliveries = db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery))
        events = Counter(db.session.scalars(db.select(WebhookDelivery.event)))
        db.session.rollback()
    return {
        "prediction rows": len(rows),
        "statuses": dict(Counter(row[0] for row in rows)),
        "stored images": sum(1 for row in rows if row[1]),
        "errors": sum(1 for row in rows if row[2]),
        "recorded deliveries": deliveries,
        "events": dict(events),
    }


def server_latencies(access_log):
    """Return the milliseconds gunicorn logged for each webhook request (%(D)s is in microseconds)."""
    latencies = []
    for line in access_log.read_text().splitlines():
        method, path, _, microseconds = line.split()
        if method == "POST" and path == "/replicate/webhook":
            latencies.append(int(microseconds) / 1000)
    return latencies


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main():
    arguments = parse_arguments()
    folder = Path(tempfile.mkdtemp(prefix="promptgen-webhook-bench-"))
    (folder / "instance").mkdir()
    web_port, simulator_port = free_port(), free_port()
    env = {
        **os.environ,
        "PROMPTGEN_INSTANCE_PATH": str(folder / "instance"),
        "SECRET_KEY": "webhook bench secret key",
        "REPLICATE_API_TOKEN": "",
        "REPLICATE_BASE_URL": f"http://127.0.0.1:{simulator_port}",
        "REPLICATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PUBLIC_URL": f"http://127.0.0.1:{web_port}",
        "PORT": str(web_port),
        "FLASK_DEBUG": "0",
    }
    os.environ.update({key: env[key] for key in ("PROMPTGEN_INSTANCE_PATH", "SECRET_KEY", "REPLICATE_BASE_URL", "REPLICATE_WEBHOOK_SECRET", "PUBLIC_URL", "PORT")})
    os.environ.pop("REPLICATE_API_TOKEN", None)
    processes = Processes(folder, env)
    flask = [str(BIN / "flask"), "--app", "promptgen"]
    web_url = f"http://127.0.0.1:{web_port}"
    simulator_url = f"http://127.0.0.1:{simulator_port}"

    try:
        processes.run("migrate", [*flask, "db", "upgrade"])
        processes.start(
            "simulator",
            [str(BIN / "python"), "-m", "promptgen.simulator", "--port", str(simulator_port), "--delay", "0.05", "--webhook-secret", WEBHOOK_SECRET],
        )
        processes.start(
            "web",
            [
                str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{web_port}",
                "--workers", str(arguments.gunicorn_workers), "--threads", str(arguments.gunicorn_threads),
                "--access-logfile", str(folder / "access.log"),
                "--access-logformat", '%(m)s %(U)s %(s)s %(D)s',
                "promptgen:create_app()",
            ],
        )
        processes.start("worker", [*flask, "worker"])
        wait_until(lambda: is_serving(web_url + "/login"), 60, "gunicorn")
        wait_until(lambda: is_serving(simulator_url + "/_simulator/stats"), 60, "simulator")

        from promptgen import create_app

        app = create_app()
        with httpx.Client(base_url=web_url, timeout=30) as browser:
            token = re.search(r'name="csrf_token"[^>]* value="([^"]+)"', browser.get("/signup").text).group(1)
            browser.post("/signup", data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": token})

        rng = random.Random(1)
        rows_wanted = arguments.deliveries // 3
        print(f"preparing {rows_wanted} predictions on the simulator ...", flush=True)
        prompt_id, rows = prepare_rows(app, rows_wanted, simulator_url)
        prediction_ids = [row[0] for row in rows]
        deliveries = plan_deliveries(rows, arguments.deliveries, rng)

        stop = threading.Event()
        page_results = []
        pollers = [
            threading.Thread(
                target=poll_pages,
                args=(
                    logged_in_client(web_url), prompt_id, prediction_ids, stop, page_results,
                    arguments.pollers / arguments.poll_rate,
                ),
            )
            for _ in range(arguments.pollers)
        ]
        for poller in pollers:
            poller.start()

        # A full collection in this process scans every object of the app it imported, and
        # it stalled the senders for about 60 ms in runs on a 2-core machine. Collections
        # skip frozen objects.
        gc.freeze()
        print(f"sending {len(deliveries)} webhook deliveries from {arguments.senders} threads ...", flush=True)
        started = time.monotonic()
        results = send_all(web_url, deliveries, arguments.senders, arguments.rate)
        sending_seconds = time.monotonic() - started

        def all_stored():
            return final_counts(app, prediction_ids)["stored images"] == len(rows)

        try:
            wait_until(all_stored, arguments.timeout, "every image to be stored")
        except RuntimeError as error:
            print(error)
        stored_seconds = time.monotonic() - started
        stop.set()
        for poller in pollers:
            poller.join()

        counts = final_counts(app, prediction_ids)
        server = server_latencies(folder / "access.log")
        return report(arguments, rows, results, page_results, counts, sending_seconds, stored_seconds, server, processes.logs())
    finally:
        processes.stop()
        if arguments.keep:
            print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def report(arguments, rows, results, page_results, counts, sending_seconds, stored_seconds, server, logs):
    # The target applies to the latency from the planned start, so a sender that falls
    # behind the plan cannot hide the wait from the figures.
    latencies = [(seconds + lag) * 1000 for _, seconds, lag in results]
    response_times = [seconds * 1000 for _, seconds, _ in results]
    lags = [lag * 1000 for _, _, lag in results]
    by_status = Counter(outcome for outcome, _, _ in results)
    pages_by_status = Counter(outcome for outcome, _ in page_results)
    page_latencies = [seconds * 1000 for _, seconds in page_results] or [0.0]
    server_errors = sum(count for outcome, count in by_status.items() if not isinstance(outcome, int) or outcome >= 500)
    server_errors += sum(count for outcome, count in pages_by_status.items() if not isinstance(outcome, int) or outcome >= 500)
    locked = sum(text.count("database is locked") for text in logs.values())
    correct = (
        counts["prediction rows"] == len(rows)
        and counts["statuses"] == {"succeeded": len(rows)}
        and counts["stored images"] == len(rows)
        and counts["errors"] == 0
        and counts["recorded deliveries"] == 2 * len(rows)
    )
    p99 = percentile(latencies, 0.99)

    print()
    rate = f"{arguments.rate:g}/s planned" if arguments.rate else "closed loop"
    print(f"webhook deliveries: {len(results)} in {sending_seconds:.1f} s ({len(results) / sending_seconds:.0f}/s, {rate}), "
          f"{arguments.senders} sender threads; gunicorn {arguments.gunicorn_workers} workers x {arguments.gunicorn_threads} threads")
    print(f"webhook latency ms: p50 {statistics.median(latencies):.1f}  p90 {percentile(latencies, 0.9):.1f}  "
          f"p99 {p99:.1f}  max {max(latencies):.1f}")
    if arguments.rate:
        print(f"  of which start lag behind the plan ms: p50 {statistics.median(lags):.1f}  "
              f"p99 {percentile(lags, 0.99):.1f}  max {max(lags):.1f}")
        print(f"  response time from the send ms: p50 {statistics.median(response_times):.1f}  "
              f"p90 {percentile(response_times, 0.9):.1f}  p99 {percentile(response_times, 0.99):.1f}  "
              f"max {max(response_times):.1f}")
    if server:
        print(f"webhook time inside gunicorn ms: p50 {statistics.median(server):.1f}  p90 {percentile(server, 0.9):.1f}  "
              f"p99 {percentile(server, 0.99):.1f}  max {max(server):.1f}")
    print(f"webhook responses by status: {dict(sorted(by_status.items(), key=str))}")
    print(f"page polls: {len(page_results)}, by status {dict(pages_by_status)}, p50 {statistics.median(page_latencies):.1f} ms, "
          f"p99 {percentile(page_latencies, 0.99):.1f} ms")
    print(f"all images stored {stored_seconds:.1f} s after the first delivery")
    print(f"final counts: {counts}")
    print(f"'database is locked' in logs: {locked}")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} cores; other processes add to the tail")
    print()
    checks = {
        "zero 5xx": server_errors == 0,
        "zero 'database is locked'": locked == 0,
        "every prediction correct": correct,
        f"p99 under {P99_TARGET_MS:.0f} ms": p99 < P99_TARGET_MS,
    }
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
