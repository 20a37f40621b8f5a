"""Conversion of job functions and arguments to the text that the queue stores."""

import importlib
import json
import math
import traceback

# Workers call the same few job functions over and over.
_resolved_functions = {}

# Callables that passed the checks of function_path, so producers that enqueue the
# same function over and over check it once.
_function_paths = {}


def function_path(func):
    """Return "module:qualname" for a module-level callable, or check and return such a string."""
    if isinstance(func, str):
        _validate_function_string(func)
        return func

    try:
        return _function_paths[func]
    except (KeyError, TypeError):
        # TypeError: an unhashable callable is checked on every call.
        pass

    if not callable(func):
        raise TypeError(
            "job function must be a callable or a 'module:qualname' string,"
            f" not {type(func).__name__}"
        )

    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname:
        raise ValueError(
            f"job function {func!r} has no module and qualified name."
            " Pass a module-level function."
        )

    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(
            f"job function {module}.{qualname} is a lambda or nested function, which"
            " workers cannot import. Define it at module level."
        )
    if module == "__main__":
        raise ValueError(
            f"job function {qualname} is defined in __main__, which workers cannot"
            " import. Move it into a module."
        )

    path = f"{module}:{qualname}"
    try:
        resolved = resolve_function(path)
    except (ImportError, AttributeError):
        resolved = None
    if resolved != func:
        raise ValueError(
            f"job function {func!r} cannot be imported as {path}."
            " Pass a module-level function."
        )
    try:
        _function_paths[func] = path
    except TypeError:
        pass
    return path


def resolve_function(path):
    """Import and return the callable named by "module:qualname", cached after the first call."""
    function = _resolved_functions.get(path)
    if function is None:
        function = _resolved_functions.setdefault(path, _import_function(path))
    return function


def _import_function(path):
    _validate_function_string(path)
    module_name, _, qualname = path.partition(":")

    target = importlib.import_module(module_name)
    for name in qualname.split("."):
        target = getattr(target, name)
    return target


def encode_arguments(args, kwargs):
    """Return args and kwargs as JSON texts, or raise TypeError if a value is not JSON data."""
    if not isinstance(kwargs, dict):
        raise TypeError(f"job kwargs must be a dict, not {type(kwargs).__name__}")

    for index, value in enumerate(args):
        _check_json_value(value, f"args[{index}]")
    for name, value in kwargs.items():
        _check_json_value(value, f"kwargs[{name!r}]")

    return json.dumps(list(args)), json.dumps(kwargs) if kwargs else "{}"


def format_error(error):
    """Return traceback text for an exception or exc_info tuple, and a text unchanged."""
    if isinstance(error, str):
        return error
    if isinstance(error, tuple):
        return "".join(traceback.format_exception(*error))
    if isinstance(error, BaseException):
        return "".join(traceback.format_exception(error))
    raise TypeError(
        "error must be an exception, an exc_info tuple or a text,"
        f" not {type(error).__name__}"
    )


def _validate_function_string(path):
    module_name, separator, qualname = path.partition(":")
    if not separator or not module_name or not qualname:
        raise ValueError(
            f"invalid job function {path!r}: expected 'module:qualname',"
            " for example 'promptgen.jobs:store_output'"
        )


def _check_json_value(value, where):
    """Raise TypeError unless value is JSON data that round-trips without changing keys."""
    if value is None or isinstance(value, (bool, int, str)):
        return

    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"job argument {where} is {value!r}, which JSON cannot represent")
        return

    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return

    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"job argument {where} has key {key!r} of type {type(key).__name__},"
                    " but JSON object keys must be strings"
                )
            _check_json_value(item, f"{where}[{key!r}]")
        return

    raise TypeError(
        f"job argument {where} is a {type(value).__name__}, which is not JSON-serializable."
        " Pass ids or plain data (str, int, float, bool, None, list, dict) instead."
    )
