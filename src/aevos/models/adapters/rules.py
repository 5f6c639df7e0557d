"""The ``rules`` flavor: a declarative decision table, versioned like any other model.

The artifact is UTF-8 JSON or YAML::

    input:                       # the fields the table reads, with their types
      amount: number
      severity: string
    table:                       # first matching row wins
      - id: small-minor
        when: {amount: {lt: 1000}, severity: {in: [Minor Damage, Trivial Damage]}}
        label: auto
        confidence: 0.9
      - when: {amount: {between: [1000, 20000]}}
        label: review
    default: {label: investigate, confidence: 0.5}

A row matches when every condition in ``when`` holds (an empty ``when`` always matches).
A condition maps operators to operands: ``lt le gt ge eq ne in not_in between``
(``between`` is inclusive); several operators on one field must all hold. A bare scalar
means ``eq`` and a bare list means ``in``. Thresholds are rows with one comparison.

Everything is checked at load: an unknown operator or field, an operand of the wrong type,
a confidence outside [0, 1] is a :class:`DefinitionError` naming its place. At call time
the input is checked against ``input`` (:class:`ModelInputError` names the field).

The answer is ``Prediction(label=row label, confidence=row confidence, output={"rule":
row id or "table[i]" or "default", **row output})``; with no match and no default the
label is ``None``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import DefinitionError
from .. import flavors
from ..types import ModelAdapter, Prediction
from . import signature as sig
from .document import parse_document

FLAVOR = "rules"


def _between(value: Any, bounds: Any) -> bool:
    return bool(bounds[0] <= value <= bounds[1])


def _in(value: Any, options: Any) -> bool:
    return value in options


def _not_in(value: Any, options: Any) -> bool:
    return value not in options


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
    "in": _in,
    "not_in": _not_in,
    "between": _between,
}
_ORDERED = {"lt", "le", "gt", "ge", "between"}
_TABLE_KEYS = {"input", "table", "default", "description", "name"}
_ROW_KEYS = {"id", "when", "label", "confidence", "output", "description"}


@dataclass(frozen=True)
class _Test:
    field: str
    op: str
    fn: Callable[[Any, Any], bool]
    operand: Any


@dataclass(frozen=True)
class _Row:
    rule: str
    tests: tuple[_Test, ...]
    prediction: Prediction


class RulesAdapter:
    """A compiled decision table. Immutable after load, so ``predict`` is thread-safe."""

    flavor = FLAVOR

    def __init__(self, definition: Mapping[str, Any]) -> None:
        if not isinstance(definition, Mapping):
            raise DefinitionError("a rules artifact must be a mapping with 'input' and 'table'")
        unknown = sorted(set(definition) - _TABLE_KEYS)
        if unknown:
            raise DefinitionError(f"rules: unknown key(s) {', '.join(unknown)}")
        fields = definition.get("input")
        if not isinstance(fields, Mapping) or not fields:
            raise DefinitionError("rules: 'input' must map each field the table reads to a type")
        self.signature = sig.normalize({"type": "object", "fields": fields}, "rules.input")
        self._types: dict[str, str] = {
            name: spec["type"] for name, spec in self.signature["fields"].items()
        }
        for name, kind in self._types.items():
            if kind not in {"number", "integer", "string", "boolean"}:
                raise DefinitionError(
                    f"rules.input.{name}: a rules field is a number, integer, string or boolean"
                )
        table = definition.get("table")
        if not isinstance(table, list):
            raise DefinitionError("rules: 'table' must be a list of rows")
        self._rows = tuple(self._row(row, f"table[{i}]") for i, row in enumerate(table))
        default = definition.get("default")
        self._default = (
            self._row({**default, "id": "default"}, "default").prediction
            if default is not None
            else Prediction(label=None, output={"rule": None})
        )

    def _row(self, row: Any, where: str) -> _Row:
        if not isinstance(row, Mapping):
            raise DefinitionError(f"rules.{where}: a row is a mapping with 'when' and 'label'")
        unknown = sorted(set(row) - _ROW_KEYS)
        if unknown:
            raise DefinitionError(f"rules.{where}: unknown key(s) {', '.join(unknown)}")
        if "label" not in row:
            raise DefinitionError(f"rules.{where}: a row needs a 'label'")
        confidence = row.get("confidence")
        if confidence is not None and (
            not sig.is_number(confidence) or not 0.0 <= confidence <= 1.0
        ):
            raise DefinitionError(f"rules.{where}.confidence must be a number in [0, 1]")
        extra = row.get("output", {})
        if not isinstance(extra, Mapping):
            raise DefinitionError(f"rules.{where}.output must be a mapping")
        when = row.get("when") or {}
        if not isinstance(when, Mapping):
            raise DefinitionError(f"rules.{where}.when must map fields to conditions")
        tests: list[_Test] = []
        for field, condition in when.items():
            tests.extend(self._tests(str(field), condition, f"{where}.when.{field}"))
        rule = str(row.get("id", where))
        prediction = Prediction(
            label=row["label"],
            confidence=float(confidence) if confidence is not None else None,
            output={"rule": rule, **extra},
        )
        return _Row(rule, tuple(tests), prediction)

    def _tests(self, field: str, condition: Any, where: str) -> list[_Test]:
        kind = self._types.get(field)
        if kind is None:
            raise DefinitionError(
                f"rules.{where}: unknown field {field!r} (declared: {', '.join(self._types)})"
            )
        if not isinstance(condition, Mapping):
            condition = {"in": condition} if isinstance(condition, list) else {"eq": condition}
        if not condition:
            raise DefinitionError(f"rules.{where}: empty condition")
        tests = []
        for op, operand in condition.items():
            fn = OPERATORS.get(op)
            if fn is None:
                raise DefinitionError(
                    f"rules.{where}: unknown operator {op!r} (known: {', '.join(OPERATORS)})"
                )
            if op in _ORDERED and kind == "boolean":
                raise DefinitionError(f"rules.{where}: {op!r} does not apply to a boolean field")
            if op in {"in", "not_in"}:
                if not isinstance(operand, list):
                    raise DefinitionError(f"rules.{where}.{op} takes a list")
                for value in operand:
                    self._check_operand(kind, value, f"{where}.{op}")
                operand = frozenset(operand) if all(_hashable(v) for v in operand) else operand
            elif op == "between":
                if not isinstance(operand, list) or len(operand) != 2:
                    raise DefinitionError(f"rules.{where}.between takes [low, high]")
                for value in operand:
                    self._check_operand(kind, value, f"{where}.between")
                if operand[0] > operand[1]:
                    raise DefinitionError(f"rules.{where}.between: low is above high")
                operand = tuple(operand)
            else:
                self._check_operand(kind, operand, f"{where}.{op}")
            tests.append(_Test(field, op, fn, operand))
        return tests

    @staticmethod
    def _check_operand(kind: str, value: Any, where: str) -> None:
        if kind in ("number", "integer"):
            ok = sig.is_number(value)  # comparing an integer field with 2.5 is meaningful
        else:
            ok = isinstance(value, str if kind == "string" else bool)
        if not ok:
            raise DefinitionError(
                f"rules.{where}: operand of type {type(value).__name__} for a {kind} field"
            )

    def predict(self, input: Any) -> Prediction:
        sig.validate(self.signature, input)
        for row in self._rows:
            if all(
                input.get(t.field) is not None and t.fn(input[t.field], t.operand)
                for t in row.tests
            ):
                return row.prediction
        return self._default

    def batch_predict(self, inputs: Iterable[Any]) -> list[Prediction]:
        return [self.predict(x) for x in inputs]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def load(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> ModelAdapter:
    """Flavor loader: a JSON/YAML decision table -> :class:`RulesAdapter` (config unused)."""
    return RulesAdapter(parse_document(artifact))


flavors.register_flavor(FLAVOR, load)
