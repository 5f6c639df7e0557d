"""``aevos schedules``: list the schedules, pause and resume one, trigger a run now.

Schedules are declared in code (``app.schedule(...)``); their state lives in the database,
so ``list``, ``pause`` and ``resume`` work on the database alone. ``--app module:app``
also stores the app's declared schedules first (those never ticked yet), and ``trigger``
needs it: a run is started with the arguments the code declares. Changes are audited as
``cli:<user>``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..schedules import ScheduleView
from .common import _app, _emit_json, _reports_errors, _when, out
from .models import JsonFlag, _actor

schedules_cli = typer.Typer(
    help="Schedules: workflows started on cron expressions (list, pause, resume, trigger).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The schedule.")]
AppRef = Annotated[
    str | None,
    typer.Option("--app", help="module:attribute of the Aevos app declaring the schedules."),
]


def _line(view: ScheduleView) -> str:
    state = view.state
    status = "paused" if state.paused else "active"
    where = "" if view.declared else "  (not declared by this app)"
    return (
        f"{state.name:<24} {status:<7} {state.cron!r} {state.timezone}  -> {state.workflow}  "
        f"next {_when(None if state.paused else state.next_tick)}  "
        f"catch-up {state.catch_up}  tenant {state.tenant}{where}"
    )


@schedules_cli.command("list")
@_reports_errors
def schedules_list(
    ctx: typer.Context,
    app_ref: AppRef = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the stored schedules with their state and next tick."""
    with _app(ctx, app_ref) as app:
        views = app.schedules.list(tenant)
    if as_json:
        _emit_json([v.to_json() for v in views], indent=2)
        return
    if not views:
        out.print("no schedules", markup=False)
    for view in views:
        out.print(_line(view), markup=False, soft_wrap=True)


@schedules_cli.command("pause")
@_reports_errors
def schedules_pause(
    ctx: typer.Context, name: NameArg, app_ref: AppRef = None, as_json: JsonFlag = False
) -> None:
    """Pause NAME: its ticks start nothing until it is resumed."""
    with _app(ctx, app_ref) as app:
        view = app.schedules.pause(name, actor=_actor())
    if as_json:
        _emit_json(view.to_json(), indent=2)
        return
    out.print(f"{name}: paused", markup=False)


@schedules_cli.command("resume")
@_reports_errors
def schedules_resume(
    ctx: typer.Context, name: NameArg, app_ref: AppRef = None, as_json: JsonFlag = False
) -> None:
    """Resume NAME; ticks count from now (those of the pause are not caught up)."""
    with _app(ctx, app_ref) as app:
        view = app.schedules.resume(name, actor=_actor())
    if as_json:
        _emit_json(view.to_json(), indent=2)
        return
    out.print(f"{name}: resumed, next tick {_when(view.state.next_tick)}", markup=False)


@schedules_cli.command("trigger")
@_reports_errors
def schedules_trigger(
    ctx: typer.Context,
    name: NameArg,
    app_ref: Annotated[
        str, typer.Option("--app", help="module:attribute of the Aevos app declaring NAME.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Start a run of NAME now, outside its cron; prints the run id."""
    with _app(ctx, app_ref) as app:
        record = app.schedules.trigger(name, actor=_actor())
    if as_json:
        _emit_json(record.to_json(), indent=2)
        return
    out.print(record.run_id or "", markup=False)
