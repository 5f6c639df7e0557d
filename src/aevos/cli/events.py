"""``aevos events dead-letters``: list, show and replay events that failed validation or
mapping. Replaying needs the application that declares the event's source (``--app``), so
that the fixed mapping or workflow is the one used; the replay is audited as ``cli:<user>``.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from ..events.intake import DeadLetter, DeadLetterStatus
from .common import _app, _emit_json, _reports_errors, _when, out
from .models import JsonFlag, _actor

events_cli = typer.Typer(help="Events received and their dead letters.", no_args_is_help=True)
dead_letters_cli = typer.Typer(
    help="Events that failed validation or mapping: list, show, replay.", no_args_is_help=True
)
events_cli.add_typer(dead_letters_cli, name="dead-letters")

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant of the events.")]
AppOption = Annotated[
    str | None,
    typer.Option("--app", help="module:attribute of the app that declares the sources."),
]


def _json(letter: DeadLetter) -> dict[str, object]:
    value = dataclasses.asdict(letter)
    payload = value.pop("payload")
    if isinstance(payload, bytes):
        value["payload"] = payload.decode("utf-8", "replace")
    value["channel"] = letter.channel.value
    value["status"] = letter.status.value
    return value


@dead_letters_cli.command("list")
@_reports_errors
def dead_letters_list(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    all_: Annotated[bool, typer.Option("--all", help="REPLAYED ones too.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """The tenant's dead letters (DEAD unless --all), newest first."""
    status = None if all_ else [DeadLetterStatus.DEAD]
    with _app(ctx) as app:
        letters = app.intake.list(tenant, status=status, limit=limit)
    if as_json:
        _emit_json([_json(letter) for letter in letters])
        return
    for letter in letters:
        out.print(
            f"{letter.id}  {letter.status.value}  {letter.channel.value}:{letter.source}  "
            f"{letter.event_id}  {letter.code}  {_when(letter.created_at)}",
            markup=False,
            soft_wrap=True,
        )


@dead_letters_cli.command("show")
@_reports_errors
def dead_letters_show(
    ctx: typer.Context,
    letter_id: Annotated[int, typer.Argument(metavar="ID")],
    tenant: TenantOption = "default",
    payload: Annotated[bool, typer.Option("--payload", help="Print the body too.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """One dead letter: its reason, where it came from, its replays (and its body)."""
    with _app(ctx) as app:
        letter = app.intake.get(tenant, letter_id, payload=payload)
    if as_json:
        _emit_json(_json(letter), indent=2)
        return
    value = _json(letter)
    for key, item in value.items():
        out.print(f"{key}: {item}", markup=False, soft_wrap=True)


@dead_letters_cli.command("replay")
@_reports_errors
def dead_letters_replay(
    ctx: typer.Context,
    letter_ids: Annotated[list[int], typer.Argument(metavar="ID...")],
    app_ref: AppOption = None,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Replay dead letters through their sources; exit 1 if any failed again."""
    with _app(ctx, app_ref) as app:
        outcomes = app.intake.replay(tenant, letter_ids, actor=_actor())
    if as_json:
        _emit_json([dataclasses.asdict(o) for o in outcomes])
    else:
        for o in outcomes:
            text = f"run {o.run_id}" if o.replayed else f"failed again: {o.reason}"
            out.print(f"{o.id}  {text}", markup=False, soft_wrap=True)
    if not all(o.replayed for o in outcomes):
        raise typer.Exit(1)
