"""Policies written as Python functions, for logic a list of rules would make awkward.

::

    @python_policy("refund-limit", version=2, kind="action",
                   input={"refund.amount": "number", "customer.tier": "string"})
    def refund_limit(input: Mapping[str, Any]) -> Verdict:
        limit = {"gold": 500, "silver": 200}.get(input["customer.tier"], 50)
        if input["refund.amount"] <= limit:
            return Verdict("allow", f"within the {input['customer.tier']} limit", rule="tier-limit")
        return Verdict("review", "above the tier's limit")

The function receives only the declared fields, validated: a dict keyed by field path, or
an instance of the dataclass given as ``input`` (nested dataclasses for dotted paths,
``X | None`` for optional fields). It returns a :class:`Verdict` or a ``(result, reason)``
pair. The decorator returns the :class:`PythonPolicy`; nothing is registered globally: add
it to a :class:`PolicySet`, or put the module in the policy directory, where
:meth:`PolicySet.load` finds it and ``aevos policy test`` tests it like any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from ..errors import DefinitionError, PolicyError, PolicyEvaluationError, PolicyLoadError
from .engine import KINDS, CaseRetention, Decision, Policy, RuleTrace, Verdict
from .inputs import Field, InputSpec, check_path

PolicyFunction = Callable[[Any], "Verdict | tuple[str, str]"]

# A dataclass input as (class, [(attribute, field path | nested shape)]), built once.
_Shape = tuple[type, list[tuple[str, "str | _Shape"]]]

_SCALARS = {str: "string", bool: "boolean", int: "integer", float: "number"}


class PythonPolicy(Policy):
    """A policy whose decision is a Python function of its declared input."""

    def __init__(self, func: PolicyFunction, shape: _Shape | None, **common: Any) -> None:
        super().__init__(**common)
        self.func = func
        self._shape = shape

    def _decide(self, values: dict[str, Any], traces: list[RuleTrace] | None) -> Verdict:
        argument = _build(self._shape, values) if self._shape else dict(values)
        try:
            returned = self.func(argument)
        except PolicyError:
            raise
        except KeyError as exc:
            raise self._error(f"reads {exc.args[0]!r}, which is not a declared field") from exc
        except Exception as exc:
            # The exception's message may quote input values; its type and traceback do not.
            raise self._error(f"raised {type(exc).__name__}") from exc
        return self._verdict(returned)

    def _verdict(self, returned: Any) -> Verdict:
        if isinstance(returned, tuple) and len(returned) == 2:
            returned = Verdict(*returned)
        if not isinstance(returned, Verdict) or not isinstance(returned.reason, str):
            raise self._error("must return a Verdict or a (result, reason) pair of strings")
        allowed = KINDS[self.kind]
        if returned.result not in allowed:
            raise self._error(
                f"returned {returned.result!r}; {self.kind} policies decide {', '.join(allowed)}"
            )
        if returned.redact and self.kind != "model_call":
            raise self._error("only model_call policies may ask for redaction")
        try:
            for path in returned.redact:
                check_path(path)
        except ValueError as exc:
            raise self._error(f"asks to redact {exc}") from None
        return Verdict(
            returned.result, returned.reason, returned.rule or self.func.__name__, returned.redact
        )

    def _error(self, message: str) -> PolicyEvaluationError:
        return PolicyEvaluationError(
            f"policy {self.name} v{self.version} ({self.location}): "
            f"{self.func.__qualname__} {message}"
        )

    def _note(self, decision: Decision) -> str | None:
        return f"python function {self.func.__qualname__} ({self.location}) decided"


def python_policy(
    name: str,
    *,
    version: int,
    kind: str,
    input: Mapping[str, str] | type,
    description: str | None = None,
    redact: Sequence[str] = (),
    cases: CaseRetention | None = None,
) -> Callable[[PolicyFunction], PythonPolicy]:
    """Make a function of its declared ``input`` a policy; misuse raises DefinitionError.

    ``input`` is a dict of field declarations as in a YAML policy (``{"claim.amount?":
    "number"}``) or a dataclass. ``description`` defaults to the docstring's first line.
    """
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise DefinitionError(f"policy name must be a non-empty word, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DefinitionError(f"policy {name}: version must be an integer >= 1")
    if kind not in KINDS:
        raise DefinitionError(f"policy {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if redact and kind != "model_call":
        raise DefinitionError(f"policy {name}: only model_call policies may redact")
    if cases is not None and not isinstance(cases, CaseRetention):
        raise DefinitionError(f"policy {name}: cases must be a CaseRetention")
    shape: _Shape | None = None
    try:
        for path in redact:
            check_path(path)
        if isinstance(input, type) and dataclasses.is_dataclass(input):
            fields, shape = _dataclass_input(input, "")
        elif isinstance(input, Mapping):
            fields = [Field.parse(key, type_name) for key, type_name in input.items()]
        else:
            raise ValueError("input must be a dict of field types or a dataclass")
        spec = InputSpec(fields)
    except ValueError as exc:
        raise DefinitionError(f"policy {name}: {exc}") from None

    def decorate(func: PolicyFunction) -> PythonPolicy:
        try:
            inspect.signature(func).bind(None)
        except TypeError:
            raise DefinitionError(
                f"policy {name}: {getattr(func, '__qualname__', func)!r} must take one "
                "argument, the input"
            ) from None
        doc = (inspect.getdoc(func) or "").strip().splitlines()
        return PythonPolicy(
            func,
            shape,
            name=name,
            version=version,
            kind=kind,
            inputs=spec,
            digest=_digest(func),
            source=func.__code__.co_filename,
            line=func.__code__.co_firstlineno,
            description=description if description is not None else (doc[0] if doc else ""),
            redact=tuple(redact),
            cases=cases,
        )

    return decorate


def _digest(func: PolicyFunction) -> str:
    # The whole defining file: a helper the function calls is part of the policy too.
    try:
        return hashlib.sha256(Path(func.__code__.co_filename).read_bytes()).hexdigest()
    except OSError:
        return hashlib.sha256(func.__code__.co_code).hexdigest()


def _dataclass_input(cls: type, prefix: str) -> tuple[list[Field], _Shape]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:
        raise ValueError(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from None
    fields: list[Field] = []
    members: list[tuple[str, str | _Shape]] = []
    for member in dataclasses.fields(cls):
        if not member.init:
            continue
        path = prefix + member.name
        annotation, optional = _unwrap_optional(hints[member.name], path)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            if optional:
                raise ValueError(f"{path}: a nested dataclass cannot be optional")
            nested, shape = _dataclass_input(annotation, path + ".")
            fields += nested
            members.append((member.name, shape))
        else:
            check_path(path)
            fields.append(Field(path, _type_name(annotation, path), optional))
            members.append((member.name, path))
    return fields, (cls, members)


def _unwrap_optional(annotation: Any, path: str) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(annotation)) != 2:
            raise ValueError(f"{path}: only 'X | None' unions are supported")
        return args[0], True
    return annotation, False


def _type_name(annotation: Any, path: str) -> str:
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin = typing.get_origin(annotation) or annotation
    if origin in (list, tuple) or origin is Sequence:
        return "list"
    if annotation in (Any, object) or origin in (dict, Mapping):
        return "any"
    raise ValueError(f"{path}: cannot declare a field of type {annotation!r}")


def _build(shape: _Shape, values: Mapping[str, Any]) -> Any:
    cls, members = shape
    kwargs = {
        name: values[source] if isinstance(source, str) else _build(source, values)
        for name, source in members
    }
    return cls(**kwargs)


def load_python_file(path: Path) -> list[PythonPolicy]:
    """Import a module from the policy directory and return the policies it defines.

    The module runs like any test module of the application (it is the application's own
    code); an error while importing it is a PolicyLoadError at the line that failed.
    """
    module_name = "_aevos_policies_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PolicyLoadError([(str(path), None, "cannot import this file")])
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs so dataclasses and typing can resolve its annotations.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise PolicyLoadError([(str(path), exc.lineno, f"invalid Python: {exc.msg}")]) from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if Path(f.filename).resolve() == path.resolve()
        ]
        line = frames[-1].lineno if frames else None
        message = (
            exc.message if isinstance(exc, DefinitionError) else f"{type(exc).__name__}: {exc}"
        )
        raise PolicyLoadError([(str(path), line, f"importing failed: {message}")]) from None
    found: dict[int, PythonPolicy] = {}
    for value in vars(module).values():
        # Policies imported from another module belong to that module's file.
        if isinstance(value, PythonPolicy) and Path(value.source).resolve() == path.resolve():
            value.source = str(path)  # as the directory was named, like YAML policies
            found.setdefault(id(value), value)
    return list(found.values())
