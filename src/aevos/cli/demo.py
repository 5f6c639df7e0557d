"""``aevos demo``: the main job, support triage on banking77 evolving (``demo_support``);
``aevos demo claims``: the claims-intake process over the real insurance-claims data set."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, ParamSpec

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..app import Aevos
from ..errors import AevosError, DataNotFoundError, RolloutInputError, RunTimeoutError
from ..records.status import RunStatus
from ..rollouts.model import check_steps
from ..storage.dialect import redact_url
from .common import (
    _STATUS_STYLE,
    CliError,
    _check_url,
    _listen,
    _reports_errors,
    _state,
    err,
    out,
)
from .demo_evolution import ROLLOUT_STEPS, TENANT
from .demo_support import (
    DEFAULT_DIR,
    DEFAULT_EVERY,
    DEFAULT_TICKETS,
    INTENTS,
    DemoReport,
    DemoSettings,
    Server,
    SupportDemo,
    stopped_by_signals,
    wait_forever,
)
from .evolution import render

P = ParamSpec("P")


def repo_root() -> Path:
    """The source checkout this package is installed from (editable install)."""
    return Path(__file__).resolve().parents[3]  # src/aevos/cli/demo.py -> the checkout


def load_example(name: str) -> ModuleType:
    """``<repo>/examples/<name>.py`` or the package ``<repo>/examples/<name>/``, imported by
    path (``examples`` is not installed)."""
    module_name = f"aevos_examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    folder = repo_root() / "examples"
    package = folder / name / "__init__.py"
    path = package if package.is_file() else folder / f"{name}.py"
    # A package's modules import each other relatively: they are found under its folder.
    locations = [str(package.parent)] if package.is_file() else None
    spec = importlib.util.spec_from_file_location(
        module_name, path, submodule_search_locations=locations
    )
    if spec is None or spec.loader is None or not path.is_file():
        raise CliError(
            "example_not_found",
            f"the example {name!r} is not at {path}; the demo runs from a source checkout "
            "installed with `pip install -e .`",
        )
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up while being created.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


EXAMPLES = ("support-triage", "claims")


@_reports_errors
def demo(
    ctx: typer.Context,
    example: Annotated[
        str | None,
        typer.Argument(
            metavar="EXAMPLE",
            help="support-triage (the default: banking77 tickets, evolving) or claims "
            "(insurance claims, the earlier demo).",
            show_default=False,
        ),
    ] = None,
    headless: Annotated[
        bool,
        typer.Option(
            "--headless", help="No server: run the stream to its end, print the report, exit."
        ),
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON to PATH.")
    ] = None,
    tickets: Annotated[
        int | None,
        typer.Option("--tickets", min=1, help=f"Tickets to stream (default {DEFAULT_TICKETS})."),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Fixes the seed tickets and the stream's order.")
    ] = 0,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker threads executing runs.")
    ] = 8,
    every: Annotated[
        int, typer.Option("--every", min=1, help="Retrain every N new labels.")
    ] = DEFAULT_EVERY,
    steps: Annotated[
        str,
        typer.Option(
            "--steps",
            help="The rollout of each certified candidate: shares in percent, 0 is shadow, "
            "the last 100.",
        ),
    ] = ",".join(map(str, ROLLOUT_STEPS)),
    intents: Annotated[
        int,
        typer.Option(
            "--intents", min=2, max=INTENTS, help="Stream tickets of the first K intents only."
        ),
    ] = INTENTS,
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", help="Where the demo's SQLite databases go (emptied of a previous demo's)."
        ),
    ] = DEFAULT_DIR,
    host: Annotated[str, typer.Option("--host", help="Interface the console listens on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port of the console (0: any free).")
    ] = 8000,
    claims: Annotated[
        int | None,
        typer.Option("--claims", min=1, help="claims: how many claims to take in (default 1000)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="Give up after S seconds (default 900; claims 600)."),
    ] = None,
) -> None:
    """Support triage on banking77, evolving: the intent model earns the right to route.

    Serves the console until Ctrl-C, printing its address and a sign-in token.

    --headless runs the stream to its end and prints the report.

    `aevos demo claims` runs the claims-intake demo (--claims N alone implies it).
    """
    chosen = example or ("claims" if claims is not None else "support-triage")
    if chosen not in EXAMPLES:
        raise CliError("bad_option", f"no demo {chosen!r}; the demos are {', '.join(EXAMPLES)}")
    if chosen == "claims":
        _claims_demo(ctx, claims or 1000, workers, timeout or 600.0)
        return
    if claims is not None:
        raise CliError("bad_option", "--claims applies to `aevos demo claims` only")
    if json_path is not None and not json_path.expanduser().parent.is_dir():
        raise CliError(
            "bad_option", f"--json {json_path}: the folder {json_path.parent} does not exist"
        )
    settings = DemoSettings(
        directory=directory,
        tickets=DEFAULT_TICKETS if tickets is None else tickets,
        seed=seed,
        workers=workers,
        every=every,
        steps=_steps(steps),
        intents=intents,
        headless=headless,
        host=host,
        port=port,
        timeout=900.0 if timeout is None else timeout,
    )
    _support_demo(settings, json_path)


def _steps(text: str) -> tuple[int, ...]:
    try:
        shares = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(
            "bad_option",
            f"--steps {text!r}: a comma-separated list of integer shares, e.g. 0,25,100",
        ) from None
    try:
        return check_steps(shares)
    except RolloutInputError as exc:
        raise CliError("bad_option", f"--steps {text!r}: {exc.message}") from None


def _claims_demo(ctx: typer.Context, claims: int, workers: int, timeout: float) -> None:
    example = load_example("claims_intake")
    try:
        data: Path = example.default_data_file()
    except DataNotFoundError as exc:
        raise CliError(exc.code, exc.message) from None
    url = _state(ctx).url
    _check_url(url)
    rows: list[dict[str, str]] = example.load_claims(data, claims)
    app: Aevos = example.make_app(url)
    with app:
        safe = redact_url(app.database_url)
        err.print(
            f"claims intake: {len(rows)} claim(s) from {data} on {safe}, {workers} worker thread(s)",
            markup=False,
            soft_wrap=True,
        )
        app.store.ping()
        started = time.time()
        runner = app.worker(queues=[example.QUEUE], concurrency=workers).start()
        try:
            run_ids = _demo_progress(app, example, rows, started + timeout)
        finally:
            runner.stop(timeout=10)
        elapsed = time.time() - started
        summary = example.summarize(app, run_ids, since=started)
    _demo_report(example, summary, elapsed)
    if summary.by_status.get(RunStatus.SUCCEEDED.value, 0) != summary.runs:
        raise typer.Exit(1)


def _demo_progress(
    app: Aevos, example: ModuleType, rows: list[dict[str, str]], deadline: float
) -> list[str]:
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        enqueue = progress.add_task("enqueue", total=len(rows))
        finish = progress.add_task("process", total=len(rows))
        handles = []
        intake = app.workflow_named(example.WORKFLOW)
        for row in rows:
            handles.append(intake.options(idempotency_key=example.claim_key(row)).start(row))
            progress.advance(enqueue)
        # Runs finish roughly in the order they were enqueued, so checking the oldest
        # unfinished one costs one query per finished run, not one per run per tick.
        pending = deque(handles)
        while pending:
            while pending and pending[0].status().terminal:
                pending.popleft()
                progress.advance(finish)
            if pending:
                if time.time() > deadline:
                    raise RunTimeoutError(
                        f"{len(pending)} claim run(s) still unfinished at the deadline; "
                        "they continue with the next worker on this database"
                    )
                time.sleep(0.05)
    return [h.run_id for h in handles]


def _demo_report(example: ModuleType, summary: Any, elapsed: float) -> None:
    table = Table(title="claims intake", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("claims", str(summary.runs))
    table.add_row("new runs", str(summary.created_since))
    for status in RunStatus:
        count = summary.by_status.get(status.value, 0)
        if count:
            table.add_row(Text(f"runs {status.value}", style=_STATUS_STYLE[status]), str(count))
    labels = {
        example.APPROVE: "auto-approved",
        example.REVIEW: "sent to review",
        example.REJECT: "rejected",
    }
    for outcome, label in labels.items():
        table.add_row(label, str(summary.outcomes.get(outcome, 0)))
    table.add_row("steps executed", str(summary.steps_since))
    table.add_row("elapsed", f"{elapsed:.2f}s")
    table.add_row("steps/s", f"{summary.steps_since / elapsed:.0f}" if elapsed > 0 else "-")
    out.print(table)


# -- support triage ---------------------------------------------------------------------------


def _support_demo(settings: DemoSettings, json_path: Path | None) -> None:
    example = load_example("support_triage")
    server: Server | None = None
    if not settings.headless:
        # Bound first: a busy port is refused before minutes of work, not after.
        server = Server(_listen(settings.host, settings.port))
    try:
        run = SupportDemo(example, settings)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    interrupted = False
    try:
        with stopped_by_signals():
            try:
                _support_run(run, server, json_path)
            except KeyboardInterrupt:
                interrupted = True
    finally:
        if server is not None:
            server.stop()
        run.close()
    if interrupted:
        err.print("aevos demo stopped")
        if settings.headless:
            raise typer.Exit(130)


def _support_run(run: SupportDemo, server: Server | None, json_path: Path | None) -> None:
    settings = run.settings
    err.print(
        f"support triage: {len(run.stream)} banking77 tickets of {settings.intents} intents, "
        f"version 1 trained on {len(run.seed_rows)}; databases in {run.directory}",
        markup=False,
        soft_wrap=True,
    )
    with err.status("training version 1 ...", spinner="dots"):
        since = run.setup()
    if server is not None:
        server.start(run.app)
        token = run.token()
        out.print(f"console: {server.address}/console", markup=False, soft_wrap=True)
        out.print(f"token: {token}", markup=False, soft_wrap=True)
        err.print(
            "sign in to the console with the token (an admin of tenant default, valid 24 h); "
            "Ctrl-C stops the demo",
            markup=False,
        )
        sys.stdout.flush()
    with run.running():
        run.stream_tickets()
        with err.status("answering the last reviews, finishing a retraining ...", spinner="dots"):
            run.settle()
        report = run.report(since)
        _support_report(report)
        if settings.headless:
            # What the console's evolution page shows: automation per bucket, and the
            # version changes, rollouts and retrainings marked on the same time axis.
            render(run.app.reports.evolution(run.example.MODEL, tenant=TENANT, since=since))
        if json_path is not None:
            try:
                json_path.expanduser().write_text(
                    json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8"
                )
            except OSError as exc:
                raise CliError(
                    "bad_option", f"cannot write --json {json_path}: {exc.strerror}"
                ) from None
        if run.reviewers.errors:
            first = run.reviewers.errors[0]
            detail = first.message if isinstance(first, AevosError) else repr(first)
            raise CliError(
                "reviewer_failed",
                f"{len(run.reviewers.errors)} simulated review(s) failed, first: {detail}",
            )
        if server is not None:
            err.print(
                f"the stream is done; the console still serves at {server.address}/console "
                "until Ctrl-C",
                markup=False,
            )
            wait_forever()


def _support_report(report: DemoReport) -> None:
    table = Table(title="support triage", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("tickets", f"{report.tickets:,}")
    table.add_row("routed by the model", f"{report.routed.get('model', 0):,}")
    table.add_row("routed by reviewers", f"{report.routed.get('reviewer', 0):,}")
    table.add_row("reviews (QA samples too)", f"{report.reviews:,}")
    table.add_row("QA samples", f"{report.qa_samples:,}")
    table.add_row("retrainings", f"{report.retrainings} ({report.certified} certified)")
    table.add_row("rollouts", str(len(report.rollouts)))
    table.add_row("promotions (by rollouts)", str(report.promotions))
    table.add_row("rollbacks", str(report.rollbacks))
    threshold = "uncertified" if report.threshold is None else f"threshold {report.threshold:.3f}"
    table.add_row("champion", f"v{report.champion} ({threshold})")
    table.add_row("automated, first tenth", f"{report.first:.1%}")
    table.add_row("automated, last tenth", f"{report.last:.1%}")
    table.add_row("elapsed", f"{report.seconds:.0f}s")
    for rollout in report.rollouts:
        path = " -> ".join(rollout["path"])
        if rollout["state"] in ("replaying", "progressing", "paused"):
            path += f" ({rollout['state']} when the stream ended)"
        table.add_row(f"rollout of v{rollout['version']}", Text(path, overflow="fold"))
    out.print(table)
