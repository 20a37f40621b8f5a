import pytest
from werkzeug.security import check_password_hash

from promptgen.extensions import db
from promptgen.models import User

from .conftest import PASSWORD, csrf_token


def test_signup_creates_account_and_logs_in(client, accounts, app):
    response = accounts.signup("Ada@Example.com")

    assert response.status_code == 302
    assert response.headers["Location"] == "/prompts"
    assert client.get("/prompts").status_code == 200
    with app.app_context():
        user = db.session.scalar(db.select(User))
        assert user.email == "ada@example.com"
        assert user.password_hash != PASSWORD
        assert check_password_hash(user.password_hash, PASSWORD)


def test_signup_email_unique_regardless_of_case(client, accounts, app):
    accounts.signup("ada@example.com")
    accounts.logout()

    response = accounts.signup("ADA@example.COM")

    assert response.status_code == 422
    assert "already exists" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 1


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("", PASSWORD, "This field is required."),
        ("not-an-email", PASSWORD, "Invalid email address."),
        ("ada@example.com", "short pass", "Field must be between 12 and 256 characters long."),
    ],
)
def test_signup_invalid_input(client, app, email, password, message):
    token = csrf_token(client, "/signup")

    response = client.post("/signup", data={"email": email, "password": password, "csrf_token": token})

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(User.id))) == 0


def test_login_with_wrong_password(client, accounts):
    accounts.signup()
    accounts.logout()

    response = accounts.login(password="not the password")

    assert response.status_code == 422
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/prompts").status_code == 302


def test_login_ignores_email_case(client, accounts):
    accounts.signup("ada@example.com")
    accounts.logout()

    response = accounts.login("ADA@EXAMPLE.COM")

    assert response.status_code == 302
    assert client.get("/prompts").status_code == 200


def test_login_redirects_to_local_next_only(client, accounts):
    accounts.signup()
    accounts.logout()
    token = csrf_token(client, "/login")
    form = {"email": "ada@example.com", "password": PASSWORD, "csrf_token": token}

    response = client.post("/login?next=//evil.example/steal", data=form)

    assert response.headers["Location"] == "/prompts"


def test_logout_requires_post_with_csrf(client, accounts):
    accounts.signup()

    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert accounts.logout().status_code == 302
    assert client.get("/prompts").status_code == 302


@pytest.mark.parametrize("path", ["/signup", "/login"])
def test_forms_reject_missing_csrf_token(client, path):
    response = client.post(path, data={"email": "ada@example.com", "password": PASSWORD})

    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)


def test_prompts_require_login(client):
    response = client.get("/prompts")

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_signup_strips_email_spaces(client, accounts, app):
    response = accounts.signup("  carol@example.com ")

    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(User.email)) == "carol@example.com"


def test_login_attempts_limited_per_address(client, accounts):
    accounts.signup()
    accounts.logout()
    statuses = [accounts.login(password="wrong password!").status_code for _ in range(11)]

    response = accounts.login()

    assert statuses == [422] * 10 + [429]
    assert response.status_code == 429
    assert "Wait a minute, then try again." in response.get_data(as_text=True)


def test_successful_logins_not_limited(client, accounts):
    accounts.signup()
    statuses = []
    for _ in range(12):
        accounts.logout()
        statuses.append(accounts.login().status_code)

    assert statuses == [302] * 12


def test_logout_invalidates_copied_session_cookie(client, accounts, app):
    accounts.signup()
    copied = client.get_cookie("session").value

    accounts.logout()
    client.set_cookie("session", copied)

    response = client.get("/prompts")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_session_of_other_device_ends_on_logout(app, accounts, client):
    accounts.signup()
    other_device = app.test_client()
    other_device.set_cookie("session", client.get_cookie("session").value)
    assert other_device.get("/prompts").status_code == 200

    accounts.logout()

    assert other_device.get("/prompts").status_code == 302
