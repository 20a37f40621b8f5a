"""Prompts: a text prompt with a photo, and the predictions made from it."""

from flask import Blueprint

bp = Blueprint("prompts", __name__, url_prefix="/prompts")

from . import views  # noqa: E402,F401  (registers the routes on bp)
