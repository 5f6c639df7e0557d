"""``aevos cases``: list, show and forget kept cases (what models and people saw).

Each command goes through :class:`aevos.access.Access`, like the HTTP API: with ``--token``
(or ``AEVOS_TOKEN``) as that token's principal, so its role's permissions apply; without
one as the local administrator (``cli:<login>``) of ``--tenant``, whose access to the
database is already complete. Forgetting is audited under that actor.
"""

from __future__ import annotations

import base64
import getpass
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..app import Aevos
from ..cases import KeptCase
from ..identity import Principal, Role, check_tenant
from .common import _app, _emit_json, _print_wide, _reports_errors, _when, out

cases_cli = typer.Typer(
    help="List, show and forget kept cases (model and task inputs, as kept).",
    no_args_is_help=True,
)
TenantOption = Annotated[
    str, typer.Option("--tenant", help="The tenant (without --token; a token names its own).")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="AEVOS_TOKEN",
        show_envvar=True,
        help="Act as this API token's principal (its role's permissions apply).",
    ),
]


def _principal(app: Aevos, token: str | None, tenant: str) -> Principal:
    if token is not None:
        return app.access.authenticate(token, tenant_hint=tenant)
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no login name in this environment (some containers)
        login = "unknown"
    return Principal("local", check_tenant(tenant), Role.ADMIN, f"cli:{login}")


def _case_dict(case: KeptCase, *, with_input: bool) -> dict[str, Any]:
    data = case.to_dict(include_input=with_input)
    if with_input:
        data["input_encoding"] = "json"
        if isinstance(case.input, bytes):
            data["input"] = base64.b64encode(case.input).decode()
            data["input_encoding"] = "base64"
    return data


@cases_cli.command("list")
@_reports_errors
def cases_list(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    token: TokenOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model's.")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's.")] = None,
    since: Annotated[
        float | None, typer.Option("--since", help="Kept at or after (epoch seconds).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most N cases (1 to 1000).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The tenant's kept cases, oldest first (without their inputs)."""
    with _app(ctx) as app:
        principal = _principal(app, token, tenant)
        cases = app.access.cases.list(
            principal, model=model, run_id=run_id, since=since, limit=limit
        )
    if as_json:
        for case in cases:
            _emit_json(_case_dict(case, with_input=False))
        return
    table = Table(
        title=f"{len(cases)} case(s) of {principal.tenant}", title_justify="left", box=box.SIMPLE
    )
    for column in ("case", "kind", "model", "run", "kept", "expires"):
        table.add_column(column, overflow="fold")
    for case in cases:
        table.add_row(
            case.case_id,
            case.kind,
            "-" if case.model is None else f"{case.model}@{case.version}",
            case.run_id or "-",
            _when(case.created_at),
            _when(case.expires_at),
        )
    _print_wide(table)


@cases_cli.command("show")
@_reports_errors
def cases_show(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument(help="A call_id, or task:<task_id>.")],
    tenant: TenantOption = "default",
    token: TokenOption = None,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Resolve PII tokens (needs pii:reveal; audited).")
    ] = False,
) -> None:
    """One kept case as JSON, with its input as kept (tokenised)."""
    with _app(ctx) as app:
        principal = _principal(app, token, tenant)
        case = app.access.cases.get(principal, case_id, reveal=reveal)
    _emit_json(_case_dict(case, with_input=True), indent=2)


@cases_cli.command("forget")
@_reports_errors
def cases_forget(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    token: TokenOption = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Every case of this run.")] = None,
    subject: Annotated[
        str | None,
        typer.Option("--subject", help="Every case naming this data subject (tok_...)."),
    ] = None,
) -> None:
    """Delete kept cases of one run, or of one data subject (audited)."""
    with _app(ctx) as app:
        principal = _principal(app, token, tenant)
        deleted = app.access.cases.forget(principal, run_id=run_id, subject=subject)
    out.print(f"{deleted} case(s) forgotten", markup=False)
