"""``aevos replays``: replay a model's kept cases with a candidate version, and read replays.

``start`` only enqueues: a worker re-decides the cases (``aevos worker`` with an app that
builds ``app.replays``). Like ``aevos models``, it talks to the database directly, so a
replay is started as ``cli:<user>``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..records.replay import Replay
from .common import _app, _emit_json, _json_option, _reports_errors, _when, out
from .models import JsonFlag, TenantOption, _actor

replays_cli = typer.Typer(
    help="Replay kept cases with a candidate model version; show and list replays.",
    no_args_is_help=True,
)


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print(replay: Replay) -> None:
    outcome = {True: "passed", False: "failed", None: "-"}[replay.passed]
    out.print(
        f"{replay.replay_id}  {replay.model}@{replay.version}  {replay.status}  "
        f"(champion {replay.champion if replay.champion is not None else '-'}, "
        f"passed: {outcome}, started {_when(replay.started_at)})",
        markup=False,
        soft_wrap=True,
    )
    if replay.reason:
        out.print(f"  reason: {replay.reason}", markup=False, soft_wrap=True)
    for key, value in replay.figures.items():
        out.print(f"  {key}: {_figure(value)}", markup=False)


@replays_cli.command("start")
@_reports_errors
def replays_start(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The model.")],
    version: Annotated[int, typer.Argument(metavar="VERSION", help="The candidate version.")],
    since: Annotated[
        float | None, typer.Option("--since", help="Only cases kept since (epoch seconds).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="The newest cases, at most.")] = 1000,
    rate: Annotated[float, typer.Option("--rate", help="Cases per second, at most.")] = 20.0,
    criteria: Annotated[
        str | None,
        typer.Option(
            "--criteria",
            help='A JSON object, e.g. \'{"min_cases": 100, "min_agreement": 0.9}\'.',
        ),
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Enqueue a replay of NAME@VERSION over NAME's kept cases; prints its id."""
    chosen = None if criteria is None else _json_option("--criteria", criteria, dict)
    with _app(ctx) as app:
        replay_id = app.replays.start(
            name,
            version,
            tenant=tenant,
            actor=_actor(),
            since=since,
            limit=limit,
            rate=rate,
            criteria=chosen,
        )
        replay = app.replays.get(replay_id, tenant=tenant)
    if as_json:
        _emit_json(replay.to_dict(), indent=2)
        return
    out.print(replay.replay_id, markup=False)


@replays_cli.command("show")
@_reports_errors
def replays_show(
    ctx: typer.Context,
    replay_id: Annotated[str, typer.Argument(metavar="REPLAY_ID", help="The replay.")],
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Show one replay: its status, the reason, and its figures."""
    with _app(ctx) as app:
        replay = app.replays.get(replay_id, tenant=tenant)
    if as_json:
        _emit_json(replay.to_dict(), indent=2)
        return
    _print(replay)


@replays_cli.command("list")
@_reports_errors
def replays_list(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The model.")],
    version: Annotated[
        int | None, typer.Option("--version", help="Only the replays of this version.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 20,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """NAME's replays, newest first."""
    with _app(ctx) as app:
        found = app.replays.list(name, tenant=tenant, version=version, limit=limit)
    if as_json:
        _emit_json([r.to_dict() for r in found], indent=2)
        return
    for replay in found:
        figures = replay.figures
        out.print(
            f"{replay.replay_id}  {replay.model}@{replay.version}  {replay.status:<12} "
            f"{_when(replay.started_at)}  cases {_figure(figures.get('cases'))}  "
            f"agreement {_figure(figures.get('agreement'))}",
            markup=False,
            soft_wrap=True,
        )
