"""``aevos monitors``: configure how a model is monitored, show it, check it now, read its
results and alerts, acknowledge an alert.

Like ``aevos models``, it talks to the database directly (changes audited as
``cli:<user>``). ``check`` computes the monitors in this process, as a worker would; input
drift reads kept cases, so it needs the vault key (``AEVOS_VAULT_KEY``) the cases were
sealed with.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..records.monitors import MonitorResult
from .common import _app, _emit_json, _json_option, _reports_errors, _when, out
from .models import JsonFlag, TenantOption, _actor

monitors_cli = typer.Typer(
    help="Monitor models: drift, overrides, QA precision, estimated accuracy; alerts.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The model.")]


def _line(result: MonitorResult) -> str:
    if result.status == "no_data":
        return f"{result.monitor:<19} no data   {result.figures.get('reason', '')}"
    p = "" if result.p_value is None else f"  p={result.p_value:.3g}"
    return (
        f"{result.monitor:<19} {result.status:<8} value={result.value:.4g} "
        f"threshold={result.threshold:.4g}{p}  n={result.n}"
    )


@monitors_cli.command("configure")
@_reports_errors
def monitors_configure(
    ctx: typer.Context,
    name: NameArg,
    window_cases: Annotated[
        int | None, typer.Option("--window-cases", help="Newest decisions in the window.")
    ] = 500,
    window_seconds: Annotated[
        float | None, typer.Option("--window-seconds", help="Only decisions this recent.")
    ] = None,
    reference_cases: Annotated[
        int, typer.Option("--reference-cases", help="First decisions after promotion.")
    ] = 500,
    reference_since: Annotated[
        float | None, typer.Option("--reference-since", help="Fixed reference: start (epoch s).")
    ] = None,
    reference_until: Annotated[
        float | None, typer.Option("--reference-until", help="Fixed reference: end (epoch s).")
    ] = None,
    thresholds: Annotated[
        str | None, typer.Option("--thresholds", help="Thresholds to override, a JSON object.")
    ] = None,
    retrain: Annotated[
        bool, typer.Option("--retrain/--no-retrain", help="An alert starts a retraining.")
    ] = False,
    task: Annotated[
        bool, typer.Option("--task/--no-task", help="An alert asks an operator.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between checks.")] = 300.0,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Set how NAME is monitored (a new configuration version, audited)."""
    reference: tuple[float, float] | None = None
    if reference_since is not None or reference_until is not None:
        reference = (
            reference_since if reference_since is not None else -1.0,
            reference_until if reference_until is not None else -1.0,
        )
    with _app(ctx) as app:
        config = app.monitors.configure(
            name,
            tenant=tenant,
            window_cases=window_cases,
            window_seconds=window_seconds,
            reference_cases=reference_cases,
            reference=reference,
            thresholds=_json_option("--thresholds", thresholds, dict),
            on_alert={"retrain": retrain, "task": task},
            interval=interval,
            actor=_actor(),
        )
    if as_json:
        _emit_json(config.to_json(), indent=2)
        return
    out.print(f"{name}: monitor configuration version {config.version}", markup=False)


@monitors_cli.command("show")
@_reports_errors
def monitors_show(
    ctx: typer.Context, name: NameArg, tenant: TenantOption = "default", as_json: JsonFlag = False
) -> None:
    """Show how NAME is monitored and its latest result of each monitor."""
    with _app(ctx) as app:
        config = app.monitors.config(name, tenant=tenant)
        latest: dict[str, MonitorResult] = {}
        for result in app.monitors.results(name, tenant=tenant, limit=60):
            latest.setdefault(result.monitor, result)
        alerts = app.monitors.alerts(tenant=tenant, model=name, status="open")
    if as_json:
        _emit_json(
            {
                "config": config.to_json(),
                "latest": [r.to_json() for r in latest.values()],
                "open_alerts": [a.to_json() for a in alerts],
            },
            indent=2,
        )
        return
    window = [f"{config.window_cases} decisions"] if config.window_cases else []
    if config.window_seconds:
        window.append(f"{config.window_seconds:g} s")
    out.print(
        f"{name}: configuration {config.version}; window {' within '.join(window)}; "
        f"checked every {config.interval:g} s; on alert: "
        f"{'retrain ' if config.retrain else ''}{'task' if config.task else ''}".rstrip(),
        markup=False,
        soft_wrap=True,
    )
    for result in latest.values():
        out.print(_line(result), markup=False, soft_wrap=True)
    out.print(f"open alerts: {len(alerts)}", markup=False)


@monitors_cli.command("check")
@_reports_errors
def monitors_check(
    ctx: typer.Context,
    name: NameArg,
    schedule: Annotated[
        bool,
        typer.Option(
            "--schedule",
            help="Do not compute here: make the check due, for the next worker sweep "
            "(what POST /v1/models/NAME/monitor/check does).",
        ),
    ] = False,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Check NAME now, computed in this (the operator's) process as a worker does on its
    interval, and print each monitor's result; with --schedule, leave it to the workers."""
    if schedule:
        with _app(ctx) as app:
            scheduled = app.monitors.request_check(name, tenant=tenant, actor=_actor())
        if as_json:
            _emit_json(scheduled, indent=2)
        else:
            out.print(
                f"check of {name} due now (configuration v{scheduled['config_version']}); "
                "the next worker sweep computes it",
                markup=False,
                soft_wrap=True,
            )
        return
    with _app(ctx) as app:
        found = app.monitors.check(name, tenant=tenant)
    if as_json:
        _emit_json([r.to_json() for r in found], indent=2)
        return
    for result in found:
        out.print(_line(result), markup=False, soft_wrap=True)


@monitors_cli.command("results")
@_reports_errors
def monitors_results(
    ctx: typer.Context,
    name: NameArg,
    monitor: Annotated[str | None, typer.Option("--monitor", help="Only this monitor.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """NAME's stored results, newest first."""
    with _app(ctx) as app:
        found = app.monitors.results(name, tenant=tenant, monitor=monitor, limit=limit)
    if as_json:
        _emit_json([r.to_json() for r in found], indent=2)
        return
    for result in found:
        out.print(f"{_when(result.at)}  {_line(result)}", markup=False, soft_wrap=True)


@monitors_cli.command("alerts")
@_reports_errors
def monitors_alerts(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", help="Only this model's.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="open, acknowledged or resolved.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """The tenant's alerts, newest first."""
    with _app(ctx) as app:
        found = app.monitors.alerts(tenant=tenant, model=model, status=status, limit=limit)
    if as_json:
        _emit_json([a.to_json() for a in found], indent=2)
        return
    for alert in found:
        extra: Any = alert.figures.get("new_classes")
        named = f"  new classes: {', '.join(extra)}" if extra else ""
        out.print(
            f"{alert.alert_id}  {alert.status:<12} {alert.model}@{alert.version} "
            f"{alert.monitor}  {_when(alert.opened_at)}{named}",
            markup=False,
            soft_wrap=True,
        )


@monitors_cli.command("ack")
@_reports_errors
def monitors_ack(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Argument(metavar="ALERT_ID", help="The alert.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
    dismiss: Annotated[
        bool, typer.Option("--dismiss", help="Resolve it as a false alarm instead.")
    ] = False,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Acknowledge an open alert (audited)."""
    with _app(ctx) as app:
        alert = app.monitors.acknowledge(
            alert_id, tenant=tenant, actor=_actor(), reason=reason, dismiss=dismiss
        )
    if as_json:
        _emit_json(alert.to_json(), indent=2)
        return
    out.print(f"{alert.alert_id}: {alert.status}", markup=False)
