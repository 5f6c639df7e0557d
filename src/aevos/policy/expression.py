"""The condition language of policy rules: a small, safe subset of Python expressions.

A rule's ``when`` is parsed with :mod:`ast` and accepted only if it is built from

- ``and``, ``or``, ``not`` over conditions (True/False; numbers are not truthy here),
- comparisons ``== != < <= > >= in not in`` (chains like ``0 < x <= 1`` included),
- ``+ - * /`` on numbers,
- literals: numbers, strings, True, False, None, and lists or tuples of those,
- dotted names declared in the policy's ``input``.

Everything else (calls, subscripts, attribute access outside declared fields, lambdas,
comprehensions, f-strings, ``_``-names) is refused when the policy loads, and so are
comparisons the declared types make meaningless (``claim.amount < "5000"``). The compiled
condition is evaluated by the small interpreter below, never by ``eval``.

Semantics follow Python's except where Python is lax: ``True == 1`` is False, ordering
needs two numbers or two strings, and ``and``/``or``/``not`` need True or False. A value
that breaks these at run time (an ``any`` field, a missing optional field) raises
:class:`~aevos.errors.PolicyEvaluationError` naming the sub-expression, never the value.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PolicyEvaluationError

MAX_LENGTH = 2000
MAX_DEPTH = 50

# Static types of sub-expressions; "any" is unknown until run time.
_FIELD_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "list": "list",
    "any": "any",
}
_OPS: dict[type[ast.AST], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_REFUSED: dict[type[ast.AST], str] = {
    ast.Call: "function calls are not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.IfExp: "conditional expressions are not allowed; write separate rules",
    ast.NamedExpr: "assignments are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.Starred: "* unpacking is not allowed",
}


class ExpressionError(ValueError):
    """A condition refused at load time; ``line`` is 1-based within the condition's text."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class TraceStep:
    """One sub-expression that was evaluated (a field read, a comparison...) and its value."""

    text: str
    value: Any


class _Env:
    def __init__(self, values: Mapping[str, Any], trace: list[TraceStep] | None) -> None:
        self.values = values
        self.trace = trace

    def record(self, text: str, value: Any) -> None:
        if self.trace is not None:
            self.trace.append(TraceStep(text, value))


# -- the compiled tree -----------------------------------------------------------------------


class _Node:
    def __init__(self, text: str) -> None:
        self.text = text

    def evaluate(self, env: _Env) -> Any:
        raise NotImplementedError


class _Const(_Node):
    def __init__(self, text: str, value: Any) -> None:
        super().__init__(text)
        self.value = value

    def evaluate(self, env: _Env) -> Any:
        return self.value


class _Field(_Node):
    def evaluate(self, env: _Env) -> Any:
        value = env.values[self.text]
        env.record(self.text, value)
        return value


class _Not(_Node):
    def __init__(self, text: str, operand: _Node) -> None:
        super().__init__(text)
        self.operand = operand

    def evaluate(self, env: _Env) -> Any:
        result = not _truth(self.operand, self.operand.evaluate(env), "not", self.text)
        env.record(self.text, result)
        return result


class _Negate(_Node):
    def __init__(self, text: str, operand: _Node, sign: int) -> None:
        super().__init__(text)
        self.operand = operand
        self.sign = sign

    def evaluate(self, env: _Env) -> Any:
        value = self.operand.evaluate(env)
        if not _is_number(value):
            raise _error(self.text, f"'-' needs a number, but {_describe(self.operand, value)}")
        result = -value if self.sign < 0 else value
        env.record(self.text, result)
        return result


class _BoolOp(_Node):
    def __init__(self, text: str, op: str, operands: list[_Node]) -> None:
        super().__init__(text)
        self.op = op
        self.operands = operands

    def evaluate(self, env: _Env) -> Any:
        # Short-circuits like Python, so `x != None and x > 3` is safe on a missing x.
        stop = self.op == "or"
        result = not stop
        for operand in self.operands:
            if _truth(operand, operand.evaluate(env), self.op, self.text) is stop:
                result = stop
                break
        env.record(self.text, result)
        return result


class _Compare(_Node):
    def __init__(self, text: str, left: _Node, ops: list[str], rights: list[_Node]) -> None:
        super().__init__(text)
        self.left = left
        self.ops = ops
        self.rights = rights

    def evaluate(self, env: _Env) -> Any:
        left_node, left = self.left, self.left.evaluate(env)
        result = True
        for op, right_node in zip(self.ops, self.rights, strict=True):
            right = right_node.evaluate(env)
            if not self._apply(op, left_node, left, right_node, right):
                result = False
                break
            left_node, left = right_node, right
        env.record(self.text, result)
        return result

    def _apply(self, op: str, ln: _Node, left: Any, rn: _Node, right: Any) -> bool:
        if op == "==":
            return _equal(left, right)
        if op == "!=":
            return not _equal(left, right)
        if op in ("in", "not in"):
            if isinstance(right, list):
                found = any(_equal(left, item) for item in right)
            elif isinstance(right, str) and isinstance(left, str):
                found = left in right
            else:
                raise _error(
                    self.text,
                    f"'{op}' needs a list, or a string within a string, but "
                    f"{_describe(ln, left)} and {_describe(rn, right)}",
                )
            return found if op == "in" else not found
        if (_is_number(left) and _is_number(right)) or (
            isinstance(left, str) and isinstance(right, str)
        ):
            return _ORDER[op](left, right)
        raise _error(
            self.text,
            f"'{op}' needs two numbers or two strings, but "
            f"{_describe(ln, left)} and {_describe(rn, right)}",
        )


class _Arith(_Node):
    def __init__(self, text: str, op: str, left: _Node, right: _Node) -> None:
        super().__init__(text)
        self.op = op
        self.left = left
        self.right = right

    def evaluate(self, env: _Env) -> Any:
        left, right = self.left.evaluate(env), self.right.evaluate(env)
        for node, value in ((self.left, left), (self.right, right)):
            if not _is_number(value):
                raise _error(self.text, f"'{self.op}' needs numbers, but {_describe(node, value)}")
        try:
            result = _ARITH[self.op](left, right)
        except ZeroDivisionError:
            zero = "" if isinstance(self.right, _Const) else f" ({self.right.text} is 0)"
            raise _error(self.text, f"division by zero{zero}") from None
        except OverflowError:
            raise _error(self.text, "the result is too large for a number") from None
        env.record(self.text, result)
        return result


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    # Python's True == 1 would let a boolean field match a numeric literal by accident.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _truth(node: _Node, value: Any, op: str, text: str) -> bool:
    if not isinstance(value, bool):
        raise _error(text, f"'{op}' needs True or False, but {_describe(node, value)}")
    return value


def _describe(node: _Node, value: Any) -> str:
    # The sub-expression's text comes from the policy file; the value (input data) is never
    # shown, only its kind.
    name = type(value).__name__
    kind = "missing (None)" if value is None else ("an " if name[0] in "aeiou" else "a ") + name
    return f"{node.text} is {kind}"


def _error(text: str, message: str) -> PolicyEvaluationError:
    return PolicyEvaluationError(f"cannot evaluate {text!r}: {message}")


# -- compiling -------------------------------------------------------------------------------


class Condition:
    """A compiled ``when``: ``evaluate(values)`` over the declared fields' values."""

    def __init__(self, text: str, root: _Node, fields: tuple[str, ...]) -> None:
        self.text = text  # on one line, as written when it was written on one line
        self.fields = fields  # the declared fields it reads, in order of first use
        self._root = root

    def evaluate(self, values: Mapping[str, Any], trace: list[TraceStep] | None = None) -> bool:
        """True or False; each evaluated sub-expression is appended to ``trace`` if given."""
        result = self._root.evaluate(_Env(values, trace))
        if not isinstance(result, bool):
            raise _error(
                self.text, f"a condition must be True or False, but {_describe(self._root, result)}"
            )
        return result

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def compile_condition(text: str, fields: Mapping[str, str]) -> Condition:
    """Parse and check ``text`` against the declared ``fields`` (path -> type name).

    Raises ExpressionError, naming the offending part, for anything outside the language,
    an undeclared field, or a comparison the declared types make meaningless.
    """
    if not text.strip():
        raise ExpressionError("the condition is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the condition is longer than {MAX_LENGTH} characters")
    # Parenthesised so a condition may span lines (a YAML block scalar) and a trailing
    # `# comment` cannot swallow what follows it.
    source = "(" + text + "\n)"
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid condition: {exc.msg}", exc.lineno or 1) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("not a valid condition (too complex or not text)") from None
    # Checked before anything recurses over the tree, so no input can exhaust the stack.
    stack: list[tuple[ast.AST, int]] = [(tree.body, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the condition nests deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    compiler = _Compiler(source, fields)
    root, kind = compiler.compile(tree.body)
    if kind not in ("boolean", "any"):
        raise ExpressionError(f"the condition must be True or False, but it is a {kind}")
    return Condition(root.text, root, tuple(compiler.used))


class _Compiler:
    def __init__(self, source: str, fields: Mapping[str, str]) -> None:
        self.source = source
        self.fields = fields
        self.used: list[str] = []

    def text(self, node: ast.AST) -> str:
        """The sub-expression as written, on one line and without comments."""
        segment = ast.get_source_segment(self.source, node)
        return ast.unparse(node) if segment is None else _one_line(segment)

    def refuse(self, node: ast.AST, reason: str) -> ExpressionError:
        return ExpressionError(f"{reason}: {self.text(node)}", getattr(node, "lineno", 1))

    def compile(self, node: ast.AST) -> tuple[_Node, str]:
        """The node and its static type: number, string, boolean, list, none or any."""
        text = self.text(node)
        if isinstance(node, ast.Constant | ast.List | ast.Tuple):
            value = self.literal(node)
            return _Const(text, value), _type_of(value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            if isinstance(node.operand, ast.Constant):
                value = self.literal(node)
                return _Const(text, value), _type_of(value)
            operand, kind = self.compile(node.operand)
            self.expect(node, operand, kind, ("number",), "'-' needs a number")
            return _Negate(text, operand, -1 if isinstance(node.op, ast.USub) else 1), "number"
        if isinstance(node, ast.Name | ast.Attribute):
            field = self.field(node)
            return field, _FIELD_TYPES[self.fields[field.text]]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            operand, kind = self.compile(node.operand)
            self.expect(node, operand, kind, ("boolean",), "'not' needs True or False")
            return _Not(text, operand), "boolean"
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            operands = []
            for value in node.values:
                operand, kind = self.compile(value)
                self.expect(node, operand, kind, ("boolean",), f"'{op}' needs True or False")
                operands.append(operand)
            return _BoolOp(text, op, operands), "boolean"
        if isinstance(node, ast.Compare):
            return self.compare(node), "boolean"
        if isinstance(node, ast.BinOp):
            arith = _OPS.get(type(node.op))
            if arith is None:
                raise self.refuse(node, "only + - * / are allowed in arithmetic")
            left, left_kind = self.compile(node.left)
            right, right_kind = self.compile(node.right)
            self.expect(node, left, left_kind, ("number",), f"'{arith}' needs numbers")
            self.expect(node, right, right_kind, ("number",), f"'{arith}' needs numbers")
            return _Arith(text, arith, left, right), "number"
        if isinstance(node, ast.UnaryOp):
            raise self.refuse(node, "only the unary operators not, - and + are allowed")
        raise self.refuse(node, _REFUSED.get(type(node), f"{type(node).__name__} is not allowed"))

    def expect(
        self, node: ast.AST, part: _Node, kind: str, wanted: tuple[str, ...], why: str
    ) -> None:
        if kind != "any" and kind not in wanted:
            raise self.refuse(node, f"{why}, but {part.text} is {_a(kind)}")

    def literal(self, node: ast.AST) -> Any:
        if isinstance(node, ast.List | ast.Tuple):
            for item in node.elts:
                if isinstance(item, ast.List | ast.Tuple):
                    raise self.refuse(item, "lists may not be nested")
            return [self.literal(item) for item in node.elts]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = self.literal(node.operand)
            if not _is_number(value):
                raise self.refuse(node, "'-' needs a number")
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, bool | int | float | str):
                return node.value
            raise self.refuse(node, "only numbers, strings, True, False and None are allowed")
        raise self.refuse(node, "lists may only hold numbers, strings, True, False and None")

    def field(self, node: ast.AST) -> _Field:
        parts: list[str] = []
        current = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            raise self.refuse(node, "attribute access is only allowed on declared fields")
        parts.append(current.id)
        path = ".".join(reversed(parts))
        if any(part.startswith("_") for part in parts):
            raise self.refuse(node, "names starting with '_' are not allowed")
        if path not in self.fields:
            hint = (
                "; write True, False or None"
                if path.lower() in ("true", "false", "null", "none")
                else f" (declared: {', '.join(self.fields) or 'none'})"
            )
            raise self.refuse(node, f"unknown field {path!r}; declare it under input{hint}")
        if path not in self.used:
            self.used.append(path)
        return _Field(path)

    def compare(self, node: ast.Compare) -> _Compare:
        left, left_kind = self.compile(node.left)
        first = left
        ops: list[str] = []
        rights: list[_Node] = []
        for op_node, comparator in zip(node.ops, node.comparators, strict=True):
            op = _OPS.get(type(op_node))
            if op is None:
                raise self.refuse(node, "'is' is not allowed; use == or !=")
            right, right_kind = self.compile(comparator)
            self.check_compare(node, op, left, left_kind, right, right_kind)
            ops.append(op)
            rights.append(right)
            left, left_kind = right, right_kind
        return _Compare(self.text(node), first, ops, rights)

    def check_compare(
        self, node: ast.AST, op: str, left: _Node, lk: str, right: _Node, rk: str
    ) -> None:
        if op in ("==", "!="):
            if "any" not in (lk, rk) and "none" not in (lk, rk) and lk != rk:
                raise self.refuse(
                    node, f"compares {_a(lk)} with {_a(rk)}, which is never equal ({op})"
                )
        elif op in ("in", "not in"):
            self.expect(node, right, rk, ("list", "string"), f"'{op}' needs a list or a string")
            if rk == "string":
                self.expect(node, left, lk, ("string",), f"'{op}' on a string needs a string")
            if isinstance(right, _Const) and lk not in ("any", "none"):
                kinds = {_type_of(item) for item in right.value} - {"none"}
                if kinds and lk not in kinds:
                    always = "False" if op == "in" else "True"
                    raise self.refuse(
                        node, f"{left.text} is {_a(lk)} but the list holds none: always {always}"
                    )
        else:
            for part, kind in ((left, lk), (right, rk)):
                self.expect(
                    node, part, kind, ("number", "string"), f"'{op}' needs numbers or strings"
                )
            if {lk, rk} == {"number", "string"}:
                raise self.refuse(node, f"'{op}' compares a number with a string")


def _one_line(segment: str) -> str:
    # Rebuilt from tokens, so line breaks and comments go but string literals stay intact.
    parts: list[str] = []
    previous: tuple[int, int] | None = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(segment).readline):
            if token.type in _LAYOUT_TOKENS:
                continue
            if previous is not None and token.start != previous:
                parts.append(" ")
            parts.append(token.string)
            previous = token.end
    except (tokenize.TokenError, SyntaxError):
        return " ".join(segment.split())
    return "".join(parts).strip()


_LAYOUT_TOKENS = (
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
)


def _type_of(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list"


def _a(kind: str) -> str:
    return {"none": "None", "any": "anything"}.get(
        kind, ("an " if kind[0] in "aeiou" else "a ") + kind
    )
