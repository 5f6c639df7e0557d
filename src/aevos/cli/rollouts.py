"""``aevos rollouts``: list, show, start, pause, resume, abort and promote rollouts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from .common import CliError, _app, _emit_json, _print_wide, _reports_errors, _when
from .models import _actor

rollouts_cli = typer.Typer(
    help="Roll candidate model versions out step by step: list, show, start, pause, resume, "
    "abort, promote.",
    no_args_is_help=True,
)
TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant of the rollouts.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(
            "invalid_rollout", "--steps is a comma-separated list of integer shares, e.g. 0,5,100"
        ) from None


@rollouts_cli.command("list")
@_reports_errors
def rollouts_list(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    active: Annotated[
        bool | None, typer.Option("--active/--ended", help="Only active (or ended) ones.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Rollouts, newest first."""
    with _app(ctx) as app:
        found = app.rollouts.list(tenant=tenant, model=model, active=active, limit=limit)
    if as_json:
        for rollout in found:
            _emit_json(rollout.to_dict())
        return
    table = Table(
        title=f"{len(found)} rollout(s) of {tenant}", title_justify="left", box=box.SIMPLE
    )
    for column in ("id", "model", "candidate", "champion", "step", "state", "deadline", "reason"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(
            r.rollout_id,
            r.model,
            str(r.version),
            "-" if r.champion is None else str(r.champion),
            f"{r.step + 1}/{len(r.steps)} {r.step_name}",
            r.state,
            "-" if r.deadline is None else _when(r.deadline),
            r.reason[:80],
        )
    _print_wide(table)


@rollouts_cli.command("show")
@_reports_errors
def rollouts_show(
    ctx: typer.Context,
    rollout_id: Annotated[str, typer.Argument(help="The rollout's id.")],
    tenant: TenantOption = "default",
) -> None:
    """One rollout as JSON, with its history of transitions."""
    with _app(ctx) as app:
        rollout = app.rollouts.get(rollout_id, tenant=tenant)
        history = app.rollouts.history(rollout_id, tenant=tenant)
    _emit_json({**rollout.to_dict(), "history": [t.to_dict() for t in history]}, indent=2)


@rollouts_cli.command("start")
@_reports_errors
def rollouts_start(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.")],
    version: Annotated[int, typer.Argument(help="The candidate version.")],
    tenant: TenantOption = "default",
    steps: Annotated[
        str, typer.Option("--steps", help="Shares in percent; 0 is shadow, the last 100.")
    ] = "0,5,25,50,100",
    step_minutes: Annotated[
        float, typer.Option("--step-minutes", help="Each step's deadline, in minutes.")
    ] = 10.0,
    replay: Annotated[bool, typer.Option("--replay", help="Replay kept cases first.")] = False,
    policy: Annotated[str, typer.Option("--policy", help="The promotion policy.")] = (
        "promotion-gate"
    ),
) -> None:
    """Start rolling VERSION of MODEL out (workers advance it: ``aevos worker``); prints it."""
    with _app(ctx) as app:
        rollout = app.rollouts.start(
            model,
            version,
            tenant=tenant,
            actor=_actor(),
            steps=_steps(steps),
            step_minutes=step_minutes,
            replay=replay,
            policy=policy,
        )
    _emit_json(rollout.to_dict(), indent=2)


def _act(action: str) -> None:
    def command(
        ctx: typer.Context,
        rollout_id: Annotated[str, typer.Argument(help="The rollout's id.")],
        tenant: TenantOption = "default",
        reason: ReasonOption = "",
        as_json: JsonOption = False,
    ) -> None:
        with _app(ctx) as app:
            act = getattr(app.rollouts, action)
            rollout = act(rollout_id, tenant=tenant, actor=_actor(), reason=reason)
        if as_json:
            _emit_json(rollout.to_dict(), indent=2)
        else:
            typer.echo(f"{rollout.rollout_id}: {rollout.state} ({rollout.reason})")

    command.__doc__ = {
        "pause": "Hold a rollout at its step (its traffic split stays) until resumed.",
        "resume": "Continue a paused rollout: its step starts a fresh window and deadline.",
        "abort": "End a rollout: all traffic back to the champion, nothing promoted.",
        "promote": "Promote the candidate now, through the rollout's promotion policy.",
    }[action]
    rollouts_cli.command(action)(_reports_errors(command))


for _action in ("pause", "resume", "abort", "promote"):
    _act(_action)
