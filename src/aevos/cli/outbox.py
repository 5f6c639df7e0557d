"""``aevos outbox``: the messages runs published, and DEAD ones sent again.

Like ``aevos cases``: through :class:`aevos.access.Access`, with ``--token`` as that
token's principal or, without one, as the local administrator of ``--tenant``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..storage.outbox import OutboxRow
from .cases import TenantOption, TokenOption, _principal
from .common import _app, _emit_json, _print_wide, _reports_errors, _when, out

outbox_cli = typer.Typer(
    help="List the messages runs published (and why DEAD ones failed); requeue DEAD ones.",
    no_args_is_help=True,
)


def _row_dict(row: OutboxRow) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "subject": row.subject,
        "run_id": row.run_id,
        "status": row.status,
        "attempts": row.attempts,
        "destination": row.destination,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "sent_at": row.sent_at,
    }


@outbox_cli.command("list")
@_reports_errors
def outbox_list(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    token: TokenOption = None,
    status: Annotated[str | None, typer.Option("--status", help="PENDING, SENT or DEAD.")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most N messages (1 to 1000).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The tenant's outbox messages, oldest first, with the reason of each failure."""
    with _app(ctx) as app:
        principal = _principal(app, token, tenant)
        rows = app.access.outbox.list(
            principal, status=status.upper() if status else None, run_id=run_id, limit=limit
        )
    if as_json:
        for row in rows:
            _emit_json(_row_dict(row))
        return
    table = Table(
        title=f"{len(rows)} message(s) of {principal.tenant}", title_justify="left", box=box.SIMPLE
    )
    for column in ("message", "subject", "status", "attempts", "written", "reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.message_id,
            row.subject,
            row.status,
            str(row.attempts),
            _when(row.created_at),
            row.last_error or "",
        )
    _print_wide(table)


@outbox_cli.command("requeue")
@_reports_errors
def outbox_requeue(
    ctx: typer.Context,
    message_ids: Annotated[list[str], typer.Argument(help="Ids of DEAD messages.")],
    tenant: TenantOption = "default",
    token: TokenOption = None,
) -> None:
    """Send DEAD messages again, once their cause is fixed (audited)."""
    with _app(ctx) as app:
        principal = _principal(app, token, tenant)
        count = app.access.outbox.requeue(principal, message_ids)
    out.print(f"{count} message(s) requeued", markup=False)
