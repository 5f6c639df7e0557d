"""``aevos audit``: verify, anchor, export and inspect the hash-chained audit log.

``verify`` and ``verify-file`` exit 0 when the chain is intact and 1 when it is not (a table
names each record and what happened to it); errors exit 2 like every command. The audit key
comes from ``AEVOS_AUDIT_KEY``, as for the processes that write the log; the anchor
directory from ``--anchor-dir`` or ``AEVOS_AUDIT_ANCHOR_DIR``, and the anchor keys from
``AEVOS_AUDIT_SIGNING_KEY`` / ``AEVOS_AUDIT_PUBLIC_KEY`` (or their ``_FILE`` variants).
``anchor`` exits 1 when it refuses to sign a chain that does not verify.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..audit import (
    ANCHOR_DIR_ENV,
    KEY_ENV,
    PUBLIC_KEY_ENV,
    SIGNING_KEY_ENV,
    AnchorScan,
    AuditAnchors,
    AuditHead,
    AuditLog,
    VerifyReport,
    anchor_all,
    key_from_env,
    verify_jsonl,
)
from ..errors import AuditAnchorRefusedError
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
        help="SEQ:HASH from an earlier `aevos audit head`: the chain must still reach it "
        "(instead of the newest signed anchor).",
    ),
]
AnchorDirOption = Annotated[
    Path | None,
    typer.Option(
        "--anchor-dir",
        envvar=ANCHOR_DIR_ENV,
        show_envvar=True,
        file_okay=False,
        help="The directory of signed anchors (write-once storage).",
    ),
]


@contextmanager
def _log(ctx: typer.Context, anchor_dir: Path | None = None) -> Iterator[AuditLog]:
    url = _state(ctx).url
    _check_url(url)
    # Reading the log never migrates: an auditor's command must not change the schema.
    store = open_store(url, migrate=False)
    try:
        log = AuditLog.from_env(store)
        log.anchors = AuditAnchors.from_env(directory=anchor_dir)
        yield log
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
        if report.anchor is not None:
            source = report.anchor_file or "the anchor given"
            out.print(
                f"anchor reached: seq {report.anchor.seq} as {source} records it",
                markup=False,
                soft_wrap=True,
            )
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
    ctx: typer.Context,
    tenant: TenantOption = "default",
    anchor: AnchorOption = None,
    anchor_dir: AnchorDirOption = None,
) -> None:
    """Check a tenant's chain, against its newest signed anchor when there is an anchor
    directory: exit 0 if intact, 1 naming every record (and anchor file) that is not."""
    mark = _anchor(anchor)
    with _log(ctx, anchor_dir) as log:
        head = log.head(tenant)
        with _progress(head.seq if head else 0, "verifying") as progress:
            report = log.verify(tenant, anchor=mark, progress=progress)
        anchors = log.anchors
    _report(report, f"tenant {tenant!r}")
    if mark is None and report.anchor is None:
        _no_anchor_note(tenant, anchors)
    if not report.ok:
        raise typer.Exit(1)


def _no_anchor_note(tenant: str, anchors: AuditAnchors | None) -> None:
    where = (
        f"no anchor directory ({ANCHOR_DIR_ENV} or --anchor-dir)"
        if anchors is None
        else f"no valid anchor of tenant {tenant!r} in {anchors.directory} yet"
    )
    err.print(
        f"{where}: records deleted from the end together with the head row would go "
        "unnoticed (see `aevos audit anchor`)",
        markup=False,
        soft_wrap=True,
    )


@audit_cli.command("anchor")
@_reports_errors
def audit_anchor(
    ctx: typer.Context,
    tenants: Annotated[
        list[str] | None,
        typer.Option("--tenant", help="Anchor this tenant's chain (repeatable; default all)."),
    ] = None,
    anchor_dir: AnchorDirOption = None,
) -> None:
    """Sign each chain's head into the anchor directory now (workers do it on a schedule).

    A head already anchored is not signed again. A chain that does not verify from its
    newest anchor on (truncated, rewritten) is refused: exit 1, naming the problem.
    """
    with _log(ctx, anchor_dir) as log:
        outcomes = anchor_all(log, tenants or None)
    refused = failed = False
    for outcome in outcomes:
        anchor = outcome.anchor
        if outcome.error is not None:
            refused |= isinstance(outcome.error, AuditAnchorRefusedError)
            failed |= not isinstance(outcome.error, AuditAnchorRefusedError)
            err.print(
                Text.assemble(
                    (f"{outcome.tenant}: error", "bold red"),
                    f" [{outcome.error.code}]: {outcome.error.message}",
                ),
                soft_wrap=True,
            )
        elif anchor is None:
            out.print(f"{outcome.tenant}: no audit records to anchor", markup=False)
        else:
            what = "anchored" if outcome.written else "already anchored"
            out.print(
                f"{outcome.tenant}: {what} seq {anchor.seq} -> {anchor.path}",
                markup=False,
                soft_wrap=True,
            )
    if not outcomes:
        err.print("no audit chains to anchor", markup=False)
    if failed:
        raise typer.Exit(2)
    if refused:
        raise typer.Exit(1)


@audit_cli.command("keygen")
@_reports_errors
def audit_keygen(
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            dir_okay=False,
            help="Write the private key (PEM, mode 0600) here and the public key to OUT.pub, "
            "instead of printing both.",
        ),
    ] = None,
) -> None:
    """Make an Ed25519 key pair for signing anchors.

    The signing key belongs in the secret store of the processes that write anchors; the
    public key goes to whoever verifies.
    """
    from ..audit import keys

    key = keys.generate_signing_key()
    public = key.public_key()
    if out_path is None:
        typer.echo(f"{SIGNING_KEY_ENV}={keys.signing_key_text(key)}")
        typer.echo(f"{PUBLIC_KEY_ENV}={keys.public_key_text(public)}")
    else:
        public_path = out_path.with_name(out_path.name + ".pub")
        _create(out_path, keys.signing_key_pem(key), 0o600)
        _create(public_path, keys.public_key_pem(public), 0o644)
        typer.echo(f"{SIGNING_KEY_ENV}_FILE={out_path}")
        typer.echo(f"{PUBLIC_KEY_ENV}_FILE={public_path}")
    err.print(
        f"key id {keys.key_id(public)}: keep {SIGNING_KEY_ENV} secret, with the workers; "
        f"give {PUBLIC_KEY_ENV} to verifiers",
        markup=False,
        soft_wrap=True,
    )


def _create(path: Path, data: bytes, mode: int) -> None:
    # Exclusive: never replace a key (anchors signed with it would no longer verify).
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CliError("file_exists", f"{path} exists; keys are never overwritten") from None
    except OSError as exc:
        raise CliError("bad_file", f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)


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
    anchor_dir: AnchorDirOption = None,
) -> None:
    """Verify an exported chain without the database: exit 0 if intact, 1 if not.

    With an anchor directory, the file must reach the newest anchor of its tenant: an
    export cut short is named like a truncated database.
    """
    mark = _anchor(anchor)
    secret = key_from_env()
    anchors = None if mark is not None else AuditAnchors.from_env(directory=anchor_dir)
    if file == "-":
        report = _verify_lines(sys.stdin, secret, partial, mark, anchors)
    else:
        path = Path(file)
        if not path.is_file():
            raise CliError("file_not_found", f"no such file: {file}")
        with path.open(encoding="utf-8", errors="surrogateescape", newline="\n") as lines:
            report = _verify_lines(lines, secret, partial, mark, anchors)
    _report(report, file)
    if mark is None and report.anchor is None:
        _no_anchor_note(report.tenant, anchors)
    if not report.ok:
        raise typer.Exit(1)


def _verify_lines(
    lines: Iterable[str],
    secret: bytes | None,
    partial: bool,
    mark: AuditHead | None,
    anchors: AuditAnchors | None,
) -> VerifyReport:
    scan: AnchorScan | None = None
    if anchors is not None:
        # The file's tenant is in its first record; the anchors are that tenant's.
        stream = iter(lines)
        head: list[str] = []
        for line in stream:
            head.append(line)
            if line.strip():
                break
        lines = itertools.chain(head, stream)
        try:
            first = json.loads(head[-1]) if head else {}
        except ValueError:
            first = {}
        tenant = first.get("tenant") if isinstance(first, dict) else None
        if isinstance(tenant, str):
            scan = anchors.newest(tenant)
    chosen = scan.anchor if scan is not None else mark
    report = verify_jsonl(lines, secret, partial=partial, anchor=chosen)
    return report if scan is None else scan.apply(report)
