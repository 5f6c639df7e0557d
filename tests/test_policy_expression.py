"""The condition language: what it accepts, what it refuses at load time, and property
tests that its interpreter agrees with Python on well-typed expressions and never fails
with anything but its own errors on junk.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aevos.errors import PolicyEvaluationError
from aevos.policy.expression import ExpressionError, TraceStep, compile_condition

FIELDS = {
    "n0": "number",
    "n1": "number",
    "n2": "integer",
    "b0": "boolean",
    "b1": "boolean",
    "s0": "string",
    "l0": "list",
    "a0": "any",
    "a1": "any",
    "o.p.q": "number",
}


def evaluate(text: str, **values: Any) -> bool:
    defaults: dict[str, Any] = dict.fromkeys(FIELDS)
    return compile_condition(text, FIELDS).evaluate({**defaults, **values})


def refused(text: str) -> str:
    with pytest.raises(ExpressionError) as caught:
        compile_condition(text, FIELDS)
    return caught.value.message


# -- semantics -------------------------------------------------------------------------------


def test_comparisons_arithmetic_and_membership() -> None:
    assert evaluate("n0 * 2 + 1 > n1 / 4 - 3", n0=2, n1=8)
    assert evaluate("0 < n0 <= 1", n0=1) and not evaluate("0 < n0 <= 1", n0=1.5)
    assert evaluate("s0 in ['a', 'b'] and s0 not in ('c',)", s0="a")
    assert evaluate("'oic' in s0", s0="invoice")
    assert evaluate("n2 in l0", n2=3, l0=[1, 2, 3])
    assert evaluate("o.p.q == -2.5", **{"o.p.q": -2.5})
    assert evaluate("s0 < 'b'", s0="a")
    assert evaluate("-n0 == -3", n0=3) and evaluate("+n0 == 3", n0=3)
    assert evaluate("not (b0 or b1)", b0=False, b1=False)


def test_booleans_are_not_numbers() -> None:
    # Python says True == 1 and 1 in [True]; a policy must not.
    assert not evaluate("a0 == 1", a0=True)
    assert not evaluate("a0 in [1, 2]", a0=True)
    assert evaluate("a0 == [1, True]", a0=[1, True]) and not evaluate("a0 == [1, 1]", a0=[1, True])
    with pytest.raises(PolicyEvaluationError, match="'>' needs two numbers or two strings"):
        evaluate("a0 > 0", a0=True)
    with pytest.raises(PolicyEvaluationError, match="'and' needs True or False, but a0 is an int"):
        evaluate("a0 and b0", a0=1, b0=True)
    with pytest.raises(PolicyEvaluationError, match="a condition must be True or False"):
        evaluate("a0", a0="yes")


def test_and_or_short_circuit_so_guards_work() -> None:
    assert not evaluate("a0 != None and a0 > 3", a0=None)
    assert evaluate("a0 == None or a0 > 3", a0=None)
    with pytest.raises(PolicyEvaluationError, match=r"a0 is missing \(None\) and 3 is an int"):
        evaluate("a0 > 3", a0=None)


def test_runtime_errors_name_the_expression_not_the_value() -> None:
    with pytest.raises(PolicyEvaluationError) as caught:
        evaluate("n0 / (n1 - n1) > 1", n0=1, n1=7)
    assert caught.value.message == (
        "cannot evaluate 'n0 / (n1 - n1)': division by zero (n1 - n1 is 0)"
    )
    with pytest.raises(PolicyEvaluationError) as caught:
        evaluate("a0 + 1 > 1", a0="hunter2")
    assert "a0 is a str" in caught.value.message and "hunter2" not in caught.value.message
    with pytest.raises(PolicyEvaluationError, match="too large"):
        evaluate("a0 * 1.5 > 1", a0=10**400)
    with pytest.raises(PolicyEvaluationError, match="'in' needs a list"):
        evaluate("a0 in a1", a0=1, a1=5)


def test_multi_line_conditions_with_comments() -> None:
    text = "b0  # the flag\n  and n0 > 1  # and the number\n"
    condition = compile_condition(text, FIELDS)
    assert condition.text == "b0 and n0 > 1"
    trace: list[TraceStep] = []
    assert condition.evaluate({"b0": True, "n0": 2}, trace)
    assert [step.text for step in trace] == ["b0", "n0", "n0 > 1", "b0 and n0 > 1"]
    assert condition.fields == ("b0", "n0")
    # A comment cannot swallow the rest of a one-line condition.
    assert not compile_condition("b0 # x\n and b1", FIELDS).evaluate({"b0": True, "b1": False})


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("__import__('os')", "function calls are not allowed: __import__('os')"),
        ("open('x').read() == ''", "function calls are not allowed: open('x').read()"),
        ("a0.__class__ == a1", "names starting with '_' are not allowed: a0.__class__"),
        ("o.p.q.__class__ == 1", "names starting with '_' are not allowed"),
        ("n0.real == 1", "unknown field 'n0.real'"),
        ("o.p == 1", "unknown field 'o.p'"),
        ("nope > 1", "unknown field 'nope'; declare it under input (declared: n0, n1"),
        ("true", "write True, False or None"),
        ("l0[0] == 1", "subscripts are not allowed: l0[0]"),
        ("(lambda: 1)() == 1", "function calls are not allowed"),
        ("[x for x in l0] == l0", "comprehensions are not allowed"),
        ("{x for x in l0} == l0", "comprehensions are not allowed"),
        ("f'{s0}' == s0", "f-strings are not allowed"),
        ("s0 % 2 == 0", "only + - * / are allowed in arithmetic"),
        ("n0 // 2 == 0", "only + - * / are allowed in arithmetic"),
        ("~n2 == 0", "only the unary operators not, - and + are allowed: ~n2"),
        ("a0 is None", "'is' is not allowed; use == or !="),
        ("(x := 1) == 1", "assignments are not allowed"),
        ("b'x' == a0", "only numbers, strings, True, False and None are allowed: b'x'"),
        ("[[1]] == l0", "lists may not be nested: [1]"),
        ("[n0] == l0", "lists may only hold numbers, strings, True, False and None"),
        ("n0 < 's'", "'<' compares a number with a string"),
        ("s0 == 1", "compares a string with a number, which is never equal"),
        ("b0 == 1", "compares a boolean with a number"),
        ("s0 in [1, 2]", "s0 is a string but the list holds none: always False"),
        ("n0 in s0", "'in' on a string needs a string, but n0 is a number"),
        ("n0 in n1", "'in' needs a list or a string, but n1 is a number"),
        ("b0 < b1", "'<' needs numbers or strings, but b0 is a boolean"),
        ("s0 + 'x' == s0", "'+' needs numbers, but s0 is a string"),
        ("-s0 == 1", "'-' needs a number"),
        ("not n0", "'not' needs True or False, but n0 is a number"),
        ("n0 or b0", "'or' needs True or False, but n0 is a number"),
        ("n0 + 1", "must be True or False, but it is a number"),
        ("", "the condition is empty"),
        ("n0 >", "not a valid condition"),
        ("n0 > 1; import os", "not a valid condition"),
        ("x" * 2001, "longer than 2000 characters"),
        ("not " * 60 + "b0", "nests deeper than 50 levels"),
        ("(" * 250 + "b0" + ")" * 250, "not a valid condition"),
    ],
)
def test_refused_at_load(text: str, complaint: str) -> None:
    assert complaint in refused(text)


def test_syntax_errors_carry_the_line_within_the_condition() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_condition("b0 and\nn0 > 1 and\nopen('x')", FIELDS)
    assert caught.value.line == 3


# -- properties ------------------------------------------------------------------------------

NUMBERS = ["n0", "n1", "n2"]
BOOLEANS = ["b0", "b1"]

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
number_leaf = st.one_of(
    st.sampled_from(NUMBERS),
    st.integers(-1000, 1000).map(str),
    finite.map(repr),
)
number_expr = st.recursive(
    number_leaf,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from("+-*/"), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"(-{e})"),
    ),
    max_leaves=6,
)
comparison = st.one_of(
    st.tuples(number_expr, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), number_expr).map(
        " ".join
    ),
    st.tuples(number_expr, number_expr, number_expr).map(lambda t: f"{t[0]} < {t[1]} <= {t[2]}"),
    st.tuples(
        number_expr, st.sampled_from(["in", "not in"]), st.lists(st.integers(-3, 3), max_size=4)
    ).map(lambda t: f"{t[0]} {t[1]} {t[2]!r}"),
    st.tuples(
        st.sampled_from(BOOLEANS),
        st.sampled_from(["==", "!="]),
        st.sampled_from([*BOOLEANS, "True", "False"]),
    ).map(" ".join),
)
bool_expr = st.recursive(
    st.one_of(st.sampled_from([*BOOLEANS, "True", "False"]), comparison),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + " and ".join(xs) + ")"),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: "(" + " or ".join(xs) + ")"),
        inner.map(lambda e: f"(not {e})"),
    ),
    max_leaves=8,
)
number_value = st.one_of(st.integers(-(10**6), 10**6), finite, st.sampled_from([0, 0.0, -0.0]))


def _python(text: str, values: dict[str, Any]) -> tuple[str, Any]:
    try:
        # The reference semantics: Python itself, on trusted test-generated text.
        return "value", eval(text, {"__builtins__": {}}, values)
    except (ZeroDivisionError, OverflowError):
        return "error", None


def _ours(text: str, values: dict[str, Any]) -> tuple[str, Any]:
    condition = compile_condition(
        text, {**dict.fromkeys(NUMBERS, "number"), **dict.fromkeys(BOOLEANS, "boolean")}
    )
    try:
        return "value", condition.evaluate(values)
    except PolicyEvaluationError:
        return "error", None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=bool_expr,
    numbers=st.tuples(number_value, number_value, st.integers(-50, 50)),
    booleans=st.tuples(st.booleans(), st.booleans()),
)
def test_interpreter_agrees_with_python(
    text: str, numbers: tuple[Any, Any, int], booleans: tuple[bool, bool]
) -> None:
    values = {
        **dict(zip(NUMBERS, numbers, strict=True)),
        **dict(zip(BOOLEANS, booleans, strict=True)),
    }
    expected, ours = _python(text, dict(values)), _ours(text, values)
    assert expected[0] == ours[0], (text, values, expected, ours)
    assert expected[1] is ours[1] or (isinstance(expected[1], float) and math.isnan(expected[1])), (
        text,
        values,
        expected,
        ours,
    )


TOKENS = [
    *FIELDS,
    "nope",
    "o",
    "o.p",
    "__class__",
    "__import__",
    "open",
    "os",
    "x",
    ".",
    ",",
    ":",
    ";",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "+",
    "-",
    "*",
    "/",
    "**",
    "%",
    "//",
    "~",
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "!=",
    "=",
    ":=",
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "for",
    "lambda",
    "yield",
    "await",
    "import",
    "True",
    "False",
    "None",
    "0",
    "1",
    "-1",
    "2.5",
    "1e999",
    "'s'",
    '"t"',
    "f'{n0}'",
    "b'x'",
    "#",
    "\n",
    "...",
    "@",
    "\\",
]
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), finite, st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
# Syntactically valid but loosely typed: `any` fields get past the load-time checks, so
# these reach the interpreter with values of every kind.
OPERATORS = ["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "in", "not in", "and", "or"]
loose_expr = st.recursive(
    st.sampled_from(
        ["a0", "a1"] * 6 + [*FIELDS, "True", "None", "1", "-2.5", "'s'", "[1, 's', None]", "[]"]
    ),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(OPERATORS), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"(not {e})"),
        inner.map(lambda e: f"(-{e})"),
    ),
    max_leaves=6,
)
values_strategy = st.fixed_dictionaries(
    {
        "n0": number_value,
        "n1": number_value,
        "n2": st.integers(),
        "b0": st.booleans(),
        "b1": st.booleans(),
        "s0": st.text(max_size=5),
        "l0": st.lists(json_value, max_size=3),
        "a0": json_value,
        "a1": json_value,
        "o.p.q": number_value,
    }
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(
        st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join),
        st.text(),
        loose_expr,
        loose_expr.map(lambda e: f"{e} != a1"),
    ),
    values=values_strategy,
)
def test_junk_is_refused_at_load_or_fails_only_with_our_errors(
    text: str, values: dict[str, Any]
) -> None:
    try:
        condition = compile_condition(text, FIELDS)
    except ExpressionError:
        return
    try:
        result = condition.evaluate(values, [])
    except PolicyEvaluationError:
        return
    assert isinstance(result, bool)
