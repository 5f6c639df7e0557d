"""What every ``aevos`` command shares: consoles, error reporting, loading the app, formatting.

Expected failures (an unknown workflow or run, bad JSON, an unreachable or outdated database)
are :class:`~aevos.errors.AevosError`; every command prints them as
``error [<code>]: <message>`` on stderr and exits with status 2, without a traceback.
Database URLs are only ever shown with their password hidden.
"""

from __future__ import annotations

import errno
import functools
import importlib
import importlib.util
import inspect
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec

import typer
from rich.console import Console
from rich.text import Text

from ..app import DEFAULT_DATABASE_URL, Aevos
from ..errors import AevosError
from ..records.run import RunInfo, StepInfo
from ..records.status import RunStatus
from ..storage.dialect import check_url

P = ParamSpec("P")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# The password of the configured URL, scrubbed from every error we print: kernel messages
# already redact URLs, this also covers messages from drivers and user code.
_secret: ContextVar[str | None] = ContextVar("aevos_cli_secret", default=None)

_STATUS_STYLE = {
    RunStatus.ENQUEUED: "white",
    RunStatus.RUNNING: "cyan",
    RunStatus.WAITING: "blue",
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "yellow",
    RunStatus.REJECTED: "magenta",
}


class CliError(AevosError):
    """A command-line input the CLI refuses before anything reaches the kernel."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class _State:
    database_url: str | None  # from --database-url or AEVOS_DATABASE_URL; None: not given

    @property
    def url(self) -> str:
        return self.database_url or DEFAULT_DATABASE_URL


def _print_error(exc: AevosError) -> None:
    message = exc.message
    secret = _secret.get()
    # Shorter "passwords" would mangle ordinary words and hide little.
    if secret and len(secret) >= 4:
        message = message.replace(secret, "***")
    err.print(Text.assemble(("error", "bold red"), f" [{exc.code}]: {message}"), soft_wrap=True)


def _reports_errors(func: Callable[P, None]) -> Callable[P, None]:
    """Expected errors become one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except AevosError as exc:
            _print_error(exc)
            raise typer.Exit(2) from None

    return wrapper


def _state(ctx: typer.Context) -> _State:
    state = ctx.find_root().obj
    return state if isinstance(state, _State) else _State(None)


# -- loading apps ----------------------------------------------------------------------------


def _check_url(url: str) -> None:
    """Refuse a URL that cannot be parsed (without echoing it: it may carry a password) or
    that no backend serves, before anything is imported or opened."""
    try:
        check_url(url)
    except ValueError:
        raise CliError(
            "bad_database_url",
            "cannot parse the database URL; use sqlite:///path/to/file.db or "
            "postgresql://user:password@host:port/database",
        ) from None


def load_app(ref: str, database_url: str | None = None) -> Aevos:
    """The app named by ``module:attribute`` (an :class:`Aevos` or a factory returning one).

    The current directory is importable, as with uvicorn. A factory is called with
    ``database_url`` when it takes a parameter; an app instance gets ``database_url`` (when
    given) before its database is first opened.
    """
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError("bad_app", f"--app must look like module:attribute, got {ref!r}")
    if database_url is not None:
        _check_url(database_url)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # the app module exists but imports something missing: show where
        raise CliError(
            "app_not_found", f"cannot import module {module_name!r} (searched {cwd} and sys.path)"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CliError(
                "app_not_found", f"module {module_name!r} has no attribute {attribute!r}"
            )
        target = getattr(target, part)
    if isinstance(target, Aevos):
        if database_url is not None:
            target.database_url = database_url
        return target
    if callable(target) and not isinstance(target, type):
        takes_url = bool(inspect.signature(target).parameters)
        app = target(database_url) if takes_url else target()
        if isinstance(app, Aevos):
            if database_url is not None and not takes_url:
                app.database_url = database_url
            return app
    raise CliError("bad_app", f"{ref} is neither an aevos.Aevos app nor a factory returning one")


@contextmanager
def _app(ctx: typer.Context, ref: str | None = None) -> Iterator[Aevos]:
    """The --app app if given, else a bare app on the configured database; closed after."""
    state = _state(ctx)
    if ref is not None:
        app = load_app(ref, state.database_url)
    else:
        _check_url(state.url)
        app = Aevos(state.url)
    try:
        yield app
    finally:
        app.close()


def _json_option(
    option: str, text: str | None, kind: type[list[Any]] | type[dict[str, Any]]
) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            "bad_json",
            f"{option} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    if not isinstance(value, kind):
        expected = (
            "a JSON list, e.g. '[1, \"a\"]'" if kind is list else "a JSON object, e.g. '{\"k\": 1}'"
        )
        raise CliError("bad_json", f"{option} must be {expected}, got {type(value).__name__}")
    return value


def _emit_json(value: Any, *, indent: int | None = None) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=indent, default=str))


# -- formatting ------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = max(0.0, end - start)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _print_wide(renderable: Any) -> None:
    # Piped output has no terminal width; do not squeeze tables into Rich's 80 columns.
    console = out if out.is_terminal else Console(highlight=False, width=max(out.width, 200))
    console.print(renderable)


def _preview(value: Any, width: int) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _status(status: RunStatus) -> Text:
    return Text(status.value, style=_STATUS_STYLE.get(status, ""))


def _run_dict(info: RunInfo, *, data: bool) -> dict[str, Any]:
    fields = {
        "run_id": info.run_id,
        "workflow": info.workflow,
        "status": info.status.value,
        "queue": info.queue,
        "priority": info.priority,
        "idempotency_key": info.idempotency_key,
        "code_version": info.code_version,
        "parent_run_id": info.parent_run_id,
        "owner": info.owner,
        "executions": info.executions,
        "error": info.error,
        "created_at": info.created_at,
        "claimed_at": info.claimed_at,
        "finished_at": info.finished_at,
    }
    if data:
        fields["input"] = info.input
        fields["output"] = info.output
    return fields


def _step_dict(step: StepInfo) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "name": step.name,
        "status": step.status,
        "attempts": step.attempts,
        "output": step.output,
        "error": step.error,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
    }


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds one), or the reason it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                "address_in_use",
                f"cannot listen on {host}:{port}: the address is already in use (another "
                "server runs there; stop it or choose another --port)",
            ) from None
        reason = exc.strerror or type(exc).__name__
        raise CliError("cannot_listen", f"cannot listen on {host}:{port}: {reason}") from None
    return sock
