"""The figures of ``benchmarks/evolution_drift.py``: what a run came to, read afterwards
from the database (audit log, monitor results, rollouts, retrainings), test.csv and the
tickets' outputs, and how they are printed. See that script's docstring."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from examples.support_triage import MODEL

from aevos import Aevos
from aevos.monitoring import DEFAULT_THRESHOLDS

TENANT = "default"
OPERATOR = "user:operator"
#: A version "knows" the new intents when it gets at least this share of test.csv's tickets
#: of the new intents right (version 1 gets none: it has never seen them).
KNOWS = 0.5
#: The monitors that look at the traffic and the model's answers, not at people's labels.
DRIFT_MONITORS = ("input_drift", "prediction_drift", "confidence_drift", "estimated_accuracy")
TARGETS = {
    "cases_to_alert": "<= 1,000",
    "worse_max_step": "<= 1 (never past the first canary step)",
    "worse_rolled_back": "true, by the controller, champion untouched",
    "estimate_error_max": "<= 0.03 without concept shift",
}


@dataclass
class Ticket:
    started: float = 0.0
    routed_by: str | None = None
    right: bool | None = None  # the routed intent is the true one
    version: int | None = None
    call_id: str | None = None


def champion(app: Aevos) -> tuple[int, float | None]:
    version = app.models.aliases(MODEL, tenant=TENANT)["champion"]
    record = app.certifications.latest(MODEL, version, tenant=TENANT)
    return version, None if record is None else record.threshold


# -- the measurements ------------------------------------------------------------------------


def audit(app: Aevos, action: str, since: float | None = None) -> list[Any]:
    records: list[Any] = []
    after = 0
    while True:
        page = app.audit.query(TENANT, action=action, since=since, after_seq=after, limit=1000)
        records += [r for r in page if r.data.get("model") == MODEL]
        if len(page) < 1000:
            return records
        after = page[-1].seq


def cases_before(tickets: list[Ticket], start: int, at: float) -> int:
    """Tickets from ``start`` on that were started before ``at`` (an event that can only
    have been caused by tickets started before it: counting them all is conservative)."""
    return sum(1 for t in tickets[start:] if t.started < at)


class NewIntents:
    """test.csv's tickets of the new intents: how much of them a version gets right."""

    def __init__(self, app: Aevos, data: Any) -> None:
        self.app = app
        self.rows = [(t, y) for t, y in data.test if y in data.new]
        self._cache: dict[int, float] = {}

    def accuracy(self, version: int) -> float:
        if version not in self._cache:
            adapter = self.app.models.load(self.app.models.get(MODEL, version, tenant=TENANT))
            texts = [t for t, _ in self.rows]
            batch = getattr(adapter, "batch_predict", None)
            answers = batch(texts) if callable(batch) else [adapter.predict(t) for t in texts]
            right = sum(a.label == y for a, (_, y) in zip(answers, self.rows, strict=True))
            self._cache[version] = right / len(self.rows)
        return self._cache[version]


def automation(tickets: list[Ticket], window: int, shift: int) -> list[dict[str, Any]]:
    """Per window of tickets: the share routed by the model, and the share of those routed
    to the true intent (the realised precision of automation, from the truth)."""
    windows = []
    for start in range(0, len(tickets), window):
        part = tickets[start : start + window]
        automated = [t for t in part if t.routed_by == "model"]
        windows.append(
            {
                "cases": start + len(part),
                "automated": round(len(automated) / len(part), 4),
                "precision": (
                    round(sum(bool(t.right) for t in automated) / len(automated), 4)
                    if automated
                    else None
                ),
                "after_shift": start >= shift,
            }
        )
    return windows


def estimates(
    app: Aevos, data: Any, tickets: list[Ticket], shift_time: float, least: int
) -> list[dict[str, Any]]:
    """Each monitor check's label-free accuracy estimate (CBPE) against the true accuracy
    of the same version's answers over the same calls, for the estimates over a full
    window (``least`` calls: the monitors' ``estimate_window``) before the shift."""
    truth_of = {t.call_id: data.stream[i][1] for i, t in enumerate(tickets) if t.call_id}
    calls = [
        (r.at, r.data.get("version"), r.data.get("label") == truth_of[r.data["call_id"]])
        for r in audit(app, "model.called")
        if r.data.get("call_id") in truth_of
        and r.data.get("route") != "shadow"
        and r.data.get("outcome") == "ok"
    ]
    rows = []
    for result in app.monitors.results(
        MODEL, tenant=TENANT, monitor="estimated_accuracy", limit=1000
    ):
        if result.value is None or result.since is None or result.until is None:
            continue  # no data
        if result.until >= shift_time:
            continue
        # The window is the champion's newest calls: [since, until] spans them.
        inside = [
            ok for at, v, ok in calls if v == result.version and result.since <= at <= result.until
        ]
        if result.n < least or len(inside) < least:
            continue
        true = sum(inside) / len(inside)
        rows.append(
            {
                "version": result.version,
                "since": result.since,
                "until": result.until,
                "calls": len(inside),
                "estimate": round(result.value, 4),
                "true": round(true, 4),
                "error": round(abs(result.value - true), 4),
            }
        )
    return rows


def measure(
    app: Aevos,
    options: Any,
    data: Any,
    tickets: list[Ticket],
    worse: int | None,
    worse_case: int | None,
    shift_time: float,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Every figure of the run, read from the database, test.csv and the tickets' outputs
    (``options`` and ``data``: the script's Options and Data)."""
    shift = data.shift
    alerts = audit(app, "monitor.alerted")
    after = [a for a in alerts if a.at >= shift_time]
    cases_to_alert = cases_before(tickets, shift, after[0].at) if after else None
    drifted = [a for a in after if a.data.get("monitor") in DRIFT_MONITORS]
    cases_to_drift_alert = cases_before(tickets, shift, drifted[0].at) if drifted else None
    false_alarms = collections.Counter(
        str(a.data.get("monitor")) for a in alerts if a.at < shift_time
    )

    worse_rollout: dict[str, Any] | None = None
    worse_max_step: int | None = None
    worse_rolled_back = False
    worse_promoted = False
    if worse is not None:
        [rollout] = [r for r in app.rollouts.list(tenant=TENANT, model=MODEL) if r.version == worse]
        worse_rollout = rollout.to_dict()
        steps = [rollout.step]
        moves = [
            r
            for action in ("rollout.started", "rollout.advanced", "rollout.rolled_back")
            for r in audit(app, action)
            if r.data.get("rollout_id") == rollout.rollout_id
        ]
        steps += [
            s
            for r in moves
            for s in (r.data.get("from_step"), r.data.get("to_step"))
            if s is not None
        ]
        worse_max_step = max(steps)
        worse_rolled_back = rollout.state == "rolled_back" and any(
            r.action == "rollout.rolled_back" and r.actor != OPERATOR for r in moves
        )
    promotions = [
        p for p in audit(app, "model.promoted") if p.data.get("alias", "champion") == "champion"
    ]
    worse_promoted = any(p.data.get("version") == worse for p in promotions)

    known = NewIntents(app, data)
    recovery: dict[str, Any] | None = None
    # Every promotion after the shift, with how well the version knows the new intents: the
    # first that knows them (KNOWS) is the recovery.
    promoted_after: list[dict[str, Any]] = []
    for p in promotions:
        if p.at < shift_time:
            continue
        accuracy = known.accuracy(int(p.data["version"]))
        promoted_after.append(
            {
                "version": p.data["version"],
                "cases": cases_before(tickets, shift, p.at),
                "new_intent_accuracy": round(accuracy, 4),
            }
        )
        if accuracy >= KNOWS and recovery is None:
            recovery = promoted_after[-1]
    windows = automation(tickets, options.report_window, shift)
    before = [w["automated"] for w in windows if not w["after_shift"]]
    later = [w["automated"] for w in windows if w["after_shift"]]
    least = options.monitor_thresholds.get("estimate_window", DEFAULT_THRESHOLDS["estimate_window"])
    estimated = estimates(app, data, tickets, shift_time, int(least))
    runs = list(reversed(app.retraining.runs(MODEL, tenant=TENANT, limit=200)))
    version, threshold = champion(app)
    return {
        "cases_to_alert": cases_to_alert,
        "worse_max_step": worse_max_step,
        "worse_rolled_back": worse_rolled_back,
        "worse_promoted": worse_promoted,
        "promoted_after_shift": promoted_after,
        "cases_to_recovery": None if recovery is None else recovery["cases"],
        "cases_to_drift_alert": cases_to_drift_alert,
        "estimate_error_max": max((r["error"] for r in estimated), default=None),
        "targets": TARGETS,
        "alerts": {
            "before_shift": len(alerts) - len(after),
            "before_shift_by_monitor": dict(false_alarms),
            "after_shift": len(after),
            "first": None if not after else dict(after[0].data),
            "all": [
                {
                    "monitor": a.data.get("monitor"),
                    "version": a.data.get("version"),
                    "at_case": cases_before(tickets, 0, a.at),
                    "value": a.data.get("figures", {}).get("value"),
                }
                for a in alerts
            ],
        },
        "worse": {"version": worse, "entered_at_case": worse_case, "rollout": worse_rollout},
        "recovery": recovery,
        "automation": {
            "windows": windows,
            "before_shift": before[-1] if before else None,
            "dip": min(later) if later else None,
            "last": later[-1] if later else None,
        },
        "estimates": estimated,
        "retrainings": [
            {
                "trigger": r.trigger.value,
                "status": r.status.value,
                "candidate": r.candidate,
                "certified": r.certified,
                "promotion": r.promotion,
                "label_count": r.label_count,
            }
            for r in runs
        ],
        "rollouts": [r.to_dict() for r in app.rollouts.list(tenant=TENANT, model=MODEL)],
        "champion": {"version": version, "threshold": threshold},
        "settings": settings,
    }


# -- reporting -------------------------------------------------------------------------------


def _shown(value: Any, form: str = "{:,}") -> str:
    return "—" if value is None else form.format(value)


def summary(result: dict[str, Any]) -> str:
    lines = ["figure                   value  target"]
    for name, shown in (
        ("cases_to_alert", _shown(result["cases_to_alert"])),
        ("worse_max_step", _shown(result["worse_max_step"])),
        ("worse_rolled_back", str(result["worse_rolled_back"]).lower()),
        ("cases_to_recovery", _shown(result["cases_to_recovery"])),
        ("estimate_error_max", _shown(result["estimate_error_max"], "{:.3f}")),
    ):
        lines.append(f"{name:<20} {shown:>9}  {TARGETS.get(name, '(no target)')}")
    lines.append("")
    alerts = result["alerts"]
    lines.append(
        f"first alert after the shift: {(alerts['first'] or {}).get('monitor', '—')}; first of "
        f"a drift monitor after {_shown(result['cases_to_drift_alert'])} cases; alerts before "
        f"the shift: {alerts['before_shift_by_monitor'] or 'none'}"
    )
    for p in result["promoted_after_shift"]:
        lines.append(
            f"promoted after the shift: v{p['version']} after {p['cases']:,} cases, right on "
            f"{p['new_intent_accuracy']:.1%} of test.csv's tickets of the new intents "
            f"(knows them from {KNOWS:.0%})"
        )
    lines.append("")
    lines.append(" cases  automated  precision (true)")
    for w in result["automation"]["windows"]:
        precision = _shown(w["precision"], "{:.1%}")
        shifted = "  (after the shift)" if w["after_shift"] else ""
        lines.append(f"{w['cases']:>6}  {w['automated']:>9.1%}  {precision:>9}{shifted}")
    if result["estimates"]:
        lines.append("")
        lines.append("version  calls  estimate  true   error")
        for e in result["estimates"]:
            figures = f"{e['estimate']:>8.1%}  {e['true']:>5.1%}  {e['error']:.3f}"
            lines.append(f"v{e['version']:<7} {e['calls']:>5}  {figures}")
    return "\n".join(lines)


def final_line(result: dict[str, Any]) -> str:
    a = result["automation"]
    return (
        f"final: alert after {_shown(result['cases_to_alert'])} cases (target <= 1,000), "
        f"worse candidate max step {_shown(result['worse_max_step'])} "
        f"{'rolled back' if result['worse_rolled_back'] else 'NOT rolled back'} (target <= 1), "
        f"recovery after {_shown(result['cases_to_recovery'])} cases, automation "
        f"{_shown(a['before_shift'], '{:.1%}')} -> {_shown(a['dip'], '{:.1%}')} -> "
        f"{_shown(a['last'], '{:.1%}')}, estimate error max "
        f"{_shown(result['estimate_error_max'], '{:.3f}')} (target <= 0.03)"
    )
