"""A small JSON Schema checker for tool arguments (standard library only, no I/O).

It covers what the hosted-tool schemas of sogni-protocol's ``manifests/openai-tools.json`` use:
``type`` (``object``, ``array``, ``string``, ``number``, ``integer``, ``boolean``, ``null``, or a
list of them), ``enum``, ``const``, ``properties``, ``required``, ``additionalProperties``
(``false`` or a schema), ``items``, ``minItems`` / ``maxItems``, ``minLength`` / ``maxLength``,
``minimum`` / ``maximum`` / ``exclusiveMinimum`` / ``exclusiveMaximum``. Other keywords are
ignored (they only describe). The client owns this copy: localnet has its own checker and the
client never imports localnet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

__all__ = ["SchemaViolation", "check_arguments"]


class SchemaViolation(Exception):
    """An argument does not match the schema. ``argument`` is its path (``loras[2]``), or
    ``""`` for the arguments object itself."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}" if argument else message)
        self.argument = argument
        self.message = message


def _type_ok(value: object, name: str) -> bool:
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if name == "number":
        return math.isfinite(value)
    if name == "integer":
        return isinstance(value, int) or (math.isfinite(value) and value.is_integer())
    return True  # an unknown type name restricts nothing


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _check(value: object, schema: Mapping[str, Any], path: str) -> None:
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_type_ok(value, str(name)) for name in names):
            raise SchemaViolation(
                path, f"must be {' or '.join(str(n) for n in names)}, not {_describe(value)}"
            )
    if "const" in schema and value != schema["const"]:
        raise SchemaViolation(path, f"must be {schema['const']!r}")
    enum: object = schema.get("enum")
    if isinstance(enum, list):
        items = cast("list[object]", enum)
        if not any(
            (value == item and type(value) is type(item)) or _same_number(value, item)
            for item in items
        ):
            allowed = ", ".join(repr(item) for item in items)
            raise SchemaViolation(path, f"must be one of {allowed}, not {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, schema, path)
    if isinstance(value, str):
        if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
            raise SchemaViolation(path, f"must be at least {schema['minLength']} characters long")
        if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
            raise SchemaViolation(path, f"must be at most {schema['maxLength']} characters long")
    if isinstance(value, list):
        _check_array(value, schema, path)  # pyright: ignore[reportUnknownArgumentType]
    if isinstance(value, Mapping):
        _check_object(value, schema, path)  # pyright: ignore[reportUnknownArgumentType]


def _same_number(value: object, item: object) -> bool:
    numbers = (int, float)
    return (
        isinstance(value, numbers)
        and isinstance(item, numbers)
        and not isinstance(value, bool)
        and not isinstance(item, bool)
        and value == item
    )


def _check_number(value: float, schema: Mapping[str, Any], path: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        raise SchemaViolation(path, f"must be at least {low:g}, got {value:g}")
    if isinstance(high, int | float) and value > high:
        raise SchemaViolation(path, f"must be at most {high:g}, got {value:g}")
    low, high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(low, int | float) and value <= low:
        raise SchemaViolation(path, f"must be more than {low:g}, got {value:g}")
    if isinstance(high, int | float) and value >= high:
        raise SchemaViolation(path, f"must be less than {high:g}, got {value:g}")


def _check_array(value: list[Any], schema: Mapping[str, Any], path: str) -> None:
    if isinstance(schema.get("minItems"), int) and len(value) < schema["minItems"]:
        raise SchemaViolation(path, f"must have at least {schema['minItems']} items")
    if isinstance(schema.get("maxItems"), int) and len(value) > schema["maxItems"]:
        raise SchemaViolation(path, f"must have at most {schema['maxItems']} items")
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            _check(item, items, f"{path}[{index}]")  # pyright: ignore[reportUnknownArgumentType]


def _check_object(value: Mapping[str, Any], schema: Mapping[str, Any], path: str) -> None:
    prefix = f"{path}." if path else ""
    for name in schema.get("required", ()):
        if name not in value:
            raise SchemaViolation(f"{prefix}{name}", "is required")
    properties: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = properties.get(name)
        if isinstance(sub, Mapping):
            _check(item, sub, f"{prefix}{name}")  # pyright: ignore[reportUnknownArgumentType]
        elif extra is False:
            raise SchemaViolation(f"{prefix}{name}", "is not an argument of this tool")
        elif isinstance(extra, Mapping):
            _check(item, extra, f"{prefix}{name}")  # pyright: ignore[reportUnknownArgumentType]


def check_arguments(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Check decoded tool ``arguments`` against a JSON ``schema``.

    Raises:
        SchemaViolation: the first argument that does not match, by path.
    """
    _check(arguments, schema, "")
