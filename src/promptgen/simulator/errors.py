"""Error responses in the problem-details shape Replicate's API uses."""

from flask import jsonify


class ApiError(Exception):
    """An error response: HTTP status, title, detail and optional extra fields."""

    def __init__(self, status, title, detail, headers=None, **extra):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def to_response(self):
        body = {"title": self.title, "detail": self.detail, "status": self.status, **self.extra}
        return jsonify(body), self.status, self.headers


def not_found(detail):
    return ApiError(404, "Not found", detail)
