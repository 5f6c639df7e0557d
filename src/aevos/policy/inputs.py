"""A policy's declared input: field paths and types, validation, and the input's digest.

A policy declares every field it reads, e.g. ``claim.amount: number`` (a dotted path into
nested objects) or ``customer.tier?: string`` (``?``: optional, ``None`` when missing).
Validation turns an input mapping into a flat ``{path: value}`` dict of exactly the declared
fields, so a condition can never read anything undeclared.

Errors name the field and the type received, never the value: inputs carry PII.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import keyword
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PolicyInputError

#: Declarable types and the Python values each accepts (bool is never a number).
TYPES = ("string", "number", "integer", "boolean", "list", "any")


@dataclass(frozen=True)
class Field:
    """One declared input field: ``path`` like ``claim.amount``, ``type`` one of TYPES."""

    path: str
    type: str
    optional: bool = False

    @classmethod
    def parse(cls, key: str, type_name: str) -> Field:
        """The field declared as ``key: type_name``; ValueError says what is wrong."""
        optional = key.endswith("?")
        path = key[:-1] if optional else key
        check_path(path)
        if type_name not in TYPES:
            raise ValueError(f"field {path!r} has unknown type {type_name!r}; use {_or(TYPES)}")
        return cls(path, type_name, optional)

    def check(self, value: Any) -> str | None:
        """Why ``value`` does not fit this field, or None when it does."""
        if value is None:
            if self.optional:
                return None
            return f"{self.path} is null; declare it optional ('{self.path}?: {self.type}')"
        ok = {
            "string": isinstance(value, str),
            # Ints are exact (and may exceed a float); only floats can be NaN or infinite.
            "number": _is_number(value) and (isinstance(value, int) or math.isfinite(value)),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "list": isinstance(value, list),
            "any": True,
        }[self.type]
        if ok:
            return None
        article = "an" if self.type[0] in "aeiou" else "a"
        finite = " finite" if self.type == "number" and _is_number(value) else ""
        return f"{self.path} must be {article}{finite} {self.type}, got {_kind(value)}"


def check_path(path: str) -> None:
    """A dotted path of plain identifiers; private and dunder names are refused."""
    for part in path.split("."):
        if not part.isidentifier() or keyword.iskeyword(part):
            raise ValueError(f"{path!r} is not a dotted name like 'claim.amount'")
        if part.startswith("_"):
            raise ValueError(f"{path!r}: names starting with '_' are not allowed")


class InputSpec:
    """The declared fields of a policy's input, by path."""

    def __init__(self, fields: Iterable[Field] = ()) -> None:
        self.fields: dict[str, Field] = {}
        for field in fields:
            self.add(field)

    def add(self, field: Field) -> None:
        """Declare one more field; ValueError if it repeats or overlaps another."""
        if field.path in self.fields:
            raise ValueError(f"field {field.path!r} is declared twice")
        for other in self.fields:
            if other.startswith(field.path + ".") or field.path.startswith(other + "."):
                # One path would be both a value and an object holding values.
                raise ValueError(
                    f"fields {other!r} and {field.path!r} overlap; declare one or the other"
                )
        self.fields[field.path] = field

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields.values())

    def __len__(self) -> int:
        return len(self.fields)

    def validate(self, data: Mapping[str, Any], policy: str) -> dict[str, Any]:
        """The declared fields' values from a normalised input; PolicyInputError if not."""
        values: dict[str, Any] = {}
        for field in self.fields.values():
            value = _lookup(data, field, policy)
            problem = field.check(value)
            if problem is not None:
                raise PolicyInputError(f"policy {policy}: input field {problem}", field.path)
            values[field.path] = value
        return values

    def undeclared(self, data: Mapping[str, Any]) -> list[tuple[str, ...]]:
        """Key paths in ``data`` that no declared field covers (typos in a test case)."""
        found: list[tuple[str, ...]] = []

        def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
            for key, value in node.items():
                path = (*prefix, str(key))
                dotted = ".".join(path)
                if dotted in self.fields:
                    continue
                if isinstance(value, Mapping) and any(
                    name.startswith(dotted + ".") for name in self.fields
                ):
                    walk(value, path)
                else:
                    found.append(path)

        walk(data, ())
        return found


def _lookup(data: Mapping[str, Any], field: Field, policy: str) -> Any:
    node: Any = data
    parts = field.path.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Mapping):
            parent = ".".join(parts[:depth])
            raise PolicyInputError(
                f"policy {policy}: input field {parent} must be an object with field "
                f"{part!r}, got {_kind(node)}",
                field.path,
            )
        if part not in node:
            if field.optional:
                return None
            raise PolicyInputError(
                f"policy {policy}: input is missing required field {field.path}", field.path
            )
        node = node[part]
    return node


def normalize(value: Any, path: str = "input") -> Any:
    """``value`` as plain JSON data: mappings and dataclasses become dicts, tuples lists.

    An object with a ``policy_input()`` method is what that method returns: how a value
    presents itself to policies (a model call's result shows its label, confidence and
    whether it is certified, ``prediction.certified``, rather than its internals).

    Raises PolicyInputError naming the path of anything JSON cannot carry (a NaN, a date).
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PolicyInputError(f"{path} is not a finite number", path)
        return value
    present = getattr(value, "policy_input", None)
    if callable(present) and not isinstance(value, type):
        value = present()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PolicyInputError(f"{path} has a non-string key ({_kind(key)})", path)
            result[key] = normalize(item, f"{path}.{key}")
        return result
    if isinstance(value, list | tuple):
        return [normalize(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise PolicyInputError(f"{path} is not JSON data ({_kind(value)})", path)


def canonical_json(data: Any) -> str:
    """The canonical JSON text of normalised data: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def input_digest(data: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of an input: what audit records keep of it."""
    return hashlib.sha256(canonical_json(normalize(data)).encode()).hexdigest()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _or(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)
