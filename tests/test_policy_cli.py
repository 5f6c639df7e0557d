"""Policy tests (``*.test.yaml``) and the ``aevos policy`` commands a team runs in CI."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aevos.cli import cli
from aevos.errors import PolicyLoadError
from aevos.policy import run_policy_tests

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"

POLICY = """\
policy: auto-route
version: 3
kind: action
input:
  prediction.confidence: number
  claim.amount: number
  actor.role?: string
rules:
  - name: confident-and-small
    when: prediction.confidence >= 0.97 and claim.amount < 5000
    decision: allow
    reason: confident prediction on a small claim
  - when: claim.amount >= 50000
    decision: deny
    reason: large claims are never automated
default: {decision: review, reason: below the confidence threshold}
"""

PASSING = """\
policy: auto-route
cases:
  - name: confident and small
    input: {prediction: {confidence: 0.99}, claim: {amount: 10}}
    expect: allow
    expect_rule: confident-and-small
  - name: large
    input: {prediction: {confidence: 0.99}, claim: {amount: 90000}}
    expect: deny
    expect_rule: 2
  - input: {prediction: {confidence: 0.5}, claim: {amount: 10}, actor: {role: agent}}
    expect: review
    expect_rule: default
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    write(tmp_path, "auto-route.yaml", POLICY)
    write(tmp_path, "auto-route.test.yaml", PASSING)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


# -- the runner ------------------------------------------------------------------------------


def test_the_examples_pass_their_own_tests() -> None:
    report = run_policy_tests(EXAMPLES)
    assert report.passed, [case.message for case in report.failures]
    assert {case.policy for case in report.cases} == {
        "claims-auto-approve",
        "model-access",
        "promotion-gate",
        "refund-limit",
        "retraining-promotion",
    }
    assert report.untested == ()
    assert len(report.cases) >= 20


def test_passing_cases(policies: Path) -> None:
    report = run_policy_tests(policies)
    assert report.passed and report.summary() == "3 passed, 0 failed"
    assert [(c.case, c.result, c.rule, c.line) for c in report.cases] == [
        ("confident and small", "allow", "confident-and-small", 3),
        ("large", "deny", "#2", 7),
        ("case 3", "review", "default", 11),
    ]


def test_failing_cases_say_what_was_expected_and_what_came(policies: Path) -> None:
    write(
        policies,
        "auto-route.test.yaml",
        """\
        policy: auto-route
        cases:
          - name: wrong result
            input: {prediction: {confidence: 0.99}, claim: {amount: 10}}
            expect: review
          - name: right result, wrong rule
            input: {prediction: {confidence: 0.5}, claim: {amount: 10}}
            expect: review
            expect_rule: "#2"
          - name: passes
            input: {prediction: {confidence: 0.5}, claim: {amount: 10}}
            expect: review
        """,
    )
    write(policies, "other.yaml", POLICY.replace("policy: auto-route", "policy: other"))
    report = run_policy_tests(policies)
    assert not report.passed and report.summary() == "1 passed, 2 failed"
    first, second = report.failures
    assert first.message == (
        "expected review, got allow by rule confident-and-small: "
        "confident prediction on a small claim"
    )
    assert first.location == f"{policies / 'auto-route.test.yaml'}:3"
    assert second.message.startswith("expected review by rule #2, got review by rule default")
    assert report.untested == ("other v3",)


def test_an_evaluation_error_fails_the_case(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", POLICY.replace("claim.amount: number", "claim.amount: any"))
    write(
        tmp_path,
        "p.test.yaml",
        """\
        policy: auto-route
        cases:
          - input: {prediction: {confidence: 0.99}, claim: {amount: "10"}}
            expect: allow
        """,
    )
    (case,) = run_policy_tests(tmp_path).cases
    assert not case.passed and case.result is None
    assert case.message.startswith("[policy_evaluation_failed] policy auto-route v3, rule")


@pytest.mark.parametrize(
    ("test_file", "line", "complaint"),
    [
        ("policy: nope\ncases: []\n", 1, "no policy named 'nope'"),
        ("policy: auto-route\nversion: 7\ncases: []\n", 2, "has no version 7"),
        (
            "policy: auto-route\ncases:\n  - input:\n      claim: {amout: 1}\n    expect: allow\n",
            4,
            "unknown field 'claim.amout' for policy auto-route",
        ),
        (
            "policy: auto-route\ncases:\n  - input: {typo: 1}\n    expect: allow\n",
            3,
            "unknown field 'typo'",
        ),
        (
            "policy: auto-route\ncases:\n  - input:\n      prediction: {confidence: 0.5}\n    expect: allow\n",
            4,
            "missing required field claim.amount",
        ),
        (
            "policy: auto-route\ncases:\n  - input:\n      prediction: {confidence: 0.5}\n"
            "      claim:\n        amount: lots\n    expect: allow\n",
            6,
            "claim.amount must be a number, got str",
        ),
        (
            "policy: auto-route\ncases:\n  - input: {}\n    expect: approve\n",
            4,
            "action policies decide allow, review, deny, never 'approve'",
        ),
        (
            "policy: auto-route\ncases:\n  - input: {}\n    expect: allow\n    expect_rule: nope\n",
            5,
            "has no rule 'nope'",
        ),
        ("policy: auto-route\ncases:\n  - input: {}\n    expected: allow\n", 4, "unknown key"),
        ("policy: auto-route\ncases: [\n", 3, "invalid YAML"),
    ],
)
def test_invalid_test_files_fail_at_load_with_file_and_line(
    policies: Path, test_file: str, line: int, complaint: str
) -> None:
    write(policies, "bad.test.yaml", test_file)
    with pytest.raises(PolicyLoadError) as caught:
        run_policy_tests(policies)
    ((file, got_line, message),) = caught.value.problems
    assert file == str(policies / "bad.test.yaml")
    assert (got_line, complaint in message) == (line, True), message


# -- the command line ------------------------------------------------------------------------


def test_cli_policy_test_passes_on_the_examples() -> None:
    result = invoke("policy", "test", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "FAIL" not in result.stdout
    assert "passed, 0 failed" in result.stdout


def test_cli_policy_test_defaults_to_the_policies_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "policies")
    monkeypatch.chdir(tmp_path)
    result = invoke("policy", "test")
    assert result.exit_code == 0, result.output


def test_cli_policy_test_exits_1_on_failures(policies: Path) -> None:
    write(
        policies,
        "auto-route.test.yaml",
        PASSING.replace("expect: deny", "expect: review").replace("expect_rule: 2", ""),
    )
    write(policies, "untested.yaml", POLICY.replace("policy: auto-route", "policy: untested"))
    result = invoke("policy", "test", str(policies))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout and "2 passed, 1 failed" in result.stdout
    assert "expected review, got deny by rule #2" in result.stdout
    assert "warning: policy untested v3 has no test cases" in result.stderr


def test_cli_policy_test_and_check_exit_2_listing_every_problem(policies: Path) -> None:
    write(policies, "broken.yaml", POLICY.replace("claim.amount < 5000", "open('x')"))
    write(policies, "zz.yaml", "policy: x\n")
    for command in ("test", "check"):
        result = invoke("policy", command, str(policies))
        assert result.exit_code == 2, result.output
        assert f"{policies / 'broken.yaml'}:10: error: rule confident-and-small: " in result.stderr
        assert "function calls are not allowed: open('x')" in result.stderr
        assert f"{policies / 'zz.yaml'}:1: error: a policy is missing 'version'" in result.stderr
        assert "error [policy_invalid]: 2 problem(s) in policy files" in result.stderr
        assert "Traceback" not in result.output


def test_cli_policy_check_lists_valid_policies() -> None:
    result = invoke("policy", "check", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert "5 valid policies" in result.stdout
    for name in (
        "claims-auto-approve",
        "model-access",
        "promotion-gate",
        "refund-limit",
        "retraining-promotion",
    ):
        assert name in result.stdout


def test_cli_policy_explain_prints_the_trace() -> None:
    data = {
        "tenant": "bank-eu",
        "actor": {"role": "service"},
        "model": {"name": "gpt-triage", "provider": "external"},
        "data": {"classification": "internal"},
    }
    result = invoke(
        "policy", "explain", "model-access", "--dir", str(EXAMPLES), "--input", json.dumps(data)
    )
    assert result.exit_code == 0, result.output
    assert "data-residency (line 19) -> deny: MATCHED, decides" in result.stdout
    assert 'tenant == "bank-eu" -> True' in result.stdout
    assert "approved-llms (line 32) -> allow: would match, but an earlier rule" in result.stdout
    assert "decision: deny (rule data-residency)" in result.stdout
    assert "redact before the model call: ticket.text" in result.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["model-access", "--input", "{not json"], "bad_json"),
        (["model-access", "--input", "[1]"], "bad_json"),
        (["nope", "--input", "{}"], "policy_not_found"),
        (["model-access", "--input", "{}"], "policy_input_invalid"),
        (["model-access", "--version", "9", "--input", "{}"], "policy_not_found"),
    ],
)
def test_cli_policy_explain_refusals(args: list[str], code: str) -> None:
    result = invoke("policy", "explain", *args, "--dir", str(EXAMPLES))
    assert result.exit_code == 2, result.output
    assert f"error [{code}]: " in result.stderr
    assert "Traceback" not in result.output


def test_cli_policy_show() -> None:
    result = invoke("policy", "show", "promotion-gate", "--dir", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    for text in ("promotion-gate v2", "candidate.samples", "integer", "worse-than-champion"):
        assert text in result.stdout
    assert "default" in result.stdout
    python = invoke("policy", "show", "refund-limit", "--dir", str(EXAMPLES))
    assert python.exit_code == 0, python.output
    assert "decided by a Python function" in python.stdout
    missing = invoke("policy", "show", "nope", "--dir", str(EXAMPLES))
    assert missing.exit_code == 2 and "error [policy_not_found]" in missing.stderr
