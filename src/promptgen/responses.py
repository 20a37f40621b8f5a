"""Small helpers shared by the views."""


def form_status(form):
    """Return 422 for a submitted form that failed validation, 200 for a first view."""
    return 422 if form.is_submitted() else 200
