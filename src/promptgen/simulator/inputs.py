"""Validation of prediction requests against the model's input schema.

Each problem is an invalid field in the shape of Replicate's 422 responses:
{"type": ..., "field": ..., "description": ...}.
"""

from urllib.parse import urlsplit

from . import catalog
from .images import InvalidImage, decode_data_url, is_data_url, is_http_url, open_image

#: Fields a prediction request body may contain.
REQUEST_FIELDS = (
    "version",
    "input",
    "webhook",
    "webhook_completed",
    "webhook_events_filter",
    "stream",
)


def invalid_field(kind, field, description):
    return {"type": kind, "field": field, "description": description}


def check_request(body, needs_version):
    """Return the invalid fields of a prediction request body, outside its input.

    needs_version is False for POST /v1/models/{owner}/{name}/predictions, whose URL names
    the model, so a version in the body is rejected there.
    """
    allowed = (
        REQUEST_FIELDS if needs_version else [name for name in REQUEST_FIELDS if name != "version"]
    )
    problems = [
        invalid_field(
            "additional_property_not_allowed", "", f"Additional property {name} is not allowed"
        )
        for name in body
        if name not in allowed
    ]

    if needs_version and "version" not in body:
        problems.append(invalid_field("required", "", "version is required"))
    elif needs_version and not isinstance(body["version"], str):
        problems.append(_type_problem("version", "string", body["version"]))

    if "input" not in body:
        problems.append(invalid_field("required", "", "input is required"))
    elif not isinstance(body["input"], dict):
        problems.append(_type_problem("input", "object", body["input"]))

    for name in ("webhook", "webhook_completed"):
        if body.get(name) is not None:
            problems.extend(_check_webhook_url(name, body[name]))

    if body.get("webhook_events_filter") is not None:
        problems.extend(_check_events_filter(body["webhook_events_filter"]))

    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        problems.append(_type_problem("stream", "boolean", body["stream"]))
    return problems


def check_input(values, max_pixels):
    """Return the invalid fields of a prediction's input.

    A null value counts as a missing input. Inputs the schema does not name are accepted
    and ignored, because the schema does not set additionalProperties. When everything else
    is valid, a data URL image is decoded here so that a broken image fails the request.
    An http(s) image is only downloaded when the prediction runs.
    """
    schema = catalog.INPUT_SCHEMA
    problems = [
        invalid_field("required", "input", f"{name} is required")
        for name in schema["required"]
        if values.get(name) is None
    ]

    for name, spec in schema["properties"].items():
        value = values.get(name)
        if value is not None:
            problems.extend(_check_value(f"input.{name}", spec, value))

    image = values.get("image")
    if isinstance(image, str) and not problems:
        problems.extend(_check_image("input.image", image, max_pixels))
    return problems


def with_defaults(values):
    """Return the input with every missing or null input replaced by its default."""
    present = {name: value for name, value in values.items() if value is not None}
    return {**catalog.input_defaults(), **present}


def describe(problems):
    """Return the detail text of a 422 response: one "- field: description" line per problem."""
    return "".join(f"- {p['field'] or '(root)'}: {p['description']}\n" for p in problems)


def _check_value(field, spec, value):
    allowed = catalog.enum_values(spec)
    if allowed is not None:
        if value not in allowed:
            quoted = ", ".join(f'"{choice}"' for choice in allowed)
            return [invalid_field("enum", field, f"{field} must be one of the following: {quoted}")]
        return []

    if not _has_type(value, spec["type"]):
        return [_type_problem(field, spec["type"], value)]

    if "minimum" in spec and value < spec["minimum"]:
        return [
            invalid_field(
                "number_gte", field, f"Must be greater than or equal to {spec['minimum']}"
            )
        ]
    if "maximum" in spec and value > spec["maximum"]:
        return [
            invalid_field("number_lte", field, f"Must be less than or equal to {spec['maximum']}")
        ]
    return []


def _has_type(value, expected):
    # bool is a subclass of int in Python but a separate type in JSON.
    if isinstance(value, bool):
        return expected == "boolean"
    if expected == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if expected == "number":
        return isinstance(value, (int, float))
    if expected == "string":
        return isinstance(value, str)
    return False


def _json_type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_problem(field, expected, value):
    given = _json_type_name(value)
    return invalid_field(
        "invalid_type", field, f"Invalid type. Expected: {expected}, given: {given}"
    )


def _check_image(field, value, max_pixels):
    if is_http_url(value):
        return []
    if not is_data_url(value):
        return [
            invalid_field(
                "format", field, "Does not match format 'uri': use an http(s) URL or a data URL"
            )
        ]

    try:
        open_image(decode_data_url(value), max_pixels)
    except InvalidImage as error:
        return [invalid_field("format", field, str(error))]
    return []


def _check_webhook_url(field, value):
    if not isinstance(value, str):
        return [_type_problem(field, "string", value)]

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            invalid_field(
                "format", field, "Does not match format 'uri': use an absolute http(s) URL"
            )
        ]
    return []


def _check_events_filter(value):
    if not isinstance(value, list):
        return [_type_problem("webhook_events_filter", "array", value)]

    problems = []
    for index, event in enumerate(value):
        if event not in catalog.WEBHOOK_EVENTS:
            field = f"webhook_events_filter.{index}"
            quoted = ", ".join(f'"{name}"' for name in catalog.WEBHOOK_EVENTS)
            problems.append(
                invalid_field("enum", field, f"{field} must be one of the following: {quoted}")
            )
    return problems
