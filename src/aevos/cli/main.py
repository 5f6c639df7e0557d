"""The ``aevos`` command: migrate the schema, start and inspect runs, run workers, run the demo.

Expected failures (an unknown workflow or run, bad JSON, an unreachable or outdated database)
are :class:`~aevos.errors.AevosError`; every command prints them as
``error [<code>]: <message>`` on stderr and exits with status 2, without a traceback.
Database URLs are only ever shown with their password hidden.

Results go to stdout (run ids, JSON, tables); progress, banners and errors go to stderr, so
``aevos start wf --app m:app`` can be captured by a script.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any, ParamSpec

import typer
from rich.logging import RichHandler

from .. import __version__
from ..app import DEFAULT_DATABASE_URL
from ..kernel.workflow import StartOptions
from ..records.queue import INLINE_QUEUE
from ..storage.dialect import redact_url, url_password
from ..storage.migration import head_revision
from ..storage.migration import migrate as migrate_database
from .common import (
    CliError,
    _app,
    _check_url,
    _emit_json,
    _json_option,
    _listen,
    _reports_errors,
    _secret,
    _State,
    _state,
    err,
    out,
)

P = ParamSpec("P")

cli = typer.Typer(
    name="aevos",
    help="aevos: durable workflows. Operate runs, workers and the schema of one database.",
    no_args_is_help=True,
    add_completion=False,
    # Locals would include database URLs with their passwords.
    pretty_exceptions_show_locals=False,
)


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
    _secret.set(url_password(database_url) if database_url else None)


@cli.command()
@_reports_errors
def migrate(ctx: typer.Context) -> None:
    """Bring the database schema up to this aevos version's newest revision."""
    url = _state(ctx).url
    safe = redact_url(url)
    _check_url(url)
    with err.status(f"Migrating {safe} ...", spinner="dots"):
        before, after = migrate_database(url)
    if before == after:
        out.print(f"{safe}: already at revision {after} (head)", markup=False)
    else:
        out.print(
            f"{safe}: {before or '<empty>'} -> {after} (head {head_revision()})", markup=False
        )


@cli.command()
@_reports_errors
def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Print them as Prometheus gauges.")
    ] = False,
) -> None:
    """Check the database: reachability, schema revision, size, write-ahead log and the free
    space beside it. Exit status 1 when it is unreachable, its schema is not this aevos's
    newest, or there is not room to checkpoint its log."""
    from ..storage.health import check_storage
    from ..telemetry.storage import storage_exposition

    url = _state(ctx).url
    _check_url(url)
    health = check_storage(url)
    if prometheus:
        sys.stdout.write(storage_exposition(health).decode())
    elif as_json:
        _emit_json(health.to_dict())
    else:
        for label, value in _doctor_lines(health):
            out.print(f"{label:<14}{value}", markup=False, soft_wrap=True)
    if not health.ok:
        raise typer.Exit(1)


def _doctor_lines(health: Any) -> list[tuple[str, str]]:
    def size(n: int | None, unknown: str = "unknown") -> str:
        return unknown if n is None else f"{n / 1e6:.1f} MB"

    schema = (
        "none (run aevos migrate)"
        if health.revision is None
        else f"{health.revision} (head)"
        if health.schema_current
        else f"{health.revision}, not this aevos's {health.head}: run aevos migrate"
    )
    lines = [
        ("database", f"{health.url} ({health.backend})"),
        (
            "reachable",
            f"yes, {health.latency_seconds * 1000:.1f} ms"
            if health.reachable
            else f"no: {health.error}",
        ),
    ]
    if health.reachable:
        lines.append(("schema", schema))
    lines += [
        ("size", size(health.size_bytes)),
        ("wal", size(health.wal_bytes, "unknown (needs superuser or pg_monitor)")),
        ("free space", size(health.free_bytes, "unknown (on the server)")),
    ]
    lines += [("warning", warning) for warning in health.warnings]
    return lines


# -- starting runs ---------------------------------------------------------------------------


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
    # --kwargs are the workflow's alone (a key named "queue" is its argument); start options
    # come only from --key, --queue and --priority.
    options = StartOptions(queue=queue, idempotency_key=key, priority=priority)
    with _app(ctx, app_ref) as app:
        handle = app.runtime.start(workflow, positional, named, options)
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
    handler = RichHandler(console=err, show_path=False, markup=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler])
    with _app(ctx, app_ref) as app:
        _redact_handlers(handler)
        app.replays  # noqa: B018 -- registers the replay workflow: workers run replays
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


@cli.command()
@_reports_errors
def serve(
    ctx: typer.Context,
    app_ref: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="module:attribute of the Aevos app (default: a bare app on the configured "
            "database: API and console without workflows of its own).",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="Embedded worker threads (0: none).")
    ] = 8,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-body-bytes",
            help="The largest request body accepted, in bytes (default AEVOS_MAX_BODY_BYTES, "
            "else 1 MiB); larger ones get 413 unread.",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API, the web console (/console) and embedded workers, in one
    process, until SIGINT or SIGTERM."""
    import uvicorn

    from ..server import create_app
    from ..server.limits import MAX_BODY_BYTES_LIMIT

    if max_body_bytes is not None and not 0 < max_body_bytes <= MAX_BODY_BYTES_LIMIT:
        raise CliError(
            "bad_option",
            f"--max-body-bytes must be 1 to {MAX_BODY_BYTES_LIMIT} bytes, not {max_body_bytes}",
        )
    with _app(ctx, app_ref) as app:
        api = create_app(app, max_body_bytes=max_body_bytes)
        app.store.ping()
        # Bound before the banner: a busy port is an error of its own, not a server that
        # says it serves and then dies.
        sock = _listen(host, port)
        try:
            # Replays started over the API run on these workers: registered before they
            # take their queues.
            app.replays  # noqa: B018
            runner = app.worker(concurrency=workers).start() if workers else None
            out.print(
                f"aevos serving http://{host}:{port} (console: /console) | {workers} worker "
                "thread(s) | "
                f"{redact_url(app.database_url)}",
                markup=False,
                soft_wrap=True,
            )
            sys.stdout.flush()
            config = uvicorn.Config(api, log_level="warning")
            # Its handlers cleaned of PII once uvicorn has configured them (in Config).
            _redact_handlers(
                *(
                    h
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
                    for h in logging.getLogger(name).handlers
                )
            )
            server = uvicorn.Server(config)
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:  # uvicorn raises SIGINT again once it has stopped
                pass
            finally:
                if runner is not None:
                    runner.stop()
        finally:
            sock.close()
        if not server.started:
            raise CliError("server_failed", "the server did not start (see the log above)")


def _redact_handlers(*handlers: logging.Handler) -> None:
    """Clean everything these handlers write (other libraries' records too) with the PII
    log filter the app installed, unless it is off (``AEVOS_LOG_REDACTION=off``, or an app
    built with ``redact_logs=False``)."""
    from ..pii.logs import active_log_filter

    log_filter = active_log_filter()
    if log_filter is not None:
        for handler in handlers:
            handler.addFilter(log_filter)


# -- demo ------------------------------------------------------------------------------------


from .audit import audit_cli  # noqa: E402
from .cases import cases_cli  # noqa: E402
from .datasets import datasets_cli  # noqa: E402
from .demo import demo  # noqa: E402
from .events import events_cli  # noqa: E402
from .evolution import evolution_cli  # noqa: E402
from .labels import labels_cli  # noqa: E402
from .models import models_cli  # noqa: E402
from .monitors import monitors_cli  # noqa: E402
from .outbox import outbox_cli  # noqa: E402
from .policy import policy_cli  # noqa: E402
from .replays import replays_cli  # noqa: E402
from .rollouts import rollouts_cli  # noqa: E402
from .runs import runs_cli  # noqa: E402
from .schedules import schedules_cli  # noqa: E402
from .tasks import tasks_cli  # noqa: E402
from .tokens import tokens_cli  # noqa: E402

cli.add_typer(runs_cli, name="runs")
cli.add_typer(tasks_cli, name="tasks")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(policy_cli, name="policy")
cli.add_typer(models_cli, name="models")
cli.add_typer(tokens_cli, name="tokens")
cli.add_typer(labels_cli, name="labels")
cli.add_typer(datasets_cli, name="datasets")
cli.add_typer(cases_cli, name="cases")
cli.add_typer(outbox_cli, name="outbox")
cli.add_typer(evolution_cli, name="evolution")
cli.add_typer(replays_cli, name="replays")
cli.add_typer(rollouts_cli, name="rollouts")
cli.add_typer(monitors_cli, name="monitors")
cli.add_typer(schedules_cli, name="schedules")
cli.add_typer(events_cli, name="events")
cli.command()(demo)


def main() -> None:
    """Entry point of the ``aevos`` console script and ``python -m aevos``."""
    cli(prog_name="aevos")
