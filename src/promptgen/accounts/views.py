import hmac
import logging
from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from ..extensions import db, limiter, login_manager
from ..models import User
from ..responses import form_status
from . import bp
from .forms import LoginForm, SignupForm

logger = logging.getLogger(__name__)

#: Login attempts one address may make, which slows down password guessing.
LOGIN_LIMIT = "10 per minute;50 per hour"

#: Accounts one address may create.
SIGNUP_LIMIT = "10 per hour"


@login_manager.user_loader
def load_user(user_id):
    """Load the session's account in a transaction of its own.

    Ending the transaction at once matters for POST requests, which begin with SQLite's
    write lock: the view may then decode an upload without holding the lock.
    """
    row_id, _, token = user_id.partition(":")
    user = db.session.get(User, int(row_id)) if row_id.isdigit() else None
    db.session.commit()
    if user is None or not hmac.compare_digest(user.session_token, token):
        return None
    return user


@login_manager.unauthorized_handler
def unauthorized():
    """Send people to the login page; tell htmx to reload the page instead of swapping it in."""
    if request.headers.get("HX-Request"):
        return "", 401, {"HX-Refresh": "true"}
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(url_for(login_manager.login_view, next=request.full_path.rstrip("?")))


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(SIGNUP_LIMIT, methods=["POST"])
def signup():
    """Create an account and log it in."""
    if current_user.is_authenticated:
        return redirect(url_for("prompts.index"))
    form = SignupForm()
    if not form.validate_on_submit():
        return render_template("accounts/signup.html", form=form), form_status(form)

    user = User(email=User.normalize_email(form.email.data))
    user.set_password(form.password.data)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        form.email.errors.append("An account with this email already exists. Log in instead.")
        return render_template("accounts/signup.html", form=form), 422

    logger.info("account %s created", user.id)
    login_user(user)
    flash("Welcome! Upload a photo to start.", "success")
    return redirect(url_for("prompts.index"))


@bp.route("/login", methods=["GET", "POST"])
# Only failed attempts count, so a person who logs in and out often is never locked out.
@limiter.limit(LOGIN_LIMIT, methods=["POST"], deduct_when=lambda response: response.status_code != 302)
def login():
    """Log in with email and password."""
    if current_user.is_authenticated:
        return redirect(url_for("prompts.index"))
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("accounts/login.html", form=form), form_status(form)

    email = User.normalize_email(form.email.data)
    user = db.session.scalar(db.select(User).filter_by(email=email))
    stored_hash = user.password_hash if user is not None else None
    # End the transaction before hashing: a POST's transaction holds SQLite's write lock,
    # and checking a password takes about 0.1 s of CPU.
    db.session.commit()
    if stored_hash is None or not check_password_hash(stored_hash, form.password.data):
        form.password.errors.append("Wrong email or password.")
        return render_template("accounts/login.html", form=form), 422

    login_user(user)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
@login_required
def logout():
    """End this session and every other session of the account."""
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("accounts.login"))


@bp.route("/")
def home():
    if current_user.is_authenticated:
        return redirect(url_for("prompts.index"))
    return redirect(url_for("accounts.login"))


def _safe_next(target):
    """Return target if it is a path on this site, else the prompts page."""
    if target and target.startswith("/") and not urlsplit(target).netloc:
        if not target.startswith("//"):
            return target
    return url_for("prompts.index")
