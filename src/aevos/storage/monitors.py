"""Monitors: models' monitor configurations (versioned), check results and alerts; and the
reads a check makes of the traffic it judges (``model.called`` records, feedback, QA labels).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .. import codec
from ..records.monitors import Alert, MonitorConfig, MonitorResult
from .repository import Repository, StoreHandle
from .schema import audit, feedback, labels, model_aliases, monitor_alerts, monitor_configs
from .schema import monitor_results as results_table

# (at, monitor, value, threshold, alert): what the evolution report plots.
SeriesRow = tuple[float, str, float, float, bool]
# (at, call_id, label, confidence) of one model call.
CallRow = tuple[float, str | None, str | None, float | None]


def config_of(row: Any) -> MonitorConfig:
    settings = codec.decode(row.settings)
    on_alert = settings.get("on_alert") or {}
    return MonitorConfig(
        tenant=row.tenant,
        model=row.model,
        version=int(row.version),
        window_cases=settings.get("window_cases"),
        window_seconds=settings.get("window_seconds"),
        reference_cases=int(settings.get("reference_cases", 500)),
        reference_since=settings.get("reference_since"),
        reference_until=settings.get("reference_until"),
        thresholds=dict(settings.get("thresholds") or {}),
        retrain=bool(on_alert.get("retrain", False)),
        task=bool(on_alert.get("task", False)),
        interval=float(row.check_interval),
        updated_by=row.updated_by,
        updated_at=float(row.updated_at),
    )


def result_of(row: Any) -> MonitorResult:
    return MonitorResult(
        tenant=row.tenant,
        model=row.model,
        version=None if row.version is None else int(row.version),
        monitor=row.monitor,
        status=row.status,
        value=None if row.value is None else float(row.value),
        threshold=None if row.threshold is None else float(row.threshold),
        p_value=None if row.p_value is None else float(row.p_value),
        alert=bool(row.alert),
        n=int(row.n),
        since=None if row.since is None else float(row.since),
        until=None if row.until is None else float(row.until),
        figures=codec.decode(row.figures),
        at=float(row.at),
    )


def alert_of(row: Any) -> Alert:
    return Alert(
        alert_id=row.alert_id,
        tenant=row.tenant,
        model=row.model,
        version=None if row.version is None else int(row.version),
        monitor=row.monitor,
        status=row.status,
        figures=codec.decode(row.figures),
        since=None if row.since is None else float(row.since),
        until=None if row.until is None else float(row.until),
        actions=codec.decode(row.actions),
        opened_at=float(row.opened_at),
        closed_at=None if row.closed_at is None else float(row.closed_at),
        closed_by=row.closed_by,
        reason=row.reason,
    )


def open_key(tenant: str, model: str, monitor: str) -> str:
    return f"{tenant}/{model}/{monitor}"


def _insert_alert(store: StoreHandle) -> Any:
    # Many workers may raise the same alert at once: the open one stays, the others are none.
    return (
        store.dialect.insert(monitor_alerts)
        .on_conflict_do_nothing(index_elements=["open_key"])
        .returning(monitor_alerts.c.alert_id)
    )


class MonitorRepository(Repository):
    """Monitor configurations, results and alerts, in the unit of work it is bound to."""

    # -- configurations ---------------------------------------------------------------------

    def add_config(self, config: MonitorConfig) -> MonitorConfig:
        """Store ``config`` as the next version of its model's configuration."""
        c = monitor_configs.c
        latest = self.conn.execute(
            sa.select(sa.func.max(c.version)).where(
                c.tenant == config.tenant, c.model == config.model
            )
        ).scalar()
        number = 1 if latest is None else int(latest) + 1
        self.conn.execute(
            monitor_configs.insert(),
            {
                "tenant": config.tenant,
                "model": config.model,
                "version": number,
                "settings": codec.encode(config.settings(), "the monitor settings"),
                "check_interval": config.interval,
                "updated_by": config.updated_by,
                "updated_at": config.updated_at,
                "checked_at": None,
            },
        )
        stored = self.config(config.tenant, config.model, number)
        assert stored is not None  # inserted just above, in this transaction
        return stored

    def config(self, tenant: str, model: str, version: int | None = None) -> MonitorConfig | None:
        c = monitor_configs.c
        query = sa.select(monitor_configs).where(c.tenant == tenant, c.model == model)
        if version is not None:
            query = query.where(c.version == version)
        row = self.conn.execute(query.order_by(c.version.desc()).limit(1)).first()
        return None if row is None else config_of(row)

    def config_history(self, tenant: str, model: str) -> list[MonitorConfig]:
        c = monitor_configs.c
        rows = self.conn.execute(
            sa.select(monitor_configs)
            .where(c.tenant == tenant, c.model == model)
            .order_by(c.version.desc())
        )
        return [config_of(row) for row in rows]

    def due(self, now: float) -> list[tuple[MonitorConfig, float | None]]:
        """The configuration in force of every monitored model whose check is due at
        ``now``, with when it was last checked."""
        c = monitor_configs.c
        newest = (
            sa.select(c.tenant, c.model, sa.func.max(c.version).label("version"))
            .group_by(c.tenant, c.model)
            .subquery()
        )
        rows = self.conn.execute(
            sa.select(monitor_configs)
            .join(
                newest,
                sa.and_(
                    c.tenant == newest.c.tenant,
                    c.model == newest.c.model,
                    c.version == newest.c.version,
                ),
            )
            .where(sa.or_(c.checked_at.is_(None), c.checked_at + c.check_interval <= now))
            .order_by(c.tenant, c.model)
        )
        return [
            (config_of(row), None if row.checked_at is None else float(row.checked_at))
            for row in rows
        ]

    def claim_check(self, config: MonitorConfig, last: float | None, now: float) -> bool:
        """Move the check time of ``config`` from ``last`` to ``now``; False when another
        worker moved it first (that worker checks)."""
        c = monitor_configs.c
        stale = c.checked_at.is_(None) if last is None else c.checked_at == last
        moved = self.conn.execute(
            monitor_configs.update()
            .where(
                c.tenant == config.tenant,
                c.model == config.model,
                c.version == config.version,
                stale,
            )
            .values(checked_at=now)
        )
        return bool(moved.rowcount == 1)

    def request_check(
        self, tenant: str, model: str, now: float
    ) -> tuple[MonitorConfig, float | None] | None:
        """Make the check of ``model``'s configuration in force due at ``now`` (the next
        worker sweep claims it); the configuration and when it was last checked, None
        without a configuration. A check already due stays as it is."""
        c = monitor_configs.c
        row = self.conn.execute(
            sa.select(monitor_configs)
            .where(c.tenant == tenant, c.model == model)
            .order_by(c.version.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        last = None if row.checked_at is None else float(row.checked_at)
        self.conn.execute(
            monitor_configs.update()
            .where(
                c.tenant == tenant,
                c.model == model,
                c.version == row.version,
                c.checked_at.is_not(None),
                c.checked_at + c.check_interval > now,
            )
            .values(checked_at=now - c.check_interval)
        )
        return config_of(row), last

    # -- results ----------------------------------------------------------------------------

    def add_results(self, found: list[MonitorResult]) -> None:
        if not found:
            return
        self.conn.execute(
            results_table.insert(),
            [
                {
                    **{k: v for k, v in r.to_json().items() if k not in ("window", "figures")},
                    "since": r.since,
                    "until": r.until,
                    "figures": codec.encode(dict(r.figures), "the monitor's figures"),
                }
                for r in found
            ],
        )

    def results(
        self,
        tenant: str,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        monitor: str | None = None,
        limit: int = 100,
    ) -> list[MonitorResult]:
        """``model``'s results, newest first."""
        r = results_table.c
        query = sa.select(results_table).where(r.tenant == tenant, r.model == model)
        if since is not None:
            query = query.where(r.at >= since)
        if until is not None:
            query = query.where(r.at < until)
        if monitor is not None:
            query = query.where(r.monitor == monitor)
        rows = self.conn.execute(query.order_by(r.at.desc(), r.id.desc()).limit(limit))
        return [result_of(row) for row in rows]

    def series(self, tenant: str, model: str, since: float, until: float) -> list[SeriesRow]:
        """(at, monitor, value, threshold, alert) of ``model``'s results with a value,
        checked in ``[since, until)``, oldest first: what the evolution report plots."""
        r = results_table.c
        rows = self.conn.execute(
            sa.select(r.at, r.monitor, r.value, r.threshold, r.alert)
            .where(
                r.tenant == tenant,
                r.model == model,
                r.at >= since,
                r.at < until,
                r.value.is_not(None),
                r.threshold.is_not(None),
            )
            .order_by(r.at, r.id)
        )
        return [
            (float(at), str(m), float(value), float(threshold), bool(alert))
            for at, m, value, threshold, alert in rows
        ]

    # -- alerts -----------------------------------------------------------------------------

    def open_alert(self, alert: Alert) -> bool:
        """Record ``alert`` unless ``model`` has an open alert of its monitor; whether it
        was recorded."""
        values = alert.to_json()
        values.pop("window")
        values.update(
            since=alert.since,
            until=alert.until,
            figures=codec.encode(dict(alert.figures), "the alert's figures"),
            actions=codec.encode(dict(alert.actions), "the alert's actions"),
            open_key=open_key(alert.tenant, alert.model, alert.monitor),
        )
        inserted = self.conn.execute(self.uow.prepared(_insert_alert), values).first()
        return inserted is not None

    def open_alert_of(self, tenant: str, model: str, monitor: str) -> Alert | None:
        a = monitor_alerts.c
        row = self.conn.execute(
            sa.select(monitor_alerts).where(a.open_key == open_key(tenant, model, monitor))
        ).first()
        return None if row is None else alert_of(row)

    def alert(self, alert_id: str) -> Alert | None:
        row = self.conn.execute(
            sa.select(monitor_alerts).where(monitor_alerts.c.alert_id == alert_id)
        ).first()
        return None if row is None else alert_of(row)

    def alerts(
        self,
        tenant: str,
        *,
        model: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """The tenant's alerts, newest first."""
        a = monitor_alerts.c
        query = sa.select(monitor_alerts).where(a.tenant == tenant)
        if model is not None:
            query = query.where(a.model == model)
        if status is not None:
            query = query.where(a.status == status)
        rows = self.conn.execute(query.order_by(a.opened_at.desc(), a.alert_id).limit(limit))
        return [alert_of(row) for row in rows]

    def close_alert(self, alert_id: str, status: str, *, by: str, reason: str, at: float) -> bool:
        """Close the open alert ``alert_id`` (acknowledged or resolved); False when it was
        not open (closed already, by someone else perhaps)."""
        a = monitor_alerts.c
        closed = self.conn.execute(
            monitor_alerts.update()
            .where(a.alert_id == alert_id, a.status == "open")
            .values(status=status, open_key=None, closed_at=at, closed_by=by, reason=reason)
        )
        return bool(closed.rowcount == 1)

    def set_actions(self, alert_id: str, actions: dict[str, Any]) -> None:
        self.conn.execute(
            monitor_alerts.update()
            .where(monitor_alerts.c.alert_id == alert_id)
            .values(actions=codec.encode(actions, "the alert's actions"))
        )

    # -- what a check reads -----------------------------------------------------------------

    def champion(self, tenant: str, model: str) -> tuple[int, float] | None:
        """(version, since when) of ``model``'s champion alias."""
        m = model_aliases.c
        row = self.conn.execute(
            sa.select(m.version, m.updated_at).where(
                m.tenant == tenant, m.name == model, m.alias == "champion"
            )
        ).first()
        return None if row is None else (int(row.version), float(row.updated_at))

    def calls(
        self,
        tenant: str,
        model: str,
        version: int,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
        newest: bool = False,
    ) -> list[CallRow]:
        """(at, call_id, label, confidence) of the decisions of ``model@version`` (its
        successful calls on every route but shadow) recorded in ``[since, until)``: the
        first ``limit`` of them, or the last when ``newest``; oldest first either way."""
        dialect = self.uow.store.dialect

        def data(key: str) -> Any:
            return dialect.json_field(audit.c.payload, "data", key)

        calls = (
            sa.select(
                audit.c.seq.label("seq"),
                audit.c.at.label("at"),
                data("call_id").as_string().label("call_id"),
                data("model").as_string().label("model"),
                data("version").as_integer().label("version"),
                data("route").as_string().label("route"),
                data("outcome").as_string().label("outcome"),
                data("label").as_string().label("label"),
                data("confidence").as_float().label("confidence"),
            )
            .where(audit.c.tenant == tenant, audit.c.action == "model.called")
            .where(*([] if since is None else [audit.c.at >= since]))
            .where(*([] if until is None else [audit.c.at < until]))
            .subquery("calls")
        )
        k = calls.c
        order = (k.seq.desc(),) if newest else (k.seq,)
        rows = self.conn.execute(
            sa.select(k.at, k.call_id, k.label, k.confidence)
            .where(
                k.model == model,
                k.version == version,
                k.outcome == "ok",
                sa.or_(k.route.is_(None), k.route != "shadow"),
            )
            .order_by(*order)
            .limit(limit)
        ).all()
        found = [
            (
                float(at),
                call_id,
                None if label is None else str(label),
                None if confidence is None else float(confidence),
            )
            for at, call_id, label, confidence in rows
        ]
        return found[::-1] if newest else found

    def overrides(self, tenant: str, model: str, since: float, until: float) -> list[bool]:
        """Whether each decision on ``model``'s suggestions in ``[since, until)`` changed
        what it suggested."""
        f = feedback.c
        rows = self.conn.execute(
            sa.select(f.overridden).where(
                f.tenant == tenant, f.model == model, f.decided_at >= since, f.decided_at < until
            )
        )
        return [bool(value) for (value,) in rows]

    def labels(self, tenant: str, model: str, since: float, until: float) -> dict[str, Any]:
        """The label of each of ``model``'s cases labelled in ``[since, until)``, by case
        id: the latest recorded (a drift of labels needs their classes, not which source
        outranks which)."""
        return dict(self._labelled(tenant, model, since, until))

    def qa_labels(
        self, tenant: str, model: str, since: float, until: float
    ) -> list[tuple[str, Any]]:
        """(case_id, label) of the QA samples (source ``qa``, or drawn at random) of
        ``model``'s cases labelled in ``[since, until)``."""
        lab = labels.c
        return self._labelled(
            tenant, model, since, until, sa.or_(lab.source == "qa", lab.unbiased == 1)
        )

    def _labelled(
        self, tenant: str, model: str, since: float, until: float, *where: Any
    ) -> list[tuple[str, Any]]:
        lab = labels.c
        rows = self.conn.execute(
            sa.select(lab.case_id, lab.label)
            .where(
                lab.tenant == tenant,
                lab.model == model,
                lab.labelled_at >= since,
                lab.labelled_at < until,
                *where,
            )
            .order_by(lab.id)
        )
        return [(str(case_id), codec.decode(label)) for case_id, label in rows]
