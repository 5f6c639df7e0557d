"""``aevos audit``: verify, export and inspect the hash-chained audit log.

``verify`` and ``verify-file`` exit 0 when the chain is intact and 1 when it is not (a table
names each record and what happened to it); errors exit 2 like every command. The audit key
comes from ``AEVOS_AUDIT_KEY``, as for the processes that write the log.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..audit import KEY_ENV, AuditHead, AuditLog, VerifyReport, key_from_env, verify_jsonl
from ..storage import open_store
from .common import (
    CliError,
    _check_url,
    _emit_json,
    _preview,
    _print_wide,
    _reports_errors,
    _state,
    _when,
    err,
    out,
)

audit_cli = typer.Typer(
    help="Verify, export and inspect the tamper-evident audit log.", no_args_is_help=True
)

# Below this many records verification takes well under a second: no progress bar.
_PROGRESS_FROM = 200_000

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant whose chain to use.")]
AnchorOption = Annotated[
    str | None,
    typer.Option(
        "--anchor",
        help="SEQ:HASH from an earlier `aevos audit head`: the chain must still reach it.",
    ),
]


@contextmanager
def _log(ctx: typer.Context) -> Iterator[AuditLog]:
    url = _state(ctx).url
    _check_url(url)
    # Reading the log never migrates: an auditor's command must not change the schema.
    store = open_store(url, migrate=False)
    try:
        yield AuditLog.from_env(store)
    finally:
        store.close()


def _anchor(text: str | None) -> AuditHead | None:
    if text is None:
        return None
    try:
        return AuditHead.parse(text)
    except ValueError as exc:
        raise CliError("bad_anchor", f"--anchor {text[:80]!r}: {exc}") from None


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[int], None] | None]:
    if total < _PROGRESS_FROM:
        yield None
        return
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda done: progress.update(task, completed=done)


def _report(report: VerifyReport, where: str) -> None:
    algorithm = "HMAC-SHA256" if report.keyed else "SHA-256"
    if report.ok:
        out.print(
            f"{where}: {report.checked:,} records verified, chain intact ({algorithm})",
            markup=False,
        )
        if report.last is not None:
            out.print(f"last record: {report.last}", markup=False, soft_wrap=True)
        return
    table = Table(
        title=f"{where}: {len(report.problems) + report.omitted} problem(s) in "
        f"{report.checked:,} records ({algorithm})",
        title_justify="left",
        box=box.SIMPLE,
    )
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("problem", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for problem in report.problems:
        table.add_row(str(problem.seq), Text(problem.kind, "red"), Text(problem.detail))
    _print_wide(table)
    if report.omitted:
        out.print(f"... and {report.omitted} more not listed", markup=False)
    first = report.problems[0] if report.problems else None
    if not report.keyed and first and first.seq == 1 and "hash does not match" in first.detail:
        err.print(
            f"verified without a key: if the log is written with {KEY_ENV}, set it here too",
            markup=False,
        )


@audit_cli.command("verify")
@_reports_errors
def audit_verify(
    ctx: typer.Context, tenant: TenantOption = "default", anchor: AnchorOption = None
) -> None:
    """Check a tenant's chain: exit 0 if intact, 1 naming every record that is not."""
    mark = _anchor(anchor)
    with _log(ctx) as log:
        head = log.head(tenant)
        with _progress(head.seq if head else 0, "verifying") as progress:
            report = log.verify(tenant, anchor=mark, progress=progress)
    _report(report, f"tenant {tenant!r}")
    if not report.ok:
        raise typer.Exit(1)


@audit_cli.command("head")
@_reports_errors
def audit_head(ctx: typer.Context, tenant: TenantOption = "default") -> None:
    """Print SEQ:HASH of the chain's end; keep it elsewhere and pass it to verify --anchor."""
    with _log(ctx) as log:
        head = log.head(tenant)
    if head is None:
        err.print(f"tenant {tenant!r} has no audit records", markup=False)
        return
    typer.echo(str(head))


@audit_cli.command("export")
@_reports_errors
def audit_export(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    output: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of stdout.", dir_okay=False)
    ] = None,
    after: Annotated[int, typer.Option("--after", min=0, help="Only records after this seq.")] = 0,
) -> None:
    """Write the chain as JSON Lines (each record with its seq, prev_hash and hash)."""
    with _log(ctx) as log:
        if output is None:
            count = log.export_jsonl(tenant, sys.stdout, after_seq=after)
            sys.stdout.flush()
        else:
            with output.open("w", encoding="utf-8", newline="\n") as file:
                count = log.export_jsonl(tenant, file, after_seq=after)
    where = "stdout" if output is None else str(output)
    err.print(f"exported {count} record(s) of tenant {tenant!r} to {where}", markup=False)


@audit_cli.command("show")
@_reports_errors
def audit_show(
    ctx: typer.Context,
    tenant: TenantOption = "default",
    run_id: Annotated[str | None, typer.Option("--run-id", help="Only this run's.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action.")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor's.")] = None,
    after: Annotated[int, typer.Option("--after", min=0, help="Records after this seq.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N records.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Records in seq order (page with --after)."""
    with _log(ctx) as log:
        records = log.query(
            tenant, run_id=run_id, action=action, actor=actor, after_seq=after, limit=limit
        )
    if as_json:
        for record in records:
            _emit_json(record.to_dict())
        return
    table = Table(
        title=f"{len(records)} audit record(s) of tenant {tenant!r}",
        title_justify="left",
        box=box.SIMPLE,
    )
    for name in ("seq", "at", "actor", "action", "subject", "run", "data"):
        table.add_column(name, overflow="fold", no_wrap=name in ("seq", "at"))
    for record in records:
        table.add_row(
            str(record.seq),
            _when(record.at),
            Text(record.actor),
            Text(record.action),
            Text(record.subject or "-"),
            Text(record.run_id or "-"),
            Text(_preview(dict(record.data), 80)),
        )
    _print_wide(table)


@audit_cli.command("verify-file")
@_reports_errors
def audit_verify_file(
    file: Annotated[str, typer.Argument(help="An `aevos audit export` file, or - for stdin.")],
    partial: Annotated[
        bool, typer.Option("--partial", help="The export began after some seq (--after).")
    ] = False,
    anchor: AnchorOption = None,
) -> None:
    """Verify an exported chain without the database: exit 0 if intact, 1 if not."""
    mark = _anchor(anchor)
    secret = key_from_env()
    if file == "-":
        report = verify_jsonl(sys.stdin, secret, partial=partial, anchor=mark)
    else:
        path = Path(file)
        if not path.is_file():
            raise CliError("file_not_found", f"no such file: {file}")
        with path.open(encoding="utf-8", errors="surrogateescape", newline="\n") as lines:
            report = verify_jsonl(lines, secret, partial=partial, anchor=mark)
    _report(report, file)
    if not report.ok:
        raise typer.Exit(1)
