"""The ``rules`` flavor: a decision table over the real insurance-claims data.

Each claim is routed by its total amount and incident severity; the counts of every label
over the 1,000 claims must equal a recount written in plain Python, for the same table
given as YAML and as JSON.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import IN_CI

from aevos.errors import DefinitionError, InvalidArtifactError, ModelInputError
from aevos.models.adapters.rules import RulesAdapter
from aevos.models.flavors import load_adapter
from aevos.models.types import Prediction
from aevos.public_data import data_file

CLAIMS = data_file("insurance_claims", "insurance_claims.csv")

TABLE_YAML = b"""
input:
  amount: number
  severity:
    type: string
    enum: [Trivial Damage, Minor Damage, Major Damage, Total Loss]
table:
  - id: fast-track
    when: {amount: {lt: 10000}, severity: {in: [Trivial Damage, Minor Damage]}}
    label: auto
    confidence: 0.9
  - id: big-and-bad
    when: {amount: {ge: 70000}, severity: [Major Damage, Total Loss]}
    label: investigate
    confidence: 0.8
    output: {queue: siu}
  - when: {amount: {between: [10000, 50000]}, severity: {ne: Total Loss}}
    label: review
    confidence: 0.7
default: {label: adjuster, confidence: 0.5}
"""


def recount(amount: float, severity: str) -> str:
    if amount < 10000 and severity in ("Trivial Damage", "Minor Damage"):
        return "auto"
    if amount >= 70000 and severity in ("Major Damage", "Total Loss"):
        return "investigate"
    if 10000 <= amount <= 50000 and severity != "Total Loss":
        return "review"
    return "adjuster"


@pytest.fixture(scope="module")
def claims() -> list[dict[str, Any]]:
    if not CLAIMS.exists():
        message = f"insurance claims not found at {CLAIMS}"
        if IN_CI:
            pytest.fail(message + " (CI must run the real-data tests)")
        pytest.skip(message)
    with CLAIMS.open(newline="", encoding="utf-8") as f:
        return [
            {"amount": float(r["total_claim_amount"]), "severity": r["incident_severity"]}
            for r in csv.DictReader(f)
        ]


def test_label_counts_on_real_claims_match_a_plain_recount(claims: list[dict[str, Any]]) -> None:
    import yaml

    as_json = json.dumps(yaml.safe_load(TABLE_YAML)).encode()
    expected = Counter(recount(c["amount"], c["severity"]) for c in claims)
    for artifact in (TABLE_YAML, as_json):
        adapter = load_adapter("rules", artifact, {})
        got = Counter(p.label for p in adapter.batch_predict(claims))  # type: ignore[attr-defined]
        assert got == expected
    print(f"rules over 1,000 claims: {dict(sorted(expected.items()))}")
    assert len(expected) == 4 and sum(expected.values()) == 1000  # every route is exercised


def test_prediction_carries_the_rule_and_its_output(claims: list[dict[str, Any]]) -> None:
    adapter = load_adapter("rules", TABLE_YAML, {})
    assert adapter.predict({"amount": 500, "severity": "Minor Damage"}) == Prediction(
        label="auto", confidence=0.9, output={"rule": "fast-track"}
    )
    assert adapter.predict({"amount": 90000, "severity": "Total Loss"}).output == {
        "rule": "big-and-bad",
        "queue": "siu",
    }
    assert adapter.predict({"amount": 20000, "severity": "Minor Damage"}).output == {
        "rule": "table[2]"
    }
    default = adapter.predict({"amount": 60000, "severity": "Minor Damage"})
    assert (default.label, default.confidence, default.output) == (
        "adjuster",
        0.5,
        {"rule": "default"},
    )


def test_first_match_wins_and_shorthands() -> None:
    adapter = load_adapter(
        "rules",
        json.dumps(
            {
                "input": {"n": "integer", "flag": "boolean", "tier": "string"},
                "table": [
                    {"when": {"flag": True}, "label": "flagged"},
                    {"when": {"n": {"gt": 5, "le": 10}}, "label": "mid"},
                    {"when": {"tier": ["gold", "platinum"]}, "label": "vip"},
                    {"when": {"n": {"gt": 0}}, "label": "positive"},
                    {"when": {}, "label": "rest"},
                ],
            }
        ).encode(),
        {},
    )

    def label(n: int, flag: bool = False, tier: str = "basic") -> Any:
        return adapter.predict({"n": n, "flag": flag, "tier": tier}).label

    assert label(7, flag=True) == "flagged"  # matches three rows; the first wins
    assert label(7, tier="gold") == "mid"
    assert (label(10), label(11)) == ("mid", "positive")
    assert label(11, tier="platinum") == "vip"
    assert label(-1) == "rest"


@pytest.mark.parametrize(
    ("condition", "true_for", "false_for"),
    [
        ({"lt": 10}, [9.99, -5], [10, 11]),
        ({"le": 10}, [10, 9], [10.01]),
        ({"gt": 10}, [10.5], [10, 0]),
        ({"ge": 10}, [10, 11], [9.999]),
        ({"eq": 10}, [10, 10.0], [10.1]),
        ({"ne": 10}, [9, 11], [10]),
        ({"in": [1, 2, 3]}, [1, 3], [4]),
        ({"not_in": [1, 2, 3]}, [0, 4], [2]),
        ({"between": [1, 3]}, [1, 2.5, 3], [0.99, 3.01]),
    ],
)
def test_each_operator(
    condition: dict[str, Any], true_for: list[float], false_for: list[float]
) -> None:
    adapter = RulesAdapter(
        {"input": {"x": "number"}, "table": [{"when": {"x": condition}, "label": True}]}
    )
    assert [adapter.predict({"x": v}).label for v in true_for] == [True] * len(true_for)
    assert [adapter.predict({"x": v}).label for v in false_for] == [None] * len(false_for)


@given(
    amount=st.floats(0, 200_000),
    severity=st.sampled_from(["Trivial Damage", "Minor Damage", "Major Damage", "Total Loss"]),
)
def test_agrees_with_the_recount_everywhere(amount: float, severity: str) -> None:
    assert _ADAPTER.predict({"amount": amount, "severity": severity}).label == recount(
        amount, severity
    )


_ADAPTER = load_adapter("rules", TABLE_YAML, {})


def test_optional_fields_that_are_absent_match_no_condition() -> None:
    adapter = RulesAdapter(
        {
            "input": {"score": "number", "country": {"type": "string", "optional": True}},
            "table": [
                {"when": {"country": {"ne": "FR"}}, "label": "foreign"},
                {"when": {"score": {"ge": 0.5}}, "label": "high"},
            ],
        }
    )
    assert adapter.predict({"score": 0.9, "country": "DE"}).label == "foreign"
    assert adapter.predict({"score": 0.9}).label == "high"
    assert adapter.predict({"score": 0.1}) == Prediction(label=None, output={"rule": None})


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            {"input": {"a": "number"}, "table": [{"when": {"a": {"lte": 1}}, "label": 1}]},
            r"table\[0\]\.when\.a: unknown operator 'lte'",
        ),
        (
            {"input": {"a": "number"}, "table": [{"when": {"b": {"lt": 1}}, "label": 1}]},
            r"table\[0\]\.when\.b: unknown field 'b'",
        ),
        (
            {"input": {"a": "number"}, "table": [{"when": {"a": {"lt": "1"}}, "label": 1}]},
            r"operand of type str for a number field",
        ),
        (
            {"input": {"a": "string"}, "table": [{"when": {"a": {"in": "abc"}}, "label": 1}]},
            r"\.in takes a list",
        ),
        (
            {"input": {"a": "number"}, "table": [{"when": {"a": {"between": [3, 1]}}, "label": 1}]},
            r"low is above high",
        ),
        (
            {"input": {"a": "number"}, "table": [{"when": {"a": {"between": [1]}}, "label": 1}]},
            r"between takes \[low, high\]",
        ),
        (
            {"input": {"a": "boolean"}, "table": [{"when": {"a": {"lt": True}}, "label": 1}]},
            r"'lt' does not apply to a boolean field",
        ),
        (
            {"input": {"a": "number"}, "table": [{"when": {"a": 1}}]},
            r"table\[0\]: a row needs a 'label'",
        ),
        (
            {"input": {"a": "number"}, "table": [{"label": 1, "confidence": 1.5}]},
            r"confidence must be a number in \[0, 1\]",
        ),
        ({"input": {"a": "number"}, "table": [{"label": 1, "whne": {}}]}, r"unknown key\(s\) whne"),
        ({"input": {"a": "date"}, "table": []}, r"unknown type 'date'"),
        ({"input": {"a": "array"}, "table": []}, r"a rules field is a number"),
        ({"table": []}, r"'input' must map"),
        ({"input": {"a": "number"}, "table": {}}, r"'table' must be a list"),
        ({"input": {"a": "number"}, "table": [], "defualt": {}}, r"unknown key\(s\) defualt"),
        (
            {"input": {"a": "number"}, "table": [], "default": {"confidence": 1}},
            r"default: a row needs a 'label'",
        ),
    ],
)
def test_definition_errors_name_their_place(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_adapter("rules", json.dumps(definition).encode(), {})


def test_unreadable_artifacts() -> None:
    with pytest.raises(InvalidArtifactError, match="not valid JSON or YAML"):
        load_adapter("rules", b'{"input": ', {})
    with pytest.raises(InvalidArtifactError, match=r"not valid JSON or YAML \(line 1\)"):
        load_adapter("rules", b"input: [unclosed", {})
    with pytest.raises(InvalidArtifactError, match="not UTF-8"):
        load_adapter("rules", b"\xff\xfe", {})
    with pytest.raises(DefinitionError, match="must be a mapping"):
        load_adapter("rules", b"- a list", {})


def test_input_errors_name_the_field_never_the_value() -> None:
    with pytest.raises(ModelInputError, match="'amount' is missing") as info:
        _ADAPTER.predict({"severity": "Minor Damage"})
    assert info.value.field == "amount"
    with pytest.raises(ModelInputError, match="'amount' must be a number, got str") as info:
        _ADAPTER.predict({"amount": "123456789", "severity": "Minor Damage"})
    assert "123456789" not in info.value.message
    with pytest.raises(ModelInputError, match="'severity' is not one of the 4 allowed values"):
        _ADAPTER.predict({"amount": 1, "severity": "Scratched"})
    with pytest.raises(ModelInputError, match="input must be an object, got str"):
        _ADAPTER.predict("amount=5")
