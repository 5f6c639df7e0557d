"""``aevos demo``: the main job, the claims-intake process over the real data set."""

from __future__ import annotations

import importlib
import importlib.util
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
from ..errors import DataNotFoundError, RunTimeoutError
from ..status import RunStatus
from ..storage.dialect import redact_url
from .common import (
    _STATUS_STYLE,
    CliError,
    _check_url,
    _reports_errors,
    _state,
    err,
    out,
)

P = ParamSpec("P")


def repo_root() -> Path:
    """The source checkout this package is installed from (editable install)."""
    return Path(__file__).resolve().parents[3]  # src/aevos/cli/demo.py -> the checkout


def load_example(name: str) -> ModuleType:
    """``<repo>/examples/<name>.py``, imported by path (``examples`` is not installed)."""
    module_name = f"aevos_examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = repo_root() / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
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


@_reports_errors
def demo(
    ctx: typer.Context,
    claims: Annotated[
        int, typer.Option("--claims", min=1, help="How many claims of the data set to take in.")
    ] = 1000,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker threads executing claims.")
    ] = 8,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Give up after S seconds.")
    ] = 600.0,
) -> None:
    """Take in insurance claims from the real data set: parse, score, decide, file.

    Idempotent: claims already taken in (same policy number) start no new run.
    """
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
