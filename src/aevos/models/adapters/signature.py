"""Input signatures: a small JSON description of what a model accepts, checked before a call.

A signature is a mapping with a ``type``; a bare type name stands for ``{"type": name}``::

    {"type": "string"}
    {"type": "object", "fields": {"amount": "number", "severity": {"type": "string",
     "enum": ["Minor Damage", "Major Damage"]}, "note": {"type": "string", "optional": true}}}
    {"type": "array", "items": "number", "length": 4}

Types: ``string``, ``number`` (int or float, not bool), ``integer``, ``boolean``, ``bytes``,
``array`` (``items``, ``length``, ``min_length``, ``max_length``), ``object`` (``fields``;
``additional: false`` refuses unknown keys) and ``any``. Any spec may carry ``enum`` and
``optional``. Errors name the field path and the type received, never the value: inputs
carry personal data.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import DefinitionError, ModelInputError

TYPES = frozenset({"string", "number", "integer", "boolean", "bytes", "array", "object", "any"})
_KEYS = {
    "type",
    "optional",
    "enum",
    "description",
    "fields",
    "additional",
    "items",
    "length",
    "min_length",
    "max_length",
}


def normalize(spec: Any, where: str = "signature") -> dict[str, Any]:
    """Check a signature and return it with every bare type name expanded.

    Raises :class:`DefinitionError` naming the place of the first problem.
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise DefinitionError(f"{where}: a signature is a type name or a mapping with 'type'")
    kind = spec.get("type")
    if kind not in TYPES:
        raise DefinitionError(f"{where}: unknown type {kind!r} (known: {', '.join(sorted(TYPES))})")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise DefinitionError(f"{where}: unknown signature key(s) {', '.join(unknown)}")
    out: dict[str, Any] = dict(spec)
    if "enum" in spec and not isinstance(spec["enum"], list):
        raise DefinitionError(f"{where}: 'enum' must be a list")
    if kind == "object":
        fields = spec.get("fields", {})
        if not isinstance(fields, Mapping):
            raise DefinitionError(f"{where}: 'fields' must be a mapping of name to type")
        out["fields"] = {
            str(name): normalize(sub, f"{where}.{name}") for name, sub in fields.items()
        }
    if kind == "array" and "items" in spec:
        out["items"] = normalize(spec["items"], f"{where}[]")
    for key in ("length", "min_length", "max_length"):
        if key in spec and (not isinstance(spec[key], int) or spec[key] < 0):
            raise DefinitionError(f"{where}: {key!r} must be a non-negative integer")
    return out


def _type_name(value: Any) -> str:
    return type(value).__name__


def _matches(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return is_integer(value)
    if kind == "number":
        return is_number(value)
    if kind == "bytes":
        return isinstance(value, bytes | bytearray | memoryview)
    if kind == "array":
        return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)
    return isinstance(value, Mapping)  # object


def is_number(value: Any) -> bool:
    # bool is an int subclass; True is not an amount. numpy scalars register as numbers.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate(spec: Mapping[str, Any], value: Any, path: str | None = None) -> None:
    """Raise :class:`ModelInputError` if ``value`` does not match the normalized ``spec``."""
    kind = spec["type"]
    where = f"input field {path!r}" if path else "input"
    if not _matches(kind, value):
        raise ModelInputError(f"{where} must be {_article(kind)}, got {_type_name(value)}", path)
    if "enum" in spec and value not in spec["enum"]:
        # The allowed values are the model's, not the caller's, so naming them is safe.
        raise ModelInputError(f"{where} is not one of the {len(spec['enum'])} allowed values", path)
    if kind == "array":
        n = len(value)
        if "length" in spec and n != spec["length"]:
            raise ModelInputError(f"{where} must have {spec['length']} items, got {n}", path)
        if n < spec.get("min_length", 0):
            raise ModelInputError(f"{where} must have at least {spec['min_length']} items", path)
        if "max_length" in spec and n > spec["max_length"]:
            raise ModelInputError(f"{where} must have at most {spec['max_length']} items", path)
        if "items" in spec:
            for i, item in enumerate(value):
                validate(spec["items"], item, f"{path or ''}[{i}]")
    elif kind == "object":
        fields: Mapping[str, Mapping[str, Any]] = spec.get("fields", {})
        for name, sub in fields.items():
            sub_path = f"{path}.{name}" if path else name
            if name not in value or value[name] is None:
                if sub.get("optional", False):
                    continue
                raise ModelInputError(f"input field {sub_path!r} is missing", sub_path)
            validate(sub, value[name], sub_path)
        if spec.get("additional", True) is False:
            extra = sorted(str(k) for k in value if k not in fields)
            if extra:
                # Field names are part of the caller's schema, not their data.
                raise ModelInputError(
                    f"{where} has unknown field(s) {', '.join(map(repr, extra))}",
                    f"{path}.{extra[0]}" if path else extra[0],
                )


def _article(kind: str) -> str:
    names = {
        "string": "a string",
        "number": "a number",
        "integer": "an integer",
        "boolean": "a boolean",
        "bytes": "bytes",
        "array": "an array",
        "object": "an object",
        "any": "any value",
    }
    return names[kind]
