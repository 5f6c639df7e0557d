"""The ``aevos`` command: migrate the schema, start and inspect runs, run workers, run the demo.

Expected failures (an unknown workflow or run, bad JSON, an unreachable or outdated database)
are :class:`~aevos.errors.AevosError`; every command prints them as
``error [<code>]: <message>`` on stderr and exits with status 2, without a traceback.
Database URLs are only ever shown with their password hidden.

Results go to stdout (run ids, JSON, tables); progress, banners and errors go to stderr, so
``aevos start wf --app m:app`` can be captured by a script.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, ParamSpec

import sqlalchemy as sa
import typer
from rich import box
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import URL, make_url

from . import __version__
from .app import DEFAULT_DATABASE_URL, Aevos
from .errors import AevosError, RunTimeoutError, StorageError
from .queue import INLINE_QUEUE, Queue
from .run import RunInfo, StepInfo
from .status import RunStatus
from .storage.dialect import Dialect, dialect_for, redact_url
from .storage.migration import current_revision, ensure_schema, head_revision

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


cli = typer.Typer(
    name="aevos",
    help="aevos: durable workflows. Operate runs, workers and the schema of one database.",
    no_args_is_help=True,
    add_completion=False,
    # Locals would include database URLs with their passwords.
    pretty_exceptions_show_locals=False,
)
runs_cli = typer.Typer(help="List, inspect, cancel, resume and fork runs.", no_args_is_help=True)
cli.add_typer(runs_cli, name="runs")


def _show_version(value: bool) -> None:
    if value:
        out.print(f"aevos {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="AEVOS_DATABASE_URL",
            show_envvar=True,
            help=f"sqlite:///path or postgresql://user@host/db (default {DEFAULT_DATABASE_URL})",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print version."),
    ] = False,
) -> None:
    ctx.obj = _State(database_url or None)
    try:
        _secret.set(make_url(database_url).password if database_url else None)
    except Exception:
        _secret.set(None)


def _state(ctx: typer.Context) -> _State:
    state = ctx.find_root().obj
    return state if isinstance(state, _State) else _State(None)


# -- loading apps ----------------------------------------------------------------------------


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except Exception:
        # The URL itself is not echoed: it may carry a password.
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
        dialect_for(_parse_url(database_url))
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
        dialect_for(_parse_url(state.url))
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


# -- schema ----------------------------------------------------------------------------------


@contextmanager
def _storage_errors(dialect: Dialect, safe_url: str) -> Iterator[None]:
    """SQLAlchemy errors as aevos storage errors, the way the store classifies them."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        classified = dialect.classify(exc, safe_url)
        if classified is not None:
            raise classified from None
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise StorageError(
            f"database error on {safe_url}: {reason[0] if reason else type(exc).__name__}"
        ) from None


@cli.command()
@_reports_errors
def migrate(ctx: typer.Context) -> None:
    """Bring the database schema up to this aevos version's newest revision."""
    url = _state(ctx).url
    safe = redact_url(url)
    parsed = _parse_url(url)
    dialect = dialect_for(parsed)
    with err.status(f"Migrating {safe} ...", spinner="dots"):
        engine = dialect.create_engine(parsed)
        try:
            with _storage_errors(dialect, safe):
                before = current_revision(engine)
                ensure_schema(engine, migrate=True, url=safe)
                after = current_revision(engine)
        finally:
            engine.dispose()
    if before == after:
        out.print(f"{safe}: already at revision {after} (head)", markup=False)
    else:
        out.print(
            f"{safe}: {before or '<empty>'} -> {after} (head {head_revision()})", markup=False
        )


# -- starting runs ---------------------------------------------------------------------------

_START_OPTIONS = frozenset({"idempotency_key", "queue", "priority"})


@cli.command()
@_reports_errors
def start(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="Registered workflow name.")],
    app_ref: Annotated[str, typer.Option("--app", help="module:attribute of the Aevos app.")],
    args: Annotated[
        str | None, typer.Option("--args", help="Positional arguments, a JSON list.")
    ] = None,
    kwargs: Annotated[
        str | None, typer.Option("--kwargs", help="Keyword arguments, a JSON object.")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key: the same key, the same run.")
    ] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", help="Queue (default: the workflow's).")
    ] = None,
    priority: Annotated[int, typer.Option("--priority", help="Smaller starts first.")] = 0,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Run an embedded worker until the run ends.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="With --wait: give up after S seconds.")
    ] = None,
) -> None:
    """Enqueue a run of WORKFLOW; prints its id, or with --wait its result as JSON."""
    positional = _json_option("--args", args, list)
    named = _json_option("--kwargs", kwargs, dict)
    clash = sorted(_START_OPTIONS & set(named))
    if clash:
        raise CliError(
            "bad_json",
            f"--kwargs cannot pass {', '.join(clash)}: those are start options "
            "(use --key, --queue, --priority)",
        )
    with _app(ctx, app_ref) as app:
        handle = app.start(
            workflow, *positional, idempotency_key=key, queue=queue, priority=priority, **named
        )
        info = handle.info()
        if not wait:
            err.print(
                f"run {info.run_id} of {info.workflow} is {info.status.value} on queue {info.queue}",
                markup=False,
            )
            typer.echo(info.run_id)
            return
        worker = app.worker().start()
        try:
            with err.status(f"Waiting for run {info.run_id} ({info.workflow}) ...", spinner="dots"):
                result = handle.result(timeout=timeout)
        finally:
            worker.stop(timeout=5)
        err.print(f"run {info.run_id} SUCCEEDED", markup=False)
        _emit_json(result, indent=2)


@cli.command()
@_reports_errors
def signal(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run to signal.")],
    topic: Annotated[str, typer.Argument(help="Topic the run waits on.")],
    payload: Annotated[str | None, typer.Option("--payload", help="A JSON value.")] = None,
) -> None:
    """Send a signal to a run (delivered when it waits on TOPIC)."""
    value: Any = None
    if payload is not None:
        try:
            value = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise CliError(
                "bad_json",
                f"--payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            ) from None
    with _app(ctx) as app:
        app.send_signal(run_id, topic, value)
    out.print(f"signal {topic!r} sent to run {run_id}", markup=False)


# -- runs ------------------------------------------------------------------------------------


def _statuses(values: list[str] | None) -> list[RunStatus] | None:
    if not values:
        return None
    parsed: list[RunStatus] = []
    for value in values:
        try:
            parsed.append(RunStatus(value.upper()))
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise CliError("bad_option", f"--status {value!r} is not one of {known}") from None
    return parsed


@runs_cli.command("list")
@_reports_errors
def runs_list(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only these statuses (repeatable).")
    ] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", help="Only this workflow.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N runs.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The newest runs first."""
    wanted = _statuses(status)
    with _app(ctx) as app:
        runs = app.list_runs(status=wanted, workflow=workflow, queue=queue, limit=limit)
        safe = redact_url(app.database_url)
    if as_json:
        for info in runs:
            _emit_json(_run_dict(info, data=False))
        return
    table = Table(
        title=f"{len(runs)} run(s) on {safe}, newest first", title_justify="left", box=box.SIMPLE
    )
    table.add_column("id", no_wrap=True, min_width=32)
    table.add_column("workflow", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("queue", overflow="fold", min_width=7)
    table.add_column("created", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("exec", justify="right")
    for info in runs:
        table.add_row(
            info.run_id,
            Text(info.workflow),
            _status(info.status),
            Text(info.queue),
            _when(info.created_at),
            _duration(info.created_at, info.finished_at),
            str(info.executions),
        )
    _print_wide(table)


@runs_cli.command("show")
@_reports_errors
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The run and its steps as JSON.")] = False,
) -> None:
    """One run: status, error, code version, input, output, and its steps."""
    with _app(ctx) as app:
        info = app.get_run(run_id)
        steps = app.list_steps(run_id)
    if as_json:
        _emit_json(
            {"run": _run_dict(info, data=True), "steps": [_step_dict(s) for s in steps]}, indent=2
        )
        return
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("run", info.run_id),
        ("workflow", info.workflow),
        ("status", _status(info.status)),
        ("queue", f"{info.queue} (priority {info.priority})"),
        ("code version", info.code_version),
    ]
    if info.idempotency_key is not None:
        rows.append(("idempotency key", info.idempotency_key))
    if info.parent_run_id is not None:
        rows.append(("parent run", info.parent_run_id))
    if info.owner is not None:
        rows.append(("owner", info.owner))
    rows += [
        ("executions", str(info.executions)),
        ("created", _when(info.created_at)),
        ("finished", _when(info.finished_at)),
        ("duration", _duration(info.created_at, info.finished_at)),
    ]
    if info.error:
        error = info.error
        code = f" [{error['code']}]" if "code" in error else ""
        rows.append(
            (
                "error",
                Text(f"{error.get('type', 'Error')}{code}: {error.get('message', '')}", "red"),
            )
        )
    rows.append(("input", _preview(info.input, 300)))
    if info.status is RunStatus.SUCCEEDED:
        rows.append(("output", _preview(info.output, 300)))
    for label, value in rows:
        summary.add_row(label, value if isinstance(value, Text) else Text(value))
    _print_wide(summary)
    table = Table(title=f"{len(steps)} step(s)", title_justify="left", box=box.SIMPLE)
    table.add_column("seq", justify="right")
    table.add_column("name", overflow="fold", min_width=14)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("attempts", justify="right")
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("output", overflow="ellipsis", no_wrap=True, max_width=50)
    for step in steps:
        if step.status == "SUCCEEDED":
            detail = Text(_preview(step.output, 50))
        else:
            failure = step.error or {}
            detail = Text(f"{failure.get('type', 'Error')}: {failure.get('message', '')}", "red")
        table.add_row(
            str(step.seq),
            Text(step.name),
            Text(step.status, "green" if step.status == "SUCCEEDED" else "red"),
            str(step.attempts),
            _duration(step.started_at, step.finished_at),
            detail,
        )
    _print_wide(table)


@runs_cli.command("cancel")
@_reports_errors
def runs_cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Cancel a run and its unfinished children."""
    with _app(ctx) as app:
        before = app.get_run(run_id).status
        status = before if before.terminal else app.cancel(run_id)
    if before.terminal:
        out.print(f"run {run_id} already ended {status.value}; nothing to cancel", markup=False)
    else:
        out.print(f"run {run_id} {status.value}", markup=False)


@runs_cli.command("resume")
@_reports_errors
def runs_resume(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Re-enqueue a FAILED or CANCELLED run; its completed steps are not run again."""
    with _app(ctx) as app:
        info = app.resume(run_id).info()
    where = "any worker recovers it" if info.queue == INLINE_QUEUE else f"on queue {info.queue}"
    out.print(f"run {run_id} {info.status.value}: {where}", markup=False)


@runs_cli.command("fork")
@_reports_errors
def runs_fork(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="Run to fork.")],
    from_step: Annotated[
        int, typer.Option("--from-step", help="Reuse the steps before position N; 0 restarts.")
    ],
    queue: Annotated[str | None, typer.Option("--queue", help="Queue of the new run.")] = None,
    app_ref: Annotated[
        str | None,
        typer.Option("--app", help="module:attribute; the fork runs on this app's code version."),
    ] = None,
) -> None:
    """A new run with the same input, reusing the recorded steps before --from-step."""
    with _app(ctx, app_ref) as app:
        if app_ref is not None:
            info = app.fork(run_id, from_step, queue=queue).info()
        else:
            # Without the app's code we cannot know its version: keep the source run's.
            source = app.get_run(run_id)
            if queue is not None:
                Queue(queue)  # reject malformed names before writing anything
            target = queue or (source.queue if source.queue != INLINE_QUEUE else "default")
            info = app.store.fork(run_id, from_step, uuid.uuid4().hex, source.code_version, target)
    err.print(
        f"forked run {run_id} from step {from_step} as run {info.run_id} on queue {info.queue} "
        f"(code version {info.code_version})",
        markup=False,
    )
    typer.echo(info.run_id)


# -- worker ----------------------------------------------------------------------------------


@cli.command()
@_reports_errors
def worker(
    ctx: typer.Context,
    app_ref: Annotated[str, typer.Option("--app", help="module:attribute of the Aevos app.")],
    queues: Annotated[
        list[str] | None,
        typer.Option("--queue", help="Serve this queue (repeatable; default all)."),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Runs at once.")] = 8,
    log_level: Annotated[str, typer.Option("--log-level", help="Python logging level.")] = "INFO",
) -> None:
    """Run a worker in the foreground until SIGINT or SIGTERM."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise CliError("bad_option", f"--log-level {log_level!r} is not a logging level")
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, markup=False)],
    )
    with _app(ctx, app_ref) as app:
        runner = app.worker(queues or None, concurrency=concurrency)
        app.store.ping()  # fail before the banner if the database is unreachable
        names = ", ".join(q.name for q in runner.queues if q.name != INLINE_QUEUE)
        out.print(
            f"aevos worker {app.owner} | queues {names} (+ recovery) | concurrency "
            f"{concurrency} | {redact_url(app.database_url)}",
            markup=False,
            soft_wrap=True,
        )
        sys.stdout.flush()
        runner.run()
        err.print(f"worker {app.owner} stopped after {runner.executed} run(s)", markup=False)


# -- demo ------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The source checkout this package is installed from (editable install)."""
    return Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    """``<repo>/examples/<name>.py``, imported by path (``examples`` is not installed)."""
    module_name = f"aevos_examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = repo_root() / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise CliError(
            "example_not_found",
            f"the example {name!r} is not at {path}; the demo runs from a source checkout "
            "installed with `pip install -e .`",
        )
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up while being created.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


@cli.command()
@_reports_errors
def demo(
    ctx: typer.Context,
    claims: Annotated[
        int, typer.Option("--claims", min=1, help="How many claims of the data set to take in.")
    ] = 1000,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker threads executing claims.")
    ] = 8,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Give up after S seconds.")
    ] = 600.0,
) -> None:
    """Take in insurance claims from the real data set: parse, score, decide, file.

    Idempotent: claims already taken in (same policy number) start no new run.
    """
    example = load_example("claims_intake")
    data: Path = example.default_data_file()
    if not data.is_file():
        raise CliError(
            "data_not_found",
            f"the claims data set is not at {data}; set AEVOS_DATA_DIR to the directory "
            "holding insurance_claims/insurance_claims.csv",
        )
    url = _state(ctx).url
    dialect_for(_parse_url(url))
    rows: list[dict[str, str]] = example.load_claims(data, claims)
    app: Aevos = example.make_app(url)
    with app:
        safe = redact_url(app.database_url)
        err.print(
            f"claims intake: {len(rows)} claim(s) from {data} on {safe}, {workers} worker thread(s)",
            markup=False,
            soft_wrap=True,
        )
        app.store.ping()
        started = time.time()
        runner = app.worker(queues=[example.QUEUE], concurrency=workers).start()
        try:
            run_ids = _demo_progress(app, example, rows, started + timeout)
        finally:
            runner.stop(timeout=10)
        elapsed = time.time() - started
        summary = example.summarize(app, run_ids, since=started)
    _demo_report(example, summary, elapsed)
    if summary.by_status.get(RunStatus.SUCCEEDED.value, 0) != summary.runs:
        raise typer.Exit(1)


def _demo_progress(
    app: Aevos, example: ModuleType, rows: list[dict[str, str]], deadline: float
) -> list[str]:
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        enqueue = progress.add_task("enqueue", total=len(rows))
        finish = progress.add_task("process", total=len(rows))
        handles = []
        for row in rows:
            handles.append(app.start(example.WORKFLOW, row, idempotency_key=example.claim_key(row)))
            progress.advance(enqueue)
        # Runs finish roughly in the order they were enqueued, so checking the oldest
        # unfinished one costs one query per finished run, not one per run per tick.
        pending = deque(handles)
        while pending:
            while pending and pending[0].status().terminal:
                pending.popleft()
                progress.advance(finish)
            if pending:
                if time.time() > deadline:
                    raise RunTimeoutError(
                        f"{len(pending)} claim run(s) still unfinished at the deadline; "
                        "they continue with the next worker on this database"
                    )
                time.sleep(0.05)
    return [h.run_id for h in handles]


def _demo_report(example: ModuleType, summary: Any, elapsed: float) -> None:
    table = Table(title="claims intake", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("claims", str(summary.runs))
    table.add_row("new runs", str(summary.created_since))
    for status in RunStatus:
        count = summary.by_status.get(status.value, 0)
        if count:
            table.add_row(Text(f"runs {status.value}", style=_STATUS_STYLE[status]), str(count))
    labels = {
        example.APPROVE: "auto-approved",
        example.REVIEW: "sent to review",
        example.REJECT: "rejected",
    }
    for outcome, label in labels.items():
        table.add_row(label, str(summary.outcomes.get(outcome, 0)))
    table.add_row("steps executed", str(summary.steps_since))
    table.add_row("elapsed", f"{elapsed:.2f}s")
    table.add_row("steps/s", f"{summary.steps_since / elapsed:.0f}" if elapsed > 0 else "-")
    out.print(table)


def main() -> None:
    """Entry point of the ``aevos`` console script and ``python -m aevos``."""
    cli(prog_name="aevos")
