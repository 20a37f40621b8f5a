"""Accounts: sign up, log in and log out."""

from flask import Blueprint

bp = Blueprint("accounts", __name__)

from . import views  # noqa: E402,F401  (registers the routes on bp)
