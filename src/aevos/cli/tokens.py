"""``aevos tokens``: create, list and revoke API tokens.

This command talks to the database directly, so whoever runs it already holds the keys to
everything; it acts as a local administrator of the named tenant (audited as
``cli:<user>``), which is how the first admin token of a tenant is made.
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..identity import Principal, Role, check_tenant
from .common import _app, _emit_json, _print_wide, _reports_errors, _when, err, out

tokens_cli = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant the token belongs to.")]


def _local_admin(tenant: str) -> Principal:
    return Principal("local", check_tenant(tenant), Role.ADMIN, f"cli:{getpass.getuser()}")


@tokens_cli.command("create")
@_reports_errors
def tokens_create(
    ctx: typer.Context,
    tenant: TenantOption,
    role: Annotated[
        str, typer.Option("--role", help="admin, operator, reviewer, auditor, service.")
    ],
    name: Annotated[str, typer.Option("--name", help="Who or what uses it.")],
    expires_in: Annotated[
        float | None, typer.Option("--expires-in", help="Seconds until it expires.")
    ] = None,
) -> None:
    """Create a token; it is printed once, on stdout, and never stored or shown again."""
    with _app(ctx) as app:
        issued = app.identity.create_token(
            tenant=tenant,
            role=role,
            name=name,
            created_by=_local_admin(tenant).actor,
            expires_in=expires_in,
        )
    err.print(
        f"created token {issued.principal.token_id} ({issued.principal.role.value} "
        f"of {tenant}); keep it secret, it is not shown again",
    )
    out.print(issued.token, soft_wrap=True)


@tokens_cli.command("list")
@_reports_errors
def tokens_list(
    ctx: typer.Context,
    tenant: TenantOption,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The tenant's tokens (never their secrets)."""
    with _app(ctx) as app:
        infos = app.identity.list_tokens(check_tenant(tenant))
    if as_json:
        for info in infos:
            _emit_json({**info.__dict__, "role": info.role.value})
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("token id", "name", "role", "created", "expires", "revoked", "last used"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.token_id,
            Text(info.name),  # a name is free text: never read as Rich markup
            info.role.value,
            _when(info.created_at),
            _when(info.expires_at),
            _when(info.revoked_at),
            _when(info.last_used_at),
        )
    _print_wide(table)


@tokens_cli.command("revoke")
@_reports_errors
def tokens_revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id (not its secret).")],
    tenant: TenantOption,
) -> None:
    """Revoke a token at once; requests carrying it get 401 from then on."""
    with _app(ctx) as app:
        app.identity.revoke(token_id, by=_local_admin(tenant))
    out.print(f"revoked {token_id}")
