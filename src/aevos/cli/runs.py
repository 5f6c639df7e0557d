"""``aevos runs``: list, inspect, cancel, resume and fork runs; the code versions of runs
in flight."""

from __future__ import annotations

import uuid
from typing import Annotated, ParamSpec

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..records.queue import INLINE_QUEUE, Queue
from ..records.status import RunStatus
from ..storage.dialect import redact_url
from .common import (
    CliError,
    _app,
    _duration,
    _emit_json,
    _preview,
    _print_wide,
    _reports_errors,
    _run_dict,
    _status,
    _step_dict,
    _when,
    err,
    out,
)

P = ParamSpec("P")

runs_cli = typer.Typer(
    help="List, inspect, cancel, resume and fork runs; runs in flight per code version.",
    no_args_is_help=True,
)


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


@runs_cli.command("versions")
@_reports_errors
def runs_versions(
    ctx: typer.Context,
    app_ref: Annotated[
        str | None,
        typer.Option("--app", help="module:attribute; also say which versions its workers claim."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Runs in flight (enqueued, running, waiting) per the code version they started on."""
    with _app(ctx, app_ref) as app:
        versions = app.store.versions_in_flight()
        safe = redact_url(app.database_url)
        current = app.code_version if app_ref is not None else None
        pinned = app.runtime.claimable_versions

    def claimed(version: str) -> str | None:
        if current is None:
            return None
        if version == current:
            return "current"
        if pinned is None:
            return "any version"
        return "compatible" if version in pinned else "no"

    if as_json:
        for entry in versions:
            row: dict[str, object] = {
                "code_version": entry.code_version,
                "runs": entry.runs,
                "statuses": entry.statuses,
                "workflows": entry.workflows,
                "oldest": entry.oldest,
            }
            if current is not None:
                row["claimed"] = claimed(entry.code_version)
            _emit_json(row)
        return
    total = sum(entry.runs for entry in versions)
    title = f"{total} run(s) in flight in {len(versions)} code version(s)"
    if current is not None:
        title += f"; this app is {current}"
    title += f"; on {safe}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE)
    table.add_column("code version", overflow="fold", min_width=12)
    table.add_column("runs", justify="right")
    for status in (RunStatus.ENQUEUED, RunStatus.RUNNING, RunStatus.WAITING):
        table.add_column(status.value.lower(), justify="right")
    table.add_column("oldest", no_wrap=True)
    table.add_column("workflows", overflow="fold")
    if current is not None:
        table.add_column("its workers claim", no_wrap=True)
    for entry in versions:
        workflows = ", ".join(f"{name} ({n})" for name, n in sorted(entry.workflows.items()))
        cells: list[str | Text] = [
            Text(entry.code_version),
            str(entry.runs),
            *(
                str(entry.statuses.get(status.value, 0))
                for status in (RunStatus.ENQUEUED, RunStatus.RUNNING, RunStatus.WAITING)
            ),
            _when(entry.oldest),
            Text(workflows),
        ]
        if current is not None:
            cells.append(claimed(entry.code_version) or "")
        table.add_row(*cells)
    _print_wide(table)


# -- worker ----------------------------------------------------------------------------------
