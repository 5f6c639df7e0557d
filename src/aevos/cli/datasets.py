"""``aevos datasets``: snapshot, list, show and export dataset versions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from .common import CliError, _app, _emit_json, _print_wide, _reports_errors, _when, out
from .models import _actor

datasets_cli = typer.Typer(
    help="Snapshot, list, show and export dataset versions.", no_args_is_help=True
)
TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant of the datasets.")]


@datasets_cli.command("snapshot")
@_reports_errors
def datasets_snapshot(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model whose labelled cases to take.")],
    tenant: TenantOption = "default",
    until: Annotated[
        float | None, typer.Option("--until", help="Only labels known then (epoch seconds).")
    ] = None,
) -> None:
    """Take the current labels of a model's cases as a version (the same rows: the same
    version); prints its digest."""
    with _app(ctx) as app:
        version = app.datasets.snapshot(model, tenant=tenant, until=until, actor=_actor())
    _emit_json(version.info.to_dict(), indent=2)


@datasets_cli.command("list")
@_reports_errors
def datasets_list(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Versions, newest first."""
    with _app(ctx) as app:
        found = app.datasets.list(tenant=tenant, model=model, limit=limit)
    if as_json:
        for info in found:
            _emit_json(info.to_dict())
        return
    table = Table(
        title=f"{len(found)} dataset version(s) of {tenant}", title_justify="left", box=box.SIMPLE
    )
    for column in ("digest", "model", "rows", "unbiased", "sources", "created", "by"):
        table.add_column(column, overflow="fold")
    for info in found:
        table.add_row(
            info.digest,
            info.model,
            str(info.rows),
            str(info.unbiased),
            ", ".join(f"{k} {v}" for k, v in info.sources.items()),
            _when(info.created_at),
            info.created_by,
        )
    _print_wide(table)


@datasets_cli.command("show")
@_reports_errors
def datasets_show(
    ctx: typer.Context,
    digest: Annotated[str, typer.Argument(help="The version's digest.")],
    tenant: TenantOption = "default",
) -> None:
    """One version as JSON: its lineage summary (rows, runs, people, sources)."""
    with _app(ctx) as app:
        info = app.datasets.info(digest, tenant=tenant)
    _emit_json(info.to_dict(), indent=2)


@datasets_cli.command("export")
@_reports_errors
def datasets_export(
    ctx: typer.Context,
    digest: Annotated[str, typer.Argument(help="The version's digest.")],
    tenant: TenantOption = "default",
    format: Annotated[
        str, typer.Option("--format", help="csv, or parquet (needs the parquet extra).")
    ] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file to write (default stdout).")
    ] = None,
    text: Annotated[
        bool, typer.Option("--text", help="Add each case's kept input as a last column.")
    ] = False,
    text_field: Annotated[
        str | None, typer.Option("--text-field", help="The input's field that holds the text.")
    ] = None,
) -> None:
    """Write a version's rows as CSV or Parquet."""
    if output is None and format == "parquet" and sys.stdout.isatty():
        raise CliError("bad_option", "Parquet is binary: give --output FILE")
    with _app(ctx) as app:
        chunks = app.datasets.export(
            digest, tenant=tenant, format=format, text=text, text_field=text_field
        )
        if output is None:
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        try:
            with output.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
        except OSError as exc:
            raise CliError("bad_file", f"cannot write {output}: {exc.strerror}") from None
    out.print(f"wrote {output}", markup=False)
