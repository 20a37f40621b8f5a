"""Measure what a prompt page costs while it polls, and how fast the index renders.

Run with `make bench` or `.venv/bin/python -m bench.page_bench`. It builds a temporary
database with one account, a prompt with 50 finished and 3 pending variations, and 200
prompts for the index, then requests pages through Flask's test client (no network).
Figures are printed and written to bench/results/page.json and bench/results/page.md.
"""

import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flask_migrate import upgrade
from PIL import Image

from promptgen import PROJECT_ROOT, create_app
from promptgen.extensions import db
from promptgen.images import PREVIEW_SIDE, make_thumbnail
from promptgen.models import Prediction, PredictionImage, Prompt, User, utcnow
from promptgen.simulator.generate import generate_image

FINISHED_CARDS = 50
PENDING_CARDS = 3
INDEX_PROMPTS = 200
RENDER_RUNS = 30
RESULTS = Path(__file__).parent / "results"
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
PHOTO = Image.open(FIXTURES / "astronaut.jpg").convert("RGB")


def main():
    with tempfile.TemporaryDirectory() as folder:
        app = build_app(Path(folder))
        client = app.test_client()
        prompt_id = seed(app)
        log_in(client)

        figures = measure(app, client, prompt_id)

    write_results(figures)
    return 0


def build_app(folder):
    app = create_app(
        {
            "SECRET_KEY": "bench",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'app.sqlite3'}",
            "QUEUE_DATABASE": str(folder / "queue.sqlite3"),
            "WTF_CSRF_ENABLED": False,
        },
        instance_path=folder / "instance",
    )
    with app.app_context():
        upgrade()
    return app


def sample_image(seed):
    """Return a simulated variation of the test photo, a PNG as large as a real output."""
    return generate_image(PHOTO, "a watercolor portrait", seed)


def seed(app):
    """Insert the account, the measured prompt and the index's prompts; return the prompt id."""
    photo = (FIXTURES / "astronaut.jpg").read_bytes()
    thumbnail = make_thumbnail(photo).data
    with app.app_context():
        user = User(email="bench@example.com")
        user.set_password("a long enough password")
        prompts = [
            Prompt(user=user, title=f"prompt {n}", image=photo, image_mime="image/jpeg", thumbnail=thumbnail)
            for n in range(INDEX_PROMPTS)
        ]
        measured = prompts[-1]
        for n in range(FINISHED_CARDS):
            measured.predictions.append(
                finished_prediction(sample_image(n))
            )
        for _ in range(PENDING_CARDS):
            measured.predictions.append(Prediction(status="processing", logs=" 40%|####      | 8/20"))
        db.session.add_all([user, *prompts])
        db.session.commit()
        return measured.id


def finished_prediction(data):
    """Return a succeeded prediction with one stored image and its preview."""
    prediction = Prediction(
        status="succeeded",
        output_urls=["https://replicate.delivery/bench/out-0.png"],
        started_at=utcnow(),
        completed_at=utcnow(),
    )
    preview = make_thumbnail(data, side=PREVIEW_SIDE).data
    prediction.images.append(PredictionImage(position=0, data=data, mime="image/png", preview=preview))
    return prediction


def log_in(client):
    response = client.post("/login", data={"email": "bench@example.com", "password": "a long enough password"})
    assert response.status_code == 302, response.status_code


def response_bytes(response):
    """Return the bytes on the wire for a response: status line, headers and body."""
    head = f"HTTP/1.1 {response.status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in response.headers.items())
    return len(head) + 2 + len(response.get_data())


def timed_get(client, url):
    started = time.perf_counter()
    response = client.get(url)
    return response, (time.perf_counter() - started) * 1000


def measure(app, client, prompt_id):
    page, _ = timed_get(client, f"/prompts/{prompt_id}")
    html = page.get_data(as_text=True)
    poll_urls = [url.replace("&amp;", "&") for url in re.findall(r'hx-get="([^"]+)"', html)]
    assert len(poll_urls) == PENDING_CARDS, (page.status_code, html[:300])

    polls_per_minute = PENDING_CARDS * 60 / app.config["POLL_INTERVAL"]
    unchanged = [client.get(url) for url in poll_urls]
    changed = [client.get(url.split("?")[0]) for url in poll_urls]
    unchanged_bytes = statistics.mean(response_bytes(r) for r in unchanged)
    changed_bytes = statistics.mean(response_bytes(r) for r in changed)

    index_times = [timed_get(client, "/prompts")[1] for _ in range(RENDER_RUNS)]
    page_times = [timed_get(client, f"/prompts/{prompt_id}")[1] for _ in range(RENDER_RUNS)]

    return {
        "page_bytes": response_bytes(page),
        "pending_cards": PENDING_CARDS,
        "finished_cards": FINISHED_CARDS,
        "poll_interval_s": app.config["POLL_INTERVAL"],
        "polls_per_minute": polls_per_minute,
        "unchanged_poll_status": unchanged[0].status_code,
        "unchanged_poll_bytes": unchanged_bytes,
        "changed_poll_bytes": changed_bytes,
        "polling_bytes_per_minute": unchanged_bytes * polls_per_minute,
        "page_reload_bytes_per_minute": response_bytes(page) * 60 / app.config["POLL_INTERVAL"],
        "index_prompts": INDEX_PROMPTS,
        "index_render_ms_median": statistics.median(index_times),
        "index_render_ms_p90": statistics.quantiles(index_times, n=10)[-1],
        "prompt_page_render_ms_median": statistics.median(page_times),
    }


def write_results(figures):
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "page.json").write_text(json.dumps(figures, indent=2) + "\n")
    ratio = figures["page_reload_bytes_per_minute"] / figures["polling_bytes_per_minute"]
    lines = [
        "| measure | value |",
        "| --- | --- |",
        f"| prompt page, {FINISHED_CARDS} finished + {PENDING_CARDS} pending | {figures['page_bytes']:,} bytes |",
        f"| poll of an unchanged card (HTTP {figures['unchanged_poll_status']}) | {figures['unchanged_poll_bytes']:,.0f} bytes |",
        f"| poll of a card that changed | {figures['changed_poll_bytes']:,.0f} bytes |",
        f"| polling while nothing changes | {figures['polls_per_minute']:.0f} requests/min, {figures['polling_bytes_per_minute']:,.0f} bytes/min |",
        f"| reloading the whole page instead | {figures['page_reload_bytes_per_minute']:,.0f} bytes/min ({ratio:,.0f}x more) |",
        f"| index render, {INDEX_PROMPTS} prompts (24 per page) | median {figures['index_render_ms_median']:.1f} ms, p90 {figures['index_render_ms_p90']:.1f} ms |",
        f"| prompt page render | median {figures['prompt_page_render_ms_median']:.1f} ms |",
    ]
    (RESULTS / "page.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
