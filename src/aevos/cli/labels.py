"""``aevos labels``: report late ground truth, list labels and their conflicts.

The local CLI has database access, so it acts as a local admin (audited as
``cli:<user>``). A label for a case the tenant does not have is refused with
``case_not_found`` and the refusal is audited, as over HTTP.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..errors import AevosError
from ..evolution.labels import MAX_BATCH
from .common import CliError, _app, _emit_json, _print_wide, _reports_errors, _when, out
from .models import _actor

labels_cli = typer.Typer(
    help="Report late ground truth; list labels and their conflicts.", no_args_is_help=True
)
TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant of the cases.")]
SOURCES = ("ground_truth", "review", "qa")


def _value(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError("bad_json", f"LABEL is not valid JSON: {exc.msg}") from None


@labels_cli.command("add")
@_reports_errors
def labels_add(
    ctx: typer.Context,
    case_id: Annotated[str, typer.Argument(help="The case: a call id, or task:<task_id>.")],
    label: Annotated[str, typer.Argument(help="The right answer (text, or JSON with --json).")],
    tenant: TenantOption = "default",
    source: Annotated[
        str, typer.Option("--source", help="ground_truth (default), review or qa.")
    ] = "ground_truth",
    unbiased: Annotated[
        bool, typer.Option("--unbiased", help="Labelled independently of the model's confidence.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="LABEL is JSON (a number, a boolean).")
    ] = False,
) -> None:
    """Record one label; ground truth outranks every reviewer's answer."""
    with _app(ctx) as app:
        record = app.labels.record(
            case_id,
            _value(label, as_json),
            tenant=tenant,
            source=source,
            unbiased=unbiased,
            actor=_actor(),
        )
        current = app.labels.effective(case_id, tenant=tenant)
    out.print(f"label {record.id} recorded for {case_id} ({record.source.value})", markup=False)
    if current is not None and current.id != record.id:
        out.print(
            f"the case keeps label {current.id} ({current.source.value}): a conflict is recorded",
            markup=False,
        )


@labels_cli.command("import")
@_reports_errors
def labels_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A CSV file with case_id and label columns.")],
    tenant: TenantOption = "default",
    source: Annotated[str, typer.Option("--source", help="Of every row.")] = "ground_truth",
    unbiased: Annotated[bool, typer.Option("--unbiased", help="Of every row.")] = False,
) -> None:
    """Record labels from a CSV file (header: case_id,label), in batches of 1,000: a batch
    with an unknown case or a bad label is refused whole, naming the row."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"case_id", "label"} <= set(reader.fieldnames):
                raise CliError("bad_file", f"{path} needs a header with case_id and label")
            rows = [
                {
                    "case_id": r["case_id"],
                    "label": r["label"],
                    "source": source,
                    "unbiased": unbiased,
                }
                for r in reader
            ]
    except OSError as exc:
        raise CliError("bad_file", f"cannot read {path}: {exc.strerror}") from None
    done = 0
    with _app(ctx) as app:
        for start in range(0, len(rows), MAX_BATCH):
            try:
                done += len(
                    app.labels.record_many(
                        rows[start : start + MAX_BATCH], tenant=tenant, actor=_actor()
                    )
                )
            except AevosError:
                out.print(f"{done} label(s) recorded before the refused batch", markup=False)
                raise
    out.print(f"{done} label(s) recorded", markup=False)


@labels_cli.command("list")
@_reports_errors
def labels_list(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    case_id: Annotated[str | None, typer.Option("--case", help="Only this case.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Labels, oldest first (superseded ones included)."""
    with _app(ctx) as app:
        found = app.labels.list(
            tenant=tenant, case_id=case_id, model=model, source=source, limit=limit
        )
    if as_json:
        for record in found:
            _emit_json(record.to_dict())
        return
    table = Table(title=f"{len(found)} label(s) of {tenant}", title_justify="left", box=box.SIMPLE)
    for column in ("id", "case", "model", "label", "source", "unbiased", "by", "at"):
        table.add_column(column, overflow="fold")
    for r in found:
        table.add_row(
            str(r.id),
            r.case_id,
            r.model_version or r.model or "-",
            str(r.label),
            r.source.value,
            "yes" if r.unbiased else "no",
            r.actor,
            _when(r.labelled_at),
        )
    _print_wide(table)


@labels_cli.command("conflicts")
@_reports_errors
def labels_conflicts(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Labels that disagreed with the label their case had, and which one holds."""
    with _app(ctx) as app:
        found = app.labels.conflicts(tenant=tenant, model=model, limit=limit)
    if as_json:
        for conflict in found:
            _emit_json(conflict.to_dict())
        return
    table = Table(
        title=f"{len(found)} conflict(s) of {tenant}", title_justify="left", box=box.SIMPLE
    )
    for column in ("case", "new", "earlier", "holds", "at"):
        table.add_column(column, overflow="fold")
    for c in found:
        table.add_row(
            c.case_id,
            f"{c.label} ({c.source.value}, #{c.label_id})",
            f"{c.other} ({c.other_source.value}, #{c.other_id})",
            f"#{c.winner_id}",
            _when(c.recorded_at),
        )
    _print_wide(table)
