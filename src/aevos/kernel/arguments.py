"""A run's arguments, checked against its workflow's signature before the run exists.

Arguments and start options never share a namespace: every keyword given to ``wf.run``,
``wf.start`` or ``app.start`` is the workflow's, and start options (idempotency key, queue,
priority, tenant, run id) are given only through ``wf.options(...)``. So a keyword the
function does not take is refused here, by name, even when it names a start option; and a
workflow whose function has a ``tenant`` parameter receives it.

:func:`check_arguments` lets :meth:`inspect.Signature.bind` decide (it is Python's own
rule), and only when it refuses works out which argument is at fault, so that the error,
and the HTTP API's 422, name it. Messages name parameters and counts, never values: inputs
carry personal data.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import WorkflowArgumentError

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
# Caller-chosen keywords are quoted in messages and the API's answer; a long one is cut.
_MAX_NAME = 100


#: The start options, which ``Workflow.options`` takes and a workflow's arguments never do.
START_OPTIONS = ("idempotency_key", "queue", "priority", "run_id", "tenant")


def check_arguments(
    signature: inspect.Signature, workflow: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """Raise :class:`WorkflowArgumentError` unless ``(ctx, *args, **kwargs)`` binds to
    ``signature`` (a workflow function's, whose first parameter takes the context)."""
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        message, argument = _diagnose(signature, len(args), kwargs) or (str(exc), None)
        raise WorkflowArgumentError(
            f"bad arguments for workflow {workflow!r}: {message}", argument
        ) from None


def _diagnose(
    signature: inspect.Signature, count: int, kwargs: Mapping[str, Any]
) -> tuple[str, str | None] | None:
    """Why binding failed, and the argument at fault; None if no rule below explains it."""
    context, *params = signature.parameters.values()
    positional = [p.name for p in params if p.kind in _POSITIONAL]
    by_name = {p.name: p for p in params}
    takes_any_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    if count > len(positional) and not any(p.kind is p.VAR_POSITIONAL for p in params):
        return f"it takes {_count(len(positional))} after the context, got {count}", None
    for key in kwargs:
        shown = key[:_MAX_NAME]
        param = by_name.get(key)
        if key == context.name and context.kind is not context.POSITIONAL_ONLY:
            return (
                f"{shown!r} is the workflow's context, which aevos passes, not an argument",
                shown,
            )
        if param is None or param.kind not in _NAMED:
            if takes_any_keyword:
                continue  # **kwargs takes it (a positional-only name too)
            if param is not None and param.kind is param.POSITIONAL_ONLY:
                return f"argument {shown!r} is positional-only: pass it by position", shown
            return _unexpected(shown, params)
        if key in positional[:count]:
            return f"argument {shown!r} is given both by position and by name", shown
    for param in params:
        if param.default is not param.empty or param.kind in (
            param.VAR_POSITIONAL,
            param.VAR_KEYWORD,
        ):
            continue
        if param.name not in positional[:count] and not (
            param.kind in _NAMED and param.name in kwargs
        ):
            how = "keyword-only argument" if param.kind is param.KEYWORD_ONLY else "argument"
            return f"it is missing its required {how} {param.name!r}", param.name
    return None


def _unexpected(shown: str, params: list[inspect.Parameter]) -> tuple[str, str]:
    named = [p.name for p in params if p.kind in _NAMED]
    takes = f"its parameters are {', '.join(named)}" if named else "it takes no keyword arguments"
    message = f"it has no parameter {shown!r} ({takes})"
    if shown in START_OPTIONS:
        message += (
            f"; {shown!r} is a start option, which is never an argument: "
            f"give it with .options({shown}=...)"
        )
    return message, shown


def _count(n: int) -> str:
    return f"{n} positional argument{'' if n == 1 else 's'}"
