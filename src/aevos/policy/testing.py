"""Policy unit tests: ``*.test.yaml`` files next to the policies, run by ``aevos policy test``.

::

    policy: claims-auto-approve    # the policy under test
    version: 3                     # optional: the newest loaded version by default
    cases:
      - name: confident small claim is automated
        input: {prediction: {confidence: 0.99}, claim: {amount: 1200}}
        expect: allow
        expect_rule: confident-and-small   # optional: the rule that must decide

A test file that names an unknown policy, version or rule, expects a result the policy's
kind cannot give, or whose input has an undeclared field (a typo), a missing field or a
wrongly typed one, is a PolicyLoadError at FILE:LINE: a broken test must not pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PolicyError, PolicyLoadError
from .document import YamlNode, read_yaml
from .engine import KINDS, Policy, RulePolicy
from .inputs import normalize
from .policyset import PolicySet

_SUFFIXES = (".test.yaml", ".test.yml")


@dataclass(frozen=True)
class CaseResult:
    """One test case's outcome; ``message`` says why it failed ("" when it passed)."""

    policy: str
    version: int
    case: str
    file: str
    line: int
    expected: str
    expected_rule: str | None
    result: str | None  # None when the evaluation raised
    rule: str | None
    passed: bool
    message: str = ""

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class PolicyTestReport:
    """Every case's outcome, and the policies no test file exercises."""

    cases: tuple[CaseResult, ...]
    untested: tuple[str, ...]  # "name vN"

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(case for case in self.cases if not case.passed)

    def summary(self) -> str:
        failed = len(self.failures)
        return f"{len(self.cases) - failed} passed, {failed} failed"


@dataclass(frozen=True)
class _Case:
    policy: Policy
    name: str
    file: str
    line: int
    input: dict[str, Any]
    expect: str
    expect_rule: str | None


def run_policy_tests(
    directory: str | os.PathLike[str], policies: PolicySet | None = None
) -> PolicyTestReport:
    """Run the ``*.test.yaml`` files of ``directory`` against its policies.

    ``policies`` defaults to ``PolicySet.load(directory)``. Raises PolicyLoadError, listing
    the problems of every file, when a policy or a test file is invalid.
    """
    root = Path(directory)
    if policies is None:
        policies = PolicySet.load(root)
    cases: list[_Case] = []
    problems: list[tuple[str, int | None, str]] = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.name.endswith(_SUFFIXES):
            try:
                cases += _load_test_file(path, policies)
            except PolicyLoadError as exc:
                problems += exc.problems
    if problems:
        raise PolicyLoadError(problems)
    tested = {(case.policy.name, case.policy.version) for case in cases}
    return PolicyTestReport(
        tuple(_run(case) for case in cases),
        tuple(f"{p.name} v{p.version}" for p in policies if (p.name, p.version) not in tested),
    )


def _run(case: _Case) -> CaseResult:
    def result(passed: bool, got: str | None, rule: str | None, message: str) -> CaseResult:
        return CaseResult(
            case.policy.name,
            case.policy.version,
            case.name,
            case.file,
            case.line,
            case.expect,
            case.expect_rule,
            got,
            rule,
            passed,
            message,
        )

    try:
        decision = case.policy.evaluate(case.input)
    except PolicyError as exc:
        return result(False, None, None, f"[{exc.code}] {exc.message}")
    wrong_result = decision.result != case.expect
    wrong_rule = case.expect_rule is not None and decision.rule != case.expect_rule
    if not (wrong_result or wrong_rule):
        return result(True, decision.result, decision.rule, "")
    expected = case.expect + (f" by rule {case.expect_rule}" if case.expect_rule else "")
    message = (
        f"expected {expected}, got {decision.result} by rule {decision.rule}: {decision.reason}"
    )
    return result(False, decision.result, decision.rule, message)


def _load_test_file(path: Path, policies: PolicySet) -> list[_Case]:
    root, _ = read_yaml(path)
    doc = root.mapping("a policy test file", required=("policy", "cases"), optional=("version",))
    name = doc["policy"].string("policy")
    version = doc["version"].integer("version") if "version" in doc else None
    try:
        policy = policies.get(name, version)
    except PolicyError as exc:
        raise (doc["version"] if "version" in doc else doc["policy"]).error(exc.message) from None
    cases = []
    for position, item in enumerate(doc["cases"].sequence("cases"), 1):
        entry = item.mapping(
            f"case #{position}",
            required=("input", "expect"),
            optional=("name", "expect_rule"),
        )
        case_name = entry["name"].string("name") if "name" in entry else f"case {position}"
        expect = entry["expect"].string("expect")
        allowed = KINDS[policy.kind]
        if expect not in allowed:
            raise entry["expect"].error(
                f"{case_name}: {policy.kind} policies decide {', '.join(allowed)}, never {expect!r}"
            )
        expect_rule = None
        if "expect_rule" in entry:
            written = entry["expect_rule"].value()
            # `expect_rule: 2` means the second rule, which has the id "#2" when unnamed.
            is_position = isinstance(written, int) and not isinstance(written, bool)
            expect_rule = f"#{written}" if is_position else str(written)
            if isinstance(policy, RulePolicy):
                known = [rule.id for rule in policy.rules] + ["default"]
                if expect_rule not in known:
                    raise entry["expect_rule"].error(
                        f"{case_name}: policy {name} has no rule {expect_rule!r} "
                        f"(rules: {', '.join(known)})"
                    )
        data = _case_input(entry["input"], policy, case_name)
        cases.append(_Case(policy, case_name, root.file, item.line, data, expect, expect_rule))
    return cases


def _case_input(node: YamlNode, policy: Policy, case_name: str) -> dict[str, Any]:
    value = node.value()
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise node.error(f"{case_name}: input must be a mapping")
    try:
        data = normalize(value)
    except PolicyError as exc:
        raise node.error(f"{case_name}: {exc.message}") from None
    # Typos first: `claim.amout` is better reported as unknown than `claim.amount` as missing.
    for path in policy.inputs.undeclared(data):
        declared = ", ".join(f.path for f in policy.inputs) or "none"
        raise PolicyLoadError(
            [
                (
                    node.file,
                    node.line_of(path),
                    f"{case_name}: unknown field {'.'.join(path)!r} for policy "
                    f"{policy.name} (declared: {declared})",
                )
            ]
        )
    try:
        policy.inputs.validate(data, f"{policy.name} v{policy.version}")
    except PolicyError as exc:
        field = getattr(exc, "field", None)
        line = node.line_of(tuple(field.split("."))) if field else node.line
        raise PolicyLoadError([(node.file, line, f"{case_name}: {exc.message}")]) from None
    return dict(data)
