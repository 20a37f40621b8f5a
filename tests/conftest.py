import re

import pytest
from flask_migrate import upgrade

from promptgen import create_app
from promptgen.config import ENVIRONMENT_KEYS
from promptgen.extensions import db
from promptgen.models import Prediction, Prompt, User

from .support import FIXTURES, Process, flask_command, free_port, is_serving, wait_for

#: The signing secret the test app verifies webhooks with (32 random bytes, base64).
WEBHOOK_SECRET = "whsec_J0wEhVsSvVa0cCHsOLFGXZJh4fSnNPJsDd7R3m6cyQg="
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Keep the developer's own settings (a real token, say) out of the tests."""
    for key in (*ENVIRONMENT_KEYS, "PROMPTGEN_INSTANCE_PATH"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def app(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test secret key",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.sqlite3'}",
            "QUEUE_DATABASE": str(tmp_path / "queue.sqlite3"),
            "REPLICATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
        instance_path=tmp_path / "instance",
    )
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def photo_bytes():
    return (FIXTURES / "astronaut.jpg").read_bytes()


def csrf_token(client, path):
    """Return the CSRF token from the form on the page at path."""
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
        r'name="csrf_token" value="([^"]+)"', page
    )
    assert match, f"no csrf_token on {path}"
    return match.group(1)


class Accounts:
    """Sign up and log in through the real forms, CSRF token included."""

    def __init__(self, client):
        self.client = client

    def signup(self, email="ada@example.com", password=PASSWORD):
        token = csrf_token(self.client, "/signup")
        return self.client.post(
            "/signup", data={"email": email, "password": password, "csrf_token": token}
        )

    def login(self, email="ada@example.com", password=PASSWORD):
        token = csrf_token(self.client, "/login")
        return self.client.post(
            "/login", data={"email": email, "password": password, "csrf_token": token}
        )

    def logout(self):
        token = csrf_token(self.client, "/prompts")
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def accounts(client):
    return Accounts(client)


def create_prompt(client, photo, title="a watercolor portrait", filename="photo.jpg"):
    """Post the new-prompt form and return the response."""
    import io

    token = csrf_token(client, "/prompts/new")
    data = {"title": title, "description": "", "csrf_token": token}
    if photo is not None:
        data["image"] = (io.BytesIO(photo), filename)
    return client.post("/prompts", data=data, content_type="multipart/form-data")


def add_prompt(app, owner_email="owner@example.com", status=Prediction.QUEUED, error=None):
    """Insert a prompt with one prediction for the account owner_email (created if new).

    Returns the ids of the account, the prompt and the prediction.
    """
    photo = (FIXTURES / "astronaut.jpg").read_bytes()
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(email=owner_email))
        if user is None:
            user = User(email=owner_email)
            user.set_password(PASSWORD)
        prompt = Prompt(
            user=user,
            title="someone else's prompt",
            image=photo,
            image_mime="image/jpeg",
            thumbnail=photo,
        )
        prediction = Prediction(prompt=prompt, status=status, error=error)
        db.session.add_all([user, prompt, prediction])
        db.session.commit()
        return user.id, prompt.id, prediction.id


def queued_jobs(app):
    """Return (function path, JSON args) of every job in the app's queue, oldest first."""
    import sqlite3

    with sqlite3.connect(app.config["QUEUE_DATABASE"]) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE name = 'jobs'").fetchall()
        if not tables:
            return []
        return connection.execute("SELECT func, args FROM jobs ORDER BY seq").fetchall()


@pytest.fixture
def live_stack(tmp_path):
    """Start migrations, the simulator, the web server and one worker as real processes.

    Call the fixture's value with the simulator's run time in seconds. It returns the web
    server's URL and the processes, so a failing test can print their logs.
    """
    processes = []

    def start(simulator_delay=0.5):
        web_port = free_port()
        simulator_port = free_port()
        env = {
            "PROMPTGEN_INSTANCE_PATH": str(tmp_path / "instance"),
            "PORT": str(web_port),
            "REPLICATE_BASE_URL": f"http://127.0.0.1:{simulator_port}",
            "REPLICATE_API_TOKEN": "",
            "FLASK_DEBUG": "0",
        }

        def run(name, *args):
            process = Process(name, flask_command(*args), env, tmp_path)
            processes.append(process)
            return process

        migrate = run("migrate", "db", "upgrade")
        assert migrate.popen.wait(60) == 0, migrate.log()
        run("simulator", "replicate-sim", "--port", str(simulator_port), "--delay", str(simulator_delay))
        run("web", "run", "--port", str(web_port))
        run("worker", "worker")

        base_url = f"http://127.0.0.1:{web_port}"
        secret_url = f"http://127.0.0.1:{simulator_port}/v1/webhooks/default/secret"
        wait_for(lambda: is_serving(base_url + "/login"), message="web server")
        wait_for(lambda: is_serving(secret_url), message="simulator")
        return base_url, processes

    yield start
    for process in reversed(processes):
        process.stop()


def attach_image(prediction, data, mime="image/jpeg", position=0):
    """Mark prediction succeeded with data stored as its output image at position."""
    from promptgen.models import PredictionImage

    prediction.status = Prediction.SUCCEEDED
    urls = list(prediction.output_urls or [])
    while len(urls) <= position:
        urls.append(f"https://replicate.delivery/test/out-{len(urls)}.png")
    prediction.output_urls = urls
    prediction.images.append(PredictionImage(position=position, data=data, mime=mime, preview=data))


def png_photo(size=(320, 240), color=(200, 30, 30)):
    """Return a PNG of one color, to upload in place of the fixture photo."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def edit_prompt(client, location, title, photo=None):
    """Post the edit form of the prompt at location, with a new photo if one is given."""
    import io

    token = csrf_token(client, location + "/edit")
    data = {"title": title, "description": "", "csrf_token": token}
    if photo is not None:
        data["image"] = (io.BytesIO(photo), "edited.png")
    response = client.post(location + "/edit", data=data, content_type="multipart/form-data")
    assert response.status_code == 302, response.get_data(as_text=True)
    return response
