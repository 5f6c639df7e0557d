"""``aevos evolution report``: how a model's automation evolved, and what changed it.

Per time bucket: cases, automation rate, realised precision of automated decisions (from
QA samples, with its 95% Wilson interval), reviews per 100 cases and cost per decision,
each with a sparkline; then the version changes, rollout transitions, retrainings and drift
alerts in time order (see :mod:`aevos.telemetry.report` for the definitions). ``--json``
prints the report as the HTTP API returns it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..telemetry.report import DEFAULT_BUCKETS, MAX_BUCKETS, EvolutionReport
from .common import CliError, _app, _emit_json, _print_wide, _reports_errors, _when, out

evolution_cli = typer.Typer(help="How models evolved: the evolution report.", no_args_is_help=True)

_SPARKS = "▁▂▃▄▅▆▇█"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_time(option: str, text: str | None, now: float) -> float | None:
    """``text`` as epoch seconds: a number of seconds, an ISO 8601 time (UTC unless it says
    otherwise), or a span before now (``90m``, ``24h``, ``7d``, ``2w``)."""
    if text is None:
        return None
    value = text.strip()
    ago = _AGO.match(value)
    if ago:
        return now - float(ago.group(1)) * _UNITS[ago.group(2)]
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise CliError("bad_time", f"{option} must be a finite time")
        return number
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            "bad_time",
            f"{option} must be epoch seconds, an ISO 8601 time or a span like 24h or 7d, "
            f"got {text!r}",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, scaled between the smallest and largest; a gap for None."""
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    low, high = min(present), max(present)
    span = high - low
    top = len(_SPARKS) - 1
    return "".join(
        " " if v is None else _SPARKS[top // 2 if span == 0 else round((v - low) / span * top)]
        for v in values
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render(report: EvolutionReport) -> None:
    """The report as tables: trends, buckets, markers."""
    subject = report.model or "every model"
    out.print(
        f"Evolution of {subject} in tenant {report.tenant}: {_when(report.since)} to "
        f"{_when(report.until)}, {len(report.buckets)} buckets",
        markup=False,
    )
    b = report.buckets
    totals = report.totals
    trends = Table(box=box.SIMPLE, title="Trends (one character per bucket)")
    trends.add_column("figure")
    trends.add_column("over time")
    trends.add_column("window", justify="right")
    precision = _pct(totals["precision"])
    if totals["precision_n"]:
        precision += (
            f" [{_pct(totals['precision_low'])}, {_pct(totals['precision_high'])}]"
            f" n={totals['precision_n']}"
        )
    for name, values, whole in (
        ("cases", [float(x.cases) for x in b], str(totals["cases"])),
        ("automation rate", [x.automation_rate for x in b], _pct(totals["automation_rate"])),
        ("precision (QA)", [x.precision for x in b], precision),
        ("reviews per 100", [x.reviews_per_100 for x in b], _num(totals["reviews_per_100"])),
        ("cost per decision", [x.cost_per_decision for x in b], _cost(totals["cost_per_decision"])),
    ):
        trends.add_row(name, Text(sparkline(values), style="cyan"), whole)
    _print_wide(trends)

    table = Table(box=box.SIMPLE_HEAD, title="Buckets")
    for column in ("start", "cases", "automated", "rate", "reviews", "qa", "per 100"):
        table.add_column(column, justify="left" if column == "start" else "right")
    table.add_column("precision [95%] n", justify="right")
    table.add_column("cost/decision", justify="right")
    for x in b:
        shown = _pct(x.precision)
        if x.precision_n:
            shown += f" [{_pct(x.precision_low)}, {_pct(x.precision_high)}] {x.precision_n}"
        table.add_row(
            _when(x.start),
            str(x.cases),
            str(x.automated),
            _pct(x.automation_rate),
            str(x.reviews),
            str(x.qa),
            _num(x.reviews_per_100),
            shown,
            _cost(x.cost_per_decision),
        )
    _print_wide(table)

    if report.drift:
        drift = Table(box=box.SIMPLE_HEAD, title="Drift")
        for column in ("model", "monitor", "over time", "latest", "alerts"):
            drift.add_column(column)
        for series in report.drift:
            points: list[float | None] = [p.value for p in series.points]
            latest = series.points[-1] if series.points else None
            drift.add_row(
                series.model,
                series.monitor,
                sparkline(points[-40:]),
                "-" if latest is None else f"{latest.value:.3g} / {latest.threshold:.3g}",
                str(sum(p.alert for p in series.points)),
            )
        _print_wide(drift)

    marks = Table(box=box.SIMPLE_HEAD, title="Markers")
    for column in ("at", "kind", "model", "version", "detail"):
        marks.add_column(column)
    for m in report.markers:
        marks.add_row(
            _when(m.at),
            m.kind,
            m.model or "-",
            "-" if m.version is None else f"v{m.version}",
            Text(m.detail),
        )
    if report.markers:
        _print_wide(marks)
    else:
        out.print("no version changes, rollouts, retrainings or drift alerts in the window")
    if report.markers_truncated:
        out.print(f"(the first {len(report.markers)} markers; narrow the window for the rest)")


@evolution_cli.command("report")
@_reports_errors
def report(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", help="The model (default: every model).")
    ] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant.")] = "default",
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Start: epoch seconds, ISO 8601 or a span before now (7d). "
            "Default: the first case or marker of the last 366 days.",
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="End, like --since (default: now).")
    ] = None,
    buckets: Annotated[
        int, typer.Option("--buckets", help=f"Equal time buckets, 1 to {MAX_BUCKETS}.")
    ] = DEFAULT_BUCKETS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Automation rate, realised precision, reviews per 100 cases, cost per decision and
    drift over time, with version changes, rollouts, retrainings and alerts marked."""
    now = time.time()
    start, end = parse_time("--since", since, now), parse_time("--until", until, now)
    with _app(ctx) as app:
        found = app.reports.evolution(model, tenant=tenant, since=start, until=end, buckets=buckets)
    if as_json:
        _emit_json(found.to_dict(), indent=2)
        return
    render(found)
