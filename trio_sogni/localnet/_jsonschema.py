"""A small JSON Schema subset: validate an instance, and build a deterministic valid instance.

Supported keywords (everything the tool schemas localnet ships use):

* ``type`` (a name or a list of names: ``object``, ``array``, ``string``, ``number``,
  ``integer``, ``boolean``, ``null``), ``enum``, ``const``;
* objects: ``properties``, ``required``, ``additionalProperties`` (a boolean or a schema);
* arrays: ``items`` (one schema), ``minItems``, ``maxItems``;
* strings: ``minLength``, ``maxLength`` (in code points), ``pattern`` (Python :mod:`re`, searched);
* numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (numbers).

Annotations (``title``, ``description``, ``default``, ``examples``, ``$schema``, ``$id``,
``schemaVersion``) are ignored by validation. Any other keyword (``$ref``, ``anyOf``,
``oneOf``...) makes :func:`check_schema` fail, so a schema is never half-checked. Booleans are
not numbers, and an integer is a number without a fractional part (``1.0`` is an integer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

__all__ = ["SchemaError", "check_schema", "example", "validate"]

_ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "schemaVersion", "$comment"}
)
_KEYWORDS: Final = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)
_TYPES: Final = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


MAX_SCHEMA_COUNT: Final = 10_000
"""The largest ``minItems`` / ``maxItems`` / ``minLength`` / ``maxLength`` a schema may state
(:func:`example` builds that many items or characters)."""

_COUNTS: Final = frozenset({"minItems", "maxItems", "minLength", "maxLength"})
_BOUNDS: Final = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


class SchemaError(ValueError):
    """A schema uses a keyword or a value this subset does not support."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_schema(schema: object, path: str = "#") -> None:
    """Check that ``schema`` only uses the supported subset, recursively, and that every
    keyword's value has the right type (so :func:`validate` and :func:`example` never fail on
    it): a hostile schema is refused here, never crashes a worker.

    Raises:
        SchemaError: naming the first unsupported keyword or malformed value.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(f"{path}: a schema must be an object")
    for key, value in cast("Mapping[Any, Any]", schema).items():
        if not isinstance(key, str):
            raise SchemaError(f"{path}: keywords must be strings")
        if key in _ANNOTATIONS:
            continue
        if key not in _KEYWORDS:
            raise SchemaError(f"{path}: unsupported keyword {key!r}")
        if key == "type":
            names: list[Any] = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(  # pyright: ignore[reportUnnecessaryIsInstance]
                isinstance(n, str) and n in _TYPES for n in names
            ):
                raise SchemaError(f"{path}: bad type {value!r}")
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise SchemaError(f"{path}: properties must be an object")
            props: Mapping[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
            for name, sub in props.items():
                check_schema(sub, f"{path}/properties/{name}")
        elif key == "additionalProperties" and isinstance(value, bool):
            pass
        elif key in {"items", "additionalProperties"}:
            check_schema(value, f"{path}/{key}")
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):  # pyright: ignore[reportUnknownVariableType]
                raise SchemaError(f"{path}: required must be a list of strings")
        elif key == "enum":
            if not isinstance(value, list):
                raise SchemaError(f"{path}: enum must be a list")
        elif key in _COUNTS:
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= MAX_SCHEMA_COUNT
            ):
                raise SchemaError(f"{path}: {key} must be an integer in [0, {MAX_SCHEMA_COUNT}]")
        elif key in _BOUNDS:
            if not _is_number(value):
                raise SchemaError(f"{path}: {key} must be a finite number")
        elif key == "pattern":
            try:
                re.compile(value)
            except (re.error, TypeError, ValueError, OverflowError, RecursionError):
                raise SchemaError(f"{path}: bad pattern") from None


def _type_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _type_matches(value: object, name: str) -> bool:
    actual = _type_of(value)
    return actual == name or (name == "number" and actual == "integer")


def validate(instance: object, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``instance`` as ``"<json path>: <problem>"`` (empty: the
    instance is valid). ``schema`` should have passed :func:`check_schema`."""
    errors: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names: list[str] = [expected] if isinstance(expected, str) else list(expected)
        if not any(_type_matches(instance, n) for n in names):
            return [f"{path}: expected {' or '.join(names)}, got {_type_of(instance)}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: must be one of {schema['enum']!r}")
    if isinstance(instance, Mapping):
        errors.extend(_validate_object(instance, schema, path))  # pyright: ignore[reportUnknownArgumentType]
    elif isinstance(instance, list | tuple):
        errors.extend(_validate_array(instance, schema, path))  # pyright: ignore[reportUnknownArgumentType]
    elif isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], instance) is None:
            errors.append(f"{path}: does not match {schema['pattern']!r}")
    elif isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: less than {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: greater than {schema['maximum']}")
        if "exclusiveMinimum" in schema and instance <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: not greater than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and instance >= schema["exclusiveMaximum"]:
            errors.append(f"{path}: not less than {schema['exclusiveMaximum']}")
    return errors


def _validate_object(
    instance: Mapping[str, Any], schema: Mapping[str, Any], path: str
) -> list[str]:
    errors: list[str] = []
    properties: Mapping[str, Any] = schema.get("properties", {})
    errors.extend(
        f"{path}: missing required property {name!r}"
        for name in schema.get("required", ())
        if name not in instance
    )
    additional = schema.get("additionalProperties", True)
    for name, value in instance.items():
        sub = properties.get(name)
        if sub is not None:
            errors.extend(validate(value, sub, f"{path}.{name}"))
        elif additional is False:
            errors.append(f"{path}: unexpected property {name!r}")
        elif isinstance(additional, Mapping):
            errors.extend(validate(value, additional, f"{path}.{name}"))  # pyright: ignore[reportUnknownArgumentType]
    return errors


def _validate_array(instance: Sequence[Any], schema: Mapping[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    if "minItems" in schema and len(instance) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, value in enumerate(instance):
            errors.extend(validate(value, items, f"{path}[{index}]"))  # pyright: ignore[reportUnknownArgumentType]
    return errors


def example(schema: Mapping[str, Any], name: str = "value") -> Any:
    """A deterministic instance of ``schema`` (``name``: the property it is for, used in text).

    Rules, first match wins: ``const``; ``default`` (if it validates); the first ``enum`` value;
    then by the first listed ``type``: an object with every *required* property (each built by
    these rules), an array of ``minItems`` (at least 1, at most ``maxItems``) items, the string
    ``"Simulated <name>."`` padded with ``"."`` to ``minLength`` and cut to ``maxLength``, the
    smallest number allowed by ``minimum``/``exclusiveMinimum`` (else 0; else ``maximum`` if 0 is
    above it), ``False``, ``None``. Without a ``type``: an object if ``properties`` is given, else
    a string. A ``pattern`` the generated string does not match is not repaired: the output then
    fails :func:`validate`, which is how a caller notices.
    """
    if "const" in schema:
        return schema["const"]
    if "default" in schema and not validate(schema["default"], schema):
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    raw: Any = schema.get("type")
    if isinstance(raw, list):
        raw = next(iter(cast("list[Any]", raw)), None)
    kind = str(raw) if raw is not None else ("object" if "properties" in schema else "string")
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        return {
            prop: example(properties.get(prop, {}), prop) for prop in schema.get("required", ())
        }
    if kind == "array":
        count = max(1, schema.get("minItems", 0))
        if "maxItems" in schema:
            count = min(count, schema["maxItems"])
        items: Mapping[str, Any] = schema.get("items", {})
        return [example(items, name) for _ in range(count)]
    if kind == "string":
        text = f"Simulated {name}."
        minimum = schema.get("minLength", 0)
        text = text + "." * max(0, minimum - len(text))
        if "maxLength" in schema:
            text = text[: schema["maxLength"]]
        return text
    if kind in {"number", "integer"}:
        return _example_number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    return None


def _example_number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: int | float = 0
    if "minimum" in schema:
        value = schema["minimum"]
    elif "exclusiveMinimum" in schema:
        value = schema["exclusiveMinimum"] + 1
    elif "maximum" in schema and schema["maximum"] < 0:
        value = schema["maximum"]
    elif "exclusiveMaximum" in schema and schema["exclusiveMaximum"] <= 0:
        value = schema["exclusiveMaximum"] - 1
    if integer and isinstance(value, float):
        value = math.ceil(value)
    return value
