"""``aevos tasks``: list and inspect human tasks, and escalate those past their SLA now.

People decide tasks in the console or over the API (with their own token, so that the
decision is theirs); the CLI is the operator's view of the inbox.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..records.task import Task, TaskStatus, ranked_to_json
from .common import CliError, _app, _emit_json, _preview, _print_wide, _reports_errors, _when, out

tasks_cli = typer.Typer(
    help="List and inspect human tasks; escalate overdue ones.", no_args_is_help=True
)
TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant whose tasks to show.")]


def _statuses(values: list[str] | None) -> list[TaskStatus] | None:
    if not values:
        return None
    parsed: list[TaskStatus] = []
    for value in values:
        try:
            parsed.append(TaskStatus(value.upper()))
        except ValueError:
            known = ", ".join(s.value for s in TaskStatus)
            raise CliError("bad_option", f"--status {value!r} is not one of {known}") from None
    return parsed


def _task_dict(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "run_id": task.run_id,
        "workflow": task.workflow,
        "title": task.title,
        "queue": task.queue,
        "role": task.role,
        "status": task.status.value,
        "priority": task.priority,
        "form": task.form.to_list(),
        "case": task.case,
        "suggestion": task.suggestion,
        "confidence": task.confidence,
        "ranked": ranked_to_json(task.ranked),
        "model_version": task.model_version,
        "assignee": task.assignee,
        "due_at": task.due_at,
        "escalated_at": task.escalated_at,
        "escalation_level": task.escalation_level,
        "escalations": task.escalations,
        "result": task.result,
        "submitted_by": task.submitted_by,
        "submitted_at": task.submitted_at,
        "created_at": task.created_at,
    }


@tasks_cli.command("list")
@_reports_errors
def tasks_list(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only these statuses (repeatable).")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N tasks.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The tenant's tasks in inbox order: highest priority first, then oldest."""
    wanted = _statuses(status)
    with _app(ctx) as app:
        tasks = app.tasks.list(tenant=tenant, status=wanted, queue=queue, limit=limit)
    if as_json:
        for task in tasks:
            _emit_json(_task_dict(task))
        return
    table = Table(title=f"{len(tasks)} task(s) of {tenant}", title_justify="left", box=box.SIMPLE)
    for column in ("id", "title", "queue", "status", "assignee", "suggestion", "due"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        due = _when(task.due_at) + (
            f" (escalated {task.escalation_level}/{task.escalations})" if task.escalated else ""
        )
        table.add_row(
            task.task_id,
            task.title,
            task.queue,
            task.status.value,
            task.assignee or "-",
            _preview(task.suggestion, 40) if task.suggestion else "-",
            due,
        )
    _print_wide(table)


@tasks_cli.command("show")
@_reports_errors
def tasks_show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(help="The task's id (<run_id>.<seq>).")],
    tenant: TenantOption = "default",
) -> None:
    """One task as JSON: its case, form, suggestion, and decision if any."""
    with _app(ctx) as app:
        task = app.tasks.get(task_id, tenant=tenant)
    _emit_json(_task_dict(task), indent=2)


@tasks_cli.command("escalate")
@_reports_errors
def tasks_escalate(ctx: typer.Context) -> None:
    """Escalate every task past its SLA now (workers also do it every few seconds)."""
    with _app(ctx) as app:
        escalated = app.tasks.escalate_overdue()
    for task in escalated:
        out.print(f"escalated {task.task_id} to queue {task.queue}", markup=False)
    out.print(f"{len(escalated)} task(s) escalated", markup=False)
