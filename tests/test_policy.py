"""Policy as code: loading (every mistake at FILE:LINE), the three enforcement points,
first-match semantics, input validation, decision records, explanations, Python policies.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aevos.errors import (
    DefinitionError,
    PolicyEvaluationError,
    PolicyInputError,
    PolicyLoadError,
    PolicyNotFoundError,
)
from aevos.policy import Decision, PolicySet, Verdict, input_digest, python_policy

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"

AUTO_ROUTE = """\
policy: auto-route
version: 3
kind: action
description: Auto-route confident, cheap tickets; otherwise a human reviews.
input:
  prediction.label: string
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

CLAIM = {"prediction": {"label": "billing", "confidence": 0.99}, "claim": {"amount": 1200}}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(directory: Path) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as caught:
        PolicySet.load(directory)
    return caught.value


def only_problem(directory: Path) -> tuple[str, int | None, str]:
    problems = load_error(directory).problems
    assert len(problems) == 1, problems
    return problems[0]


def with_rule(when: str, inputs: str = "  claim.amount: number\n  a: any\n") -> str:
    return (
        "policy: p\nversion: 1\nkind: action\ninput:\n"
        + inputs
        + f"rules:\n  - name: r\n    when: {when}\n    decision: allow\n    reason: ok\n"
        + "default: {decision: review, reason: no}\n"
    )


# -- loading ---------------------------------------------------------------------------------


def test_loads_every_example_policy() -> None:
    policies = PolicySet.load(EXAMPLES)
    assert policies.names() == [
        "claims-auto-approve",
        "model-access",
        "promotion-gate",
        "refund-limit",
        "retraining-promotion",
    ]
    kinds = {policy.name: policy.kind for policy in policies}
    assert kinds["model-access"] == "model_call"
    assert kinds["promotion-gate"] == "promotion"
    assert kinds["claims-auto-approve"] == "action"
    assert kinds["retraining-promotion"] == "promotion"
    assert len(policies) == 5 and "model-access" in policies


def test_yaml_syntax_error_reports_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "policy: x\nversion: 1\nkind: action\n  rules: [\n")
    file, line, message = only_problem(tmp_path)
    assert file == str(tmp_path / "bad.yaml")
    assert line == 4
    assert "invalid YAML" in message
    assert f"{file}:4: invalid YAML" in str(load_error(tmp_path))


def test_unknown_field_in_when_fails_at_load_with_its_line(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", AUTO_ROUTE.replace("claim.amount < 5000", "claim.amout < 5000"))
    _, line, message = only_problem(tmp_path)
    assert line == 12
    assert "unknown field 'claim.amout'" in message
    assert "rule confident-and-small" in message


@pytest.mark.parametrize(
    ("when", "complaint"),
    [
        ("\"__import__('os').system('id') == 0\"", "function calls are not allowed"),
        ("\"open('x') == 1\"", "function calls are not allowed"),
        ("a.__class__ == 1", "names starting with '_' are not allowed"),
        ("claim.__dict__ == 1", "names starting with '_' are not allowed"),
        ('"a[0] == 1"', "subscripts are not allowed"),
        ('"(lambda: True)()"', "function calls are not allowed"),
        ('"[x for x in a] == 1"', "comprehensions are not allowed"),
        ("\"f'{a}' == 'x'\"", "f-strings are not allowed"),
        ('"a if a else a"', "conditional expressions are not allowed"),
        ('"claim.amount ** 2 > 1"', "only + - * / are allowed"),
        ("a is None", "'is' is not allowed"),
        ('"(a := 1) == 1"', "assignments are not allowed"),
        ("\"{'k': 1} == a\"", "dicts are not allowed"),
        ("claim.amount < '5000'", "compares a number with a string"),
        ("claim.amount and a", "'and' needs True or False"),
        ("claim.amount", "must be True or False"),
        ("claim.amount <", "not a valid condition"),
    ],
)
def test_forbidden_conditions_fail_at_load_naming_the_text(
    tmp_path: Path, when: str, complaint: str
) -> None:
    write(tmp_path, "p.yaml", with_rule(when))
    _, line, message = only_problem(tmp_path)
    assert line == 9, message
    assert complaint in message


def test_condition_error_in_a_literal_block_points_at_its_line(tmp_path: Path) -> None:
    text = with_rule("|\n      claim.amount > 3\n      and open('x') == 1")
    write(tmp_path, "p.yaml", text)
    _, line, message = only_problem(tmp_path)
    assert line == 11, message
    assert "open('x')" in message


@pytest.mark.parametrize(
    ("text", "line", "complaint"),
    [
        (AUTO_ROUTE.replace("decision: deny", "decision: approve"), 16, "decision 'approve'"),
        (
            AUTO_ROUTE.replace(
                "default: {decision: review, reason: below the confidence threshold}\n", ""
            ),
            1,
            "missing 'default'",
        ),
        (
            AUTO_ROUTE.replace("    reason: large claims are never automated\n", ""),
            15,
            "missing 'reason'",
        ),
        (AUTO_ROUTE.replace("rules:", "rule:"), 10, "unknown key 'rule'"),
        (
            AUTO_ROUTE.replace("kind: action", "kind: action\nkind: promotion"),
            4,
            "duplicate key 'kind'",
        ),
        (AUTO_ROUTE.replace("kind: action", "kind: batch"), 3, "kind 'batch' is not one of"),
        (AUTO_ROUTE.replace("version: 3", "version: 1.5"), 2, "version must be an integer"),
        (
            AUTO_ROUTE.replace("claim.amount: number", "claim.amount: float"),
            8,
            "unknown type 'float'",
        ),
        (
            AUTO_ROUTE.replace("claim.amount: number", "claim.amount: number\n  claim: any"),
            9,
            "overlap",
        ),
        (AUTO_ROUTE + "redact: [ticket.text]\n", 19, "only model_call policies may redact"),
        (
            AUTO_ROUTE.replace("  - when: claim", "  - name: default\n    when: claim"),
            15,
            "reserved",
        ),
        (
            AUTO_ROUTE.replace("  - when: claim", "  - name: confident-and-small\n    when: claim"),
            15,
            "two rules",
        ),
        ("- just a list\n", 1, "must be a mapping"),
    ],
)
def test_invalid_policies_fail_at_load_with_file_and_line(
    tmp_path: Path, text: str, line: int, complaint: str
) -> None:
    write(tmp_path, "p.yaml", text)
    file, got_line, message = only_problem(tmp_path)
    assert file == str(tmp_path / "p.yaml")
    assert (got_line, complaint in message) == (line, True), message


def test_empty_file_and_missing_directory(tmp_path: Path) -> None:
    write(tmp_path, "empty.yaml", "")
    assert only_problem(tmp_path)[2] == "the file is empty"
    assert only_problem(tmp_path / "nope")[2] == "no such directory"


def test_duplicate_policy_names_both_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", AUTO_ROUTE)
    write(tmp_path, "b.yaml", AUTO_ROUTE)
    file, line, message = only_problem(tmp_path)
    assert file == str(tmp_path / "b.yaml") and line == 1
    assert f"auto-route v3 is also defined at {tmp_path / 'a.yaml'}:1" in message


def test_every_invalid_file_is_reported_not_only_the_first(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", AUTO_ROUTE.replace("kind: action", "kind: nope"))
    write(tmp_path, "b.yaml", AUTO_ROUTE.replace("policy: auto-route", "policy: two\nx: 1"))
    write(tmp_path, "c.yaml", AUTO_ROUTE.replace("policy: auto-route", "policy: fine"))
    problems = load_error(tmp_path).problems
    assert [(Path(f).name, line) for f, line, _ in problems] == [("a.yaml", 3), ("b.yaml", 2)]


def test_several_versions_coexist_and_get_picks_the_newest(tmp_path: Path) -> None:
    write(tmp_path, "v3.yaml", AUTO_ROUTE)
    write(tmp_path, "v4.yaml", AUTO_ROUTE.replace("version: 3", "version: 4"))
    policies = PolicySet.load(tmp_path)
    assert policies.get("auto-route").version == 4
    assert policies.get("auto-route", 3).source == str(tmp_path / "v3.yaml")
    assert policies.evaluate("auto-route", CLAIM, version=3).version == 3
    with pytest.raises(PolicyNotFoundError, match=r"has no version 9 \(loaded: 3, 4\)"):
        policies.get("auto-route", 9)
    with pytest.raises(PolicyNotFoundError, match="no policy named 'nope'"):
        policies.evaluate("nope", {})


# -- the three enforcement points ------------------------------------------------------------


@pytest.fixture(scope="module")
def examples() -> PolicySet:
    return PolicySet.load(EXAMPLES)


def access(tenant: str, role: str, model: str, provider: str, data: str) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "actor": {"role": role},
        "model": {"name": model, "provider": provider},
        "data": {"classification": data},
        "ticket": {"text": "my card 4111 1111 1111 1111 was charged twice"},
    }


def test_model_call_decides_access_and_what_to_redact(examples: PolicySet) -> None:
    ok = examples.evaluate(
        "model-access", access("acme", "service", "gpt-triage", "external", "internal")
    )
    assert (ok.result, ok.allowed, ok.rule) == ("allow", True, "approved-llms")
    assert ok.redact == ("ticket.text", "ticket.subject", "customer.email")
    assert ok.kind == "model_call"
    residency = examples.evaluate(
        "model-access", access("bank-eu", "service", "gpt-triage", "external", "internal")
    )
    assert (residency.result, residency.allowed, residency.rule) == (
        "deny",
        False,
        "data-residency",
    )
    auditor = examples.evaluate(
        "model-access", access("acme", "auditor", "support-intent", "local", "public")
    )
    assert auditor.result == "deny" and not auditor.needs_human


def claim(confidence: float, amount: float, **extra: Any) -> dict[str, Any]:
    return {
        "prediction": {"label": "approve", "confidence": confidence},
        "claim": {"amount": amount, "currency": "EUR", "prior_claims": 0},
        **extra,
    }


def test_action_auto_acts_only_when_confident_and_small(examples: PolicySet) -> None:
    auto = examples.evaluate("claims-auto-approve", claim(0.99, 1200))
    assert (auto.result, auto.allowed, auto.needs_human) == ("allow", True, False)
    unsure = examples.evaluate("claims-auto-approve", claim(0.90, 1200))
    assert (unsure.result, unsure.rule, unsure.needs_human) == ("review", "default", True)
    flagged = examples.evaluate("claims-auto-approve", claim(0.99, 12, customer={"flagged": True}))
    assert (flagged.result, flagged.rule) == ("deny", "flagged-customer")
    assert auto.redact == ()


def promotion(candidate: float, champion: float, samples: int) -> dict[str, Any]:
    return {
        "model": {"name": "support-intent"},
        "candidate": {"accuracy": candidate, "calibration_error": 0.02, "samples": samples},
        "champion": {"accuracy": champion, "calibration_error": 0.02},
    }


def test_promotion_gate_promotes_asks_a_person_or_refuses(examples: PolicySet) -> None:
    assert examples.evaluate("promotion-gate", promotion(0.95, 0.90, 5000)).result == "allow"
    needs_person = examples.evaluate("promotion-gate", promotion(0.91, 0.90, 5000))
    assert (needs_person.result, needs_person.allowed, needs_person.needs_human) == (
        "approve",
        False,
        True,
    )
    assert examples.evaluate("promotion-gate", promotion(0.99, 0.90, 100)).rule == "too-few-samples"
    assert examples.evaluate("promotion-gate", promotion(0.80, 0.90, 5000)).result == "deny"


def test_first_matching_rule_decides_and_default_catches_the_rest(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        """\
        policy: order
        version: 1
        kind: action
        input: {x: number}
        rules:
          - {name: small, when: x < 10, decision: allow, reason: small}
          - {name: smaller, when: x < 5, decision: deny, reason: never reached below 10}
          - {when: x > 100, decision: deny, reason: big}
        default: {decision: review, reason: middle}
        """,
    )
    policies = PolicySet.load(tmp_path)
    assert [policies.evaluate("order", {"x": x}).rule for x in (1, 7, 500, 50)] == [
        "small",
        "small",
        "#3",
        "default",
    ]
    assert policies.evaluate("order", {"x": 50}).reason == "middle"


# -- decisions -------------------------------------------------------------------------------


def test_decision_record_has_ids_and_digests_never_the_input(examples: PolicySet) -> None:
    source = claim(0.99, 1200, note="Jane Roe, IBAN DE44500105175407324931")
    decision = examples.evaluate("claims-auto-approve", source)
    assert len(decision.decision_id) == 32 and int(decision.decision_id, 16) >= 0
    file = EXAMPLES / "claims-auto-approve.yaml"
    assert decision.policy_digest == hashlib.sha256(file.read_bytes()).hexdigest()
    canonical = json.dumps(source, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert decision.input_digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert decision.input_digest == input_digest(dict(reversed(list(source.items()))))
    assert (decision.policy, decision.version) == ("claims-auto-approve", 3)
    assert abs(decision.evaluated_at - datetime.now(UTC).timestamp()) < 60
    record = decision.to_record()
    text = json.dumps(record)
    assert "Jane" not in text and "DE44" not in text and "1200" not in text
    assert set(record) == {
        "decision_id",
        "policy",
        "version",
        "policy_digest",
        "kind",
        "input_digest",
        "result",
        "allowed",
        "reason",
        "rule",
        "redact",
        "evaluated_at",
    }
    assert Decision.from_record(json.loads(text)) == decision
    other = examples.evaluate("claims-auto-approve", source)
    assert other.decision_id != decision.decision_id
    assert other.input_digest == decision.input_digest


def test_dataclass_inputs_are_accepted_and_digested_as_their_fields(
    examples: PolicySet,
) -> None:
    @dataclass
    class Prediction:
        label: str
        confidence: float

    data = claim(0.99, 10)
    as_object = {**data, "prediction": Prediction("approve", 0.99)}
    decision = examples.evaluate("claims-auto-approve", as_object)
    assert decision.allowed
    assert decision.input_digest == input_digest(data)


# -- input validation ------------------------------------------------------------------------


@pytest.fixture
def auto_route(tmp_path: Path) -> PolicySet:
    write(tmp_path, "auto-route.yaml", AUTO_ROUTE)
    return PolicySet.load(tmp_path)


SECRET = "SECRET-4111-1111"


@pytest.mark.parametrize(
    ("data", "field", "complaint"),
    [
        (
            {"prediction": {"label": "x"}, "claim": {"amount": 1}},
            "prediction.confidence",
            "missing required field prediction.confidence",
        ),
        (
            {"prediction": {"label": "x", "confidence": SECRET}, "claim": {"amount": 1}},
            "prediction.confidence",
            "prediction.confidence must be a number, got str",
        ),
        (
            {"prediction": {"label": "x", "confidence": True}, "claim": {"amount": 1}},
            "prediction.confidence",
            "must be a number, got bool",
        ),
        (
            {"prediction": {"label": "x", "confidence": float("nan")}, "claim": {"amount": 1}},
            "input.prediction.confidence",
            "not a finite number",
        ),
        (
            {"prediction": {"label": 7, "confidence": 0.5}, "claim": {"amount": 1}},
            "prediction.label",
            "must be a string, got int",
        ),
        (
            {"prediction": {"label": None, "confidence": 0.5}, "claim": {"amount": 1}},
            "prediction.label",
            "is null; declare it optional",
        ),
        (
            {"prediction": SECRET, "claim": {"amount": 1}},
            "prediction.label",
            "prediction must be an object",
        ),
        ({**CLAIM, "when": datetime.now(UTC)}, "input.when", "not JSON data (datetime)"),
        ({**CLAIM, "actor": {"role": 3}}, "actor.role", "actor.role must be a string, got int"),
    ],
)
def test_bad_input_names_the_field_never_the_value(
    auto_route: PolicySet, data: dict[str, Any], field: str, complaint: str
) -> None:
    with pytest.raises(PolicyInputError) as caught:
        auto_route.evaluate("auto-route", data)
    assert caught.value.field == field
    assert complaint in caught.value.message
    assert SECRET not in caught.value.message
    assert caught.value.code == "policy_input_invalid"


def test_optional_fields_may_be_missing_and_extra_fields_are_kept(auto_route: PolicySet) -> None:
    decision = auto_route.evaluate("auto-route", {**CLAIM, "ticket": {"id": 7}})
    assert decision.rule == "confident-and-small"
    assert decision.input_digest == input_digest({**CLAIM, "ticket": {"id": 7}})


def test_huge_integers_are_numbers(auto_route: PolicySet) -> None:
    data = {"prediction": {"label": "x", "confidence": 10**400}, "claim": {"amount": 1.5}}
    assert auto_route.evaluate("auto-route", data).allowed


def test_integer_fields_refuse_floats(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", with_rule("n > 1", "  n: integer\n"))
    with pytest.raises(PolicyInputError, match="n must be an integer, got float"):
        PolicySet.load(tmp_path).evaluate("p", {"n": 2.0})


def test_type_errors_at_evaluation_name_the_field(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", with_rule("a > 3", "  a: any\n  b?: number\n"))
    policies = PolicySet.load(tmp_path)
    with pytest.raises(PolicyEvaluationError) as caught:
        policies.evaluate("p", {"a": SECRET})
    message = caught.value.message
    assert "'>' needs two numbers or two strings, but a is a str and 3 is an int" in message
    assert "rule r" in message and f"{tmp_path / 'p.yaml'}:" in message
    assert SECRET not in message
    assert policies.evaluate("p", {"a": 4}).allowed


def test_a_missing_optional_field_must_be_guarded(tmp_path: Path) -> None:
    write(tmp_path, "bare.yaml", with_rule("b > 3", "  b?: number\n"))
    write(
        tmp_path,
        "guarded.yaml",
        with_rule("b != None and b > 3", "  b?: number\n").replace("policy: p", "policy: g"),
    )
    policies = PolicySet.load(tmp_path)
    with pytest.raises(PolicyEvaluationError, match=r"b is missing \(None\)"):
        policies.evaluate("p", {})
    assert policies.evaluate("g", {}).result == "review"
    assert policies.evaluate("g", {"b": 4}).result == "allow"


# -- explanations ----------------------------------------------------------------------------


def test_explain_traces_every_rule_and_names_the_decider(auto_route: PolicySet) -> None:
    data = {"prediction": {"label": "x", "confidence": 0.5}, "claim": {"amount": 60000}}
    explanation = auto_route.explain("auto-route", data)
    assert explanation.decision.result == "deny" and explanation.decision.rule == "#2"
    first, second = explanation.rules
    assert (first.rule, first.matched, first.line) == ("confident-and-small", False, 11)
    # `and` short-circuits: the amount was never read for the first rule.
    assert [(s.text, s.value) for s in first.steps] == [
        ("prediction.confidence", 0.5),
        ("prediction.confidence >= 0.97", False),
        ("prediction.confidence >= 0.97 and claim.amount < 5000", False),
    ]
    assert (second.rule, second.matched) == ("#2", True)
    assert explanation.values["claim.amount"] == 60000
    assert explanation.values["actor.role"] is None
    text = explanation.render()
    assert "#2 (line 15) -> deny: MATCHED, decides" in text
    assert "prediction.confidence >= 0.97 -> False" in text
    assert "claim.amount = 60000" in text
    assert text.endswith("decision: deny (rule #2): large claims are never automated")
    assert str(explanation) == text


def test_explain_marks_shadowed_rules_and_the_default(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        """\
        policy: p
        version: 1
        kind: promotion
        input: {x: number, y: any}
        rules:
          - {name: first, when: x > 1, decision: allow, reason: a}
          - {name: also, when: x > 0, decision: approve, reason: b}
          - {name: broken, when: y > 0, decision: deny, reason: c}
        default: {decision: approve, reason: none matched}
        """,
    )
    policies = PolicySet.load(tmp_path)
    text = policies.explain("p", {"x": 2, "y": "text"}).render()
    assert "also (line 7) -> approve: would match, but an earlier rule decided" in text
    assert "broken (line 8) -> deny: error: " in text and "y is a str" in text
    # The same error on the deciding path is raised, as evaluate() raises it.
    with pytest.raises(PolicyEvaluationError):
        policies.explain("p", {"x": -1, "y": "text"})
    default = policies.explain("p", {"x": -1, "y": -1}).render()
    assert "default -> approve: no rule matched" in default


# -- Python policies -------------------------------------------------------------------------


def test_python_policy_with_a_dict_input() -> None:
    @python_policy(
        "vip-refund",
        version=2,
        kind="action",
        input={"refund.amount": "number", "customer.tier?": "string"},
    )
    def vip_refund(input: dict[str, Any]) -> Verdict | tuple[str, str]:
        """Refunds for VIPs."""
        if input["customer.tier"] == "vip":
            return Verdict("allow", "vip", rule="vip")
        return ("review", "not a vip")

    policies = PolicySet([vip_refund])
    vip = policies.evaluate("vip-refund", {"refund": {"amount": 5}, "customer": {"tier": "vip"}})
    assert (vip.result, vip.rule, vip.version, vip.kind) == ("allow", "vip", 2, "action")
    assert vip.policy_digest == hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    other = policies.evaluate("vip-refund", {"refund": {"amount": 5}})
    assert (other.result, other.rule, other.reason) == ("review", "vip_refund", "not a vip")
    assert vip_refund.description == "Refunds for VIPs."
    assert vip_refund.source == __file__
    with pytest.raises(PolicyInputError, match=r"missing required field refund\.amount"):
        policies.evaluate("vip-refund", {})
    explanation = policies.explain("vip-refund", {"refund": {"amount": 5}})
    assert "python function" in explanation.render() and explanation.rules == ()


# Module-level: annotations are strings here, resolved in the module's namespace.
@dataclass(frozen=True)
class Model:
    name: str
    external: bool


@dataclass(frozen=True)
class Access:
    model: Model
    tenant: str
    tags: list[str]
    budget: float | None = None


def test_python_policy_with_a_dataclass_input_and_redaction() -> None:
    seen: list[Access] = []

    @python_policy("llm-access", version=1, kind="model_call", input=Access, redact=["ticket.text"])
    def llm_access(input: Access) -> Verdict:
        seen.append(input)
        extra = ("customer.name",) if input.model.external else ()
        return Verdict("allow", "ok", redact=extra)

    assert [(f.path, f.type, f.optional) for f in llm_access.inputs] == [
        ("model.name", "string", False),
        ("model.external", "boolean", False),
        ("tenant", "string", False),
        ("tags", "list", False),
        ("budget", "number", True),
    ]
    data = {"model": {"name": "gpt", "external": True}, "tenant": "acme", "tags": []}
    decision = PolicySet([llm_access]).evaluate("llm-access", data)
    assert decision.redact == ("ticket.text", "customer.name")
    assert seen == [Access(Model("gpt", True), "acme", [], None)]


def test_python_policy_errors_are_policy_errors_without_input_values() -> None:
    @python_policy("odd", version=1, kind="action", input={"x": "any"})
    def odd(input: dict[str, Any]) -> Any:
        if input["x"] == "boom":
            raise ValueError(f"bad value {input['x']}")
        return {
            "undeclared": lambda: input["y"],
            "approve": lambda: ("approve", "no"),
            "allow": lambda: "allow",
            "redact": lambda: Verdict("allow", "r", redact=("a",)),
        }[input["x"]]()

    policies = PolicySet([odd])
    with pytest.raises(PolicyEvaluationError) as caught:
        policies.evaluate("odd", {"x": "boom"})
    assert "raised ValueError" in caught.value.message and "boom" not in caught.value.message
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(PolicyEvaluationError, match="reads 'y', which is not a declared field"):
        policies.evaluate("odd", {"x": "undeclared"})
    with pytest.raises(
        PolicyEvaluationError,
        match="returned 'approve'; action policies decide allow, review, deny",
    ):
        policies.evaluate("odd", {"x": "approve"})
    with pytest.raises(PolicyEvaluationError, match="must return a Verdict"):
        policies.evaluate("odd", {"x": "allow"})
    with pytest.raises(PolicyEvaluationError, match="only model_call policies may ask"):
        policies.evaluate("odd", {"x": "redact"})


def _noop(input: Any) -> Verdict:
    return Verdict("deny", "no")


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"kind": "deploy", "input": {}}, "kind 'deploy' is not one of"),
        ({"kind": "action", "input": {"x": "float"}}, "unknown type 'float'"),
        ({"kind": "action", "input": {"__x": "any"}}, "names starting with '_'"),
        (
            {"kind": "action", "input": ["x"]},
            "input must be a dict of field types or a dataclass",
        ),
        (
            {"kind": "action", "input": {}, "redact": ["x"]},
            "only model_call policies may redact",
        ),
        ({"kind": "action", "input": {}, "version": 0}, "version must be an integer >= 1"),
    ],
)
def test_python_policy_misuse_is_refused_at_decoration(
    kwargs: dict[str, Any], complaint: str
) -> None:
    options = {"version": 1, **kwargs}
    with pytest.raises(DefinitionError, match=complaint):
        python_policy("p", **options)(_noop)


def test_python_policy_dataclass_fields_must_map_to_declared_types() -> None:
    @dataclass
    class Bad:
        when: datetime

    with pytest.raises(DefinitionError, match="when: cannot declare a field of type"):
        python_policy("p", version=1, kind="action", input=Bad)

    def two(a: Any, b: Any) -> Verdict:
        return Verdict("deny", "no")

    with pytest.raises(DefinitionError, match="must take one argument"):
        python_policy("p", version=1, kind="action", input={})(two)  # type: ignore[arg-type]


def test_python_policy_files_are_loaded_and_their_errors_located(tmp_path: Path) -> None:
    write(
        tmp_path,
        "limits.py",
        """\
        from aevos.policy import Verdict, python_policy

        @python_policy("limit", version=1, kind="action", input={"x": "number"})
        def limit(input):
            return Verdict("allow" if input["x"] < 3 else "review", "limit")
        """,
    )
    policies = PolicySet.load(tmp_path)
    assert policies.evaluate("limit", {"x": 1}).allowed
    assert policies.get("limit").location == f"{tmp_path / 'limits.py'}:3"
    write(tmp_path, "broken.py", "x = 1\ndef f(:\n")
    write(
        tmp_path,
        "raises.py",
        """\
        from aevos.policy import python_policy

        @python_policy("r", version=1, kind="nope", input={})
        def r(input):
            return None
        """,
    )
    problems = load_error(tmp_path).problems
    assert [(Path(f).name, line) for f, line, _ in problems] == [("broken.py", 2), ("raises.py", 3)]
    assert "invalid Python" in problems[0][2]
    assert "kind 'nope' is not one of" in problems[1][2]


def test_python_and_yaml_policies_of_one_name_and_version_collide(tmp_path: Path) -> None:
    @python_policy("auto-route", version=3, kind="action", input={})
    def clash(input: Any) -> Verdict:
        return Verdict("deny", "no")

    write(tmp_path, "auto-route.yaml", AUTO_ROUTE)
    policies = PolicySet.load(tmp_path)
    with pytest.raises(
        PolicyLoadError, match=r"auto-route v3 is also defined at .*auto-route\.yaml:1"
    ):
        policies.add(clash)
