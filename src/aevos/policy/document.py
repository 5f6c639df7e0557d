"""Policy files: YAML read with line numbers, validated into a :class:`RulePolicy`.

::

    policy: claims-auto-approve      # name; with version, identifies what was decided
    version: 3
    kind: action                     # model_call | action | promotion
    description: Auto-approve confident, small claims; a person reviews the rest.
    input:                           # every field the rules read; `?`: optional
      prediction.confidence: number  # string | number | integer | boolean | list | any
      claim.amount: number
    rules:                           # the first rule whose `when` holds decides
      - name: confident-and-small
        when: prediction.confidence >= 0.97 and claim.amount < 5000
        decision: allow
        reason: confident prediction on a small claim
    default: {decision: review, reason: below the confidence threshold}
    redact: [ticket.text]            # model_call only: fields to redact for the model
    cases: {keep: true, retention_days: 30}   # model_call only: kept cases (aevos.cases)

Every mistake is a :class:`~aevos.errors.PolicyLoadError` at ``FILE:LINE``: YAML syntax,
unknown or missing keys, a duplicate key, a condition outside the language or reading an
undeclared field, a decision its kind does not allow.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..errors import DefinitionError, PolicyLoadError
from .engine import KINDS, CaseRetention, Rule, RulePolicy, Verdict
from .expression import ExpressionError, compile_condition
from .inputs import Field, InputSpec, check_path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class YamlNode:
    """A node of a YAML file that knows its file and line, so errors can say where."""

    def __init__(self, node: yaml.Node, file: str, loader: yaml.SafeLoader) -> None:
        self.node = node
        self.file = file
        self._loader = loader

    @property
    def line(self) -> int:
        return int(self.node.start_mark.line) + 1

    def error(self, message: str) -> PolicyLoadError:
        return PolicyLoadError([(self.file, self.line, message)])

    def _child(self, node: yaml.Node) -> YamlNode:
        return YamlNode(node, self.file, self._loader)

    def value(self) -> Any:
        """The node as plain Python data (safe constructors only)."""
        try:
            return self._loader.construct_object(self.node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self.error(f"invalid YAML value: {exc.problem}") from None

    def mapping(
        self, what: str, required: Iterable[str] = (), optional: Iterable[str] | None = None
    ) -> dict[str, YamlNode]:
        """The mapping's entries by key; any other key is refused unless ``optional`` is None."""
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"{what} must be a mapping (key: value)")
        entries: dict[str, YamlNode] = {}
        key_nodes: dict[str, yaml.Node] = {}
        for key_node, value_node in self.node.value:
            key = self._child(key_node).value()
            if not isinstance(key, str):
                raise self._child(key_node).error(f"keys of {what} must be strings, got {key!r}")
            if key in entries:
                # PyYAML would silently keep the last one: a second `default:` must not win.
                raise self._child(key_node).error(
                    f"duplicate key {key!r} in {what} (first at line {entries[key].line})"
                )
            entries[key] = self._child(value_node)
            key_nodes[key] = key_node
        required = tuple(required)
        if optional is not None:
            known = (*required, *optional)
            for key in entries:
                if key not in known:
                    raise YamlNode(key_nodes[key], self.file, self._loader).error(
                        f"unknown key {key!r} in {what}; expected {', '.join(known)}"
                    )
        for key in required:
            if key not in entries:
                raise self.error(f"{what} is missing {key!r}")
        return entries

    def sequence(self, what: str) -> list[YamlNode]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error(f"{what} must be a list")
        return [self._child(item) for item in self.node.value]

    def string(self, what: str) -> str:
        # A scalar's text as written: `reason: no` is the word, not YAML 1.1's False.
        value = self.node.value if isinstance(self.node, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{what} must be a non-empty string")
        return value

    def integer(self, what: str) -> int:
        value = self.value()
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(f"{what} must be an integer >= 1")
        return value

    def line_of(self, path: tuple[str, ...]) -> int:
        """The line of the key at ``path`` inside this mapping (this node's line if absent)."""
        line = self.line
        node = self.node
        for key in path:
            entry = _entry(node, key)
            if entry is None:
                break
            line = int(entry[0].start_mark.line) + 1
            node = entry[1]
        return line


def _entry(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key node, value node) of ``key`` in a mapping node."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None


def read_yaml(path: Path) -> tuple[YamlNode, bytes]:
    """The root node of a one-document YAML file, and the file's bytes."""
    file = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise PolicyLoadError([(file, None, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise PolicyLoadError([(file, None, "not UTF-8 text")]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        context = f" ({exc.context})" if exc.context else ""
        raise PolicyLoadError([(file, line, f"invalid YAML: {exc.problem}{context}")]) from None
    finally:
        loader.dispose()
    if node is None:
        raise PolicyLoadError([(file, None, "the file is empty")])
    return YamlNode(node, file, loader), raw


def load_policy_file(path: Path) -> RulePolicy:
    """The policy in a YAML file; PolicyLoadError at FILE:LINE for the first mistake."""
    root, raw = read_yaml(path)
    doc = root.mapping(
        "a policy",
        required=("policy", "version", "kind", "default"),
        optional=("description", "input", "rules", "redact", "cases"),
    )
    name = doc["policy"].string("policy (the name)")
    if not _NAME.match(name):
        raise doc["policy"].error(f"policy name {name!r} may hold only letters, digits, . _ -")
    version = doc["version"].integer("version")
    kind = doc["kind"].string("kind")
    if kind not in KINDS:
        raise doc["kind"].error(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    description = doc["description"].string("description") if "description" in doc else ""

    inputs = InputSpec()
    if "input" in doc:
        for key, type_node in doc["input"].mapping("input", optional=None).items():
            try:
                inputs.add(Field.parse(key, type_node.string(f"the type of {key}")))
            except ValueError as exc:
                raise type_node.error(str(exc)) from None
    types = {field.path: field.type for field in inputs}

    rules: list[Rule] = []
    for position, item in enumerate(doc["rules"].sequence("rules") if "rules" in doc else (), 1):
        entry = item.mapping(
            f"rule #{position}", required=("when", "decision", "reason"), optional=("name",)
        )
        rule_id = entry["name"].string("a rule's name") if "name" in entry else f"#{position}"
        if rule_id == "default" or (rule_id.startswith("#") and "name" in entry):
            raise entry["name"].error(f"rule name {rule_id!r} is reserved")
        if any(rule.id == rule_id for rule in rules):
            raise entry["name"].error(f"two rules are named {rule_id!r}")
        when = entry["when"]
        text = when.string(f"rule {rule_id}: when (a condition)")
        try:
            condition = compile_condition(text, types)
        except ExpressionError as exc:
            raise PolicyLoadError(
                [(root.file, _condition_line(when, exc.line), f"rule {rule_id}: {exc.message}")]
            ) from None
        result = _decision(entry["decision"], kind)
        reason = entry["reason"].string(f"rule {rule_id}: reason")
        rules.append(Rule(rule_id, condition, result, reason, item.line))

    default_entry = doc["default"].mapping("default", required=("decision", "reason"), optional=())
    default = Verdict(
        _decision(default_entry["decision"], kind), default_entry["reason"].string("reason")
    )

    redact: list[str] = []
    if "redact" in doc:
        if kind != "model_call":
            raise doc["redact"].error("only model_call policies may redact fields")
        for item in doc["redact"].sequence("redact"):
            field = item.string("a field to redact")
            try:
                check_path(field)
            except ValueError as exc:
                raise item.error(str(exc)) from None
            redact.append(field)

    cases: CaseRetention | None = None
    if "cases" in doc:
        if kind != "model_call":
            raise doc["cases"].error("only model_call policies keep cases")
        entry = doc["cases"].mapping("cases", optional=("keep", "retention_days"))
        keep = entry["keep"].value() if "keep" in entry else True
        if not isinstance(keep, bool):
            raise entry["keep"].error("cases.keep must be true or false")
        days = entry["retention_days"].value() if "retention_days" in entry else 90.0
        try:
            cases = CaseRetention(keep=keep, retention_days=days)
        except DefinitionError as exc:
            raise (entry.get("retention_days") or doc["cases"]).error(str(exc)) from None

    return RulePolicy(
        name=name,
        version=version,
        kind=kind,
        inputs=inputs,
        digest=hashlib.sha256(raw).hexdigest(),
        source=root.file,
        line=doc["policy"].line,
        description=description,
        redact=tuple(redact),
        cases=cases,
        rules=tuple(rules),
        default=default,
    )


def _decision(node: YamlNode, kind: str) -> str:
    result = node.string("decision")
    if result not in KINDS[kind]:
        raise node.error(
            f"decision {result!r} is not allowed in {kind} policies; use {', '.join(KINDS[kind])}"
        )
    return result


def _condition_line(node: YamlNode, line_in_text: int) -> int:
    style = getattr(node.node, "style", None)
    if style == "|":  # a literal block keeps its lines, starting below the `|`
        return node.line + line_in_text
    if style == ">":  # folded: lines no longer map; point at its first line
        return node.line + 1
    return node.line
