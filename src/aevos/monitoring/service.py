"""Monitors (``app.monitors``): configure how a model is watched, check it (workers do, on
each model's interval), read the results and the alerts, acknowledge them.

A check computes every monitor (:mod:`aevos.monitoring.checks`) and stores each result. A
monitor past its threshold opens an alert (recorded with the figures that raised it and
audited ``monitor.alerted``) unless one of that model and monitor is open already: one
open alert until an operator acknowledges it or the monitor recovers (a later check within
its threshold resolves it). A new alert does what the configuration's ``on_alert`` says:
start a retraining (trigger ``drift``, idempotent by the alert id) when the model has a
retraining configuration, and ask an operator (a durable workflow: a task in the
``operators`` queue to acknowledge, retrain or dismiss).
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent
from ..errors import (
    AevosError,
    AlertNotFoundError,
    DefinitionError,
    MonitorConfigError,
    MonitorNotConfiguredError,
    check_limit,
)
from ..identity import check_tenant
from ..kernel.step import StepContext
from ..kernel.workflow import StartOptions
from ..models.registry import check_name
from ..records.monitors import DEFAULT_THRESHOLDS, MONITORS, Alert, MonitorConfig, MonitorResult
from ..records.retraining import RetrainingStatus, Trigger
from ..records.task import Field
from .checks import Check

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..cases import KeptCases
    from ..kernel.context import WorkflowContext
    from ..kernel.runtime import Runtime
    from ..retraining import Retraining
    from ..storage import Store

__all__ = ["OPERATOR_QUEUE", "QUEUE", "WORKFLOW", "Monitors"]

log = logging.getLogger("aevos.monitoring")

#: The workflow that asks an operator about an alert, its queue, and the task's queue.
WORKFLOW = "aevos.monitor.alert"
QUEUE = "monitoring"
OPERATOR_QUEUE = "operators"
#: Who works the operator's task: its choices include starting a retraining, which only
#: admins may do of the roles that work tasks (operators do not work tasks).
OPERATOR_ROLE = "admin"
ACTOR = "system:monitors"
MAX_LIMIT = 1000
CHOICES = ("acknowledge", "retrain", "dismiss")
#: Why a retraining did not start now that will not hold for long.
BUSY = frozenset({"rollout_in_progress", "retraining_in_progress", "waiting_for_labels"})
#: The settings among the thresholds that are counts or seconds, not shares, and their top.
_HIGHEST = {
    "min_window": 100_000.0,
    "estimate_window": 20_000.0,
    "max_retrainings": 100.0,
    "retrain_after": 30 * 86400.0,
    "min_new_class_labels": 100_000.0,
}


def _check_int(name: str, value: Any, low: int, high: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MonitorConfigError(f"{name} must be an integer from {low} to {high}", name)


def _check_number(
    name: str, value: Any, low: float, high: float, *, optional: bool = False
) -> None:
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= float(value) <= high
    ):
        raise MonitorConfigError(f"{name} must be a number from {low} to {high}", name)


def _limit(limit: Any) -> int:
    return check_limit(limit, MAX_LIMIT)


class Monitors:
    """The app's monitors (``app.monitors``, one per app: building it registers the
    operator workflow and its queue)."""

    def __init__(
        self,
        runtime: Runtime,
        store: Store,
        audit: AuditLog,
        *,
        cases: Callable[[], KeptCases],
        retraining: Callable[[], Retraining],
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.audit = audit
        self._cases = cases
        self._retraining = retraining
        if QUEUE not in runtime.queues:
            runtime.queue(QUEUE)
        self._apply = runtime.step(name=f"{WORKFLOW}.apply")(self._apply_step)
        self.workflow = runtime.workflow(name=WORKFLOW, queue=QUEUE)(self._ask)

    # -- configuration ----------------------------------------------------------------------

    def configure(
        self,
        model: str,
        *,
        tenant: str = "default",
        window_cases: int | None = 500,
        window_seconds: float | None = None,
        reference_cases: int = 500,
        reference: tuple[float, float] | None = None,
        thresholds: Mapping[str, float] | None = None,
        on_alert: Mapping[str, bool] | None = None,
        interval: float = 300.0,
        actor: str = "system",
    ) -> MonitorConfig:
        """Set how ``model`` is monitored: a new configuration version, audited as
        ``monitor.configured``. ``reference`` is a fixed time range ``(since, until)``
        (None: the first ``reference_cases`` decisions after the champion was promoted).
        ``thresholds`` override any of :data:`DEFAULT_THRESHOLDS`; ``on_alert`` is
        ``{"retrain": bool, "task": bool}``. A bad setting raises MonitorConfigError
        naming its field."""
        check_name(model)
        check_tenant(tenant)
        if window_cases is None and window_seconds is None:
            raise MonitorConfigError(
                "a window needs window_cases, window_seconds or both", "window_cases"
            )
        _check_int("window_cases", window_cases, 10, 20_000, optional=True)
        _check_number("window_seconds", window_seconds, 60.0, 366 * 86400.0, optional=True)
        _check_int("reference_cases", reference_cases, 10, 20_000)
        since = until = None
        if reference is not None:
            if not isinstance(reference, tuple | list) or len(reference) != 2:
                raise MonitorConfigError("reference is a time range (since, until)", "reference")
            since, until = reference
            _check_number("reference", since, 0.0, 1e11)
            _check_number("reference", until, 0.0, 1e11)
            if not since < until:
                raise MonitorConfigError("reference: since must come before until", "reference")
        checked: dict[str, float] = {}
        for name, value in dict(thresholds or {}).items():
            if name not in DEFAULT_THRESHOLDS:
                raise MonitorConfigError(
                    f"thresholds.{str(name)[:60]} is not a threshold; known: "
                    + ", ".join(sorted(DEFAULT_THRESHOLDS)),
                    f"thresholds.{str(name)[:60]}",
                )
            _check_number(f"thresholds.{name}", value, 0.0, _HIGHEST.get(name, 1.0))
            checked[name] = float(value)
        actions = dict(on_alert or {})
        for name, value in actions.items():
            if name not in ("retrain", "task"):
                raise MonitorConfigError(
                    f"on_alert.{str(name)[:60]} is not an action (retrain, task)",
                    f"on_alert.{str(name)[:60]}",
                )
            if not isinstance(value, bool):
                raise MonitorConfigError(f"on_alert.{name} is true or false", f"on_alert.{name}")
        _check_number("interval", interval, 1.0, 7 * 86400.0)
        if not isinstance(actor, str) or not 0 < len(actor) <= 300:
            raise DefinitionError("actor must be a string of 1 to 300 characters")
        draft = MonitorConfig(
            tenant=tenant,
            model=model,
            version=0,
            window_cases=window_cases,
            window_seconds=None if window_seconds is None else float(window_seconds),
            reference_cases=reference_cases,
            reference_since=None if since is None else float(since),
            reference_until=None if until is None else float(until),
            thresholds=checked,
            retrain=actions.get("retrain", False),
            task=actions.get("task", False),
            interval=float(interval),
            updated_by=actor,
            updated_at=time.time(),
        )
        with self.store.transaction() as uow:
            stored = uow.monitors.add_config(draft)
            data = stored.to_json()
            for key in ("tenant", "updated_by", "updated_at"):
                data.pop(key)
            self.audit.append(
                AuditEvent(
                    action="monitor.configured",
                    actor=actor,
                    tenant=tenant,
                    subject=f"model:{model}",
                    data=data,
                ),
                uow=uow,
            )
        return stored

    def config(
        self, model: str, *, tenant: str = "default", version: int | None = None
    ) -> MonitorConfig:
        """The configuration in force for ``model`` (MonitorNotConfiguredError without)."""
        check_name(model)
        check_tenant(tenant)
        with self.store.reading() as uow:
            found = uow.monitors.config(tenant, model, version)
        if found is None:
            raise MonitorNotConfiguredError(
                f"model {model!r} has no monitor configuration; "
                "set one with app.monitors.configure(model, ...)"
            )
        return found

    def configs(self, model: str, *, tenant: str = "default") -> builtins.list[MonitorConfig]:
        """Every configuration version of ``model``, newest first."""
        with self.store.reading() as uow:
            return uow.monitors.config_history(tenant, model)

    # -- checking ---------------------------------------------------------------------------

    def check(
        self, model: str, *, tenant: str = "default", now: float | None = None
    ) -> builtins.list[MonitorResult]:
        """Check ``model`` now: every monitor computed over its window, stored, alerts
        opened (and their on_alert actions done) or resolved. A model with too little
        traffic gets ``no_data`` results, never an alert. Workers call this on each model's
        interval (:meth:`sweep`); it runs in the calling process (an operator's CLI, a
        test); a server asks the workers instead (:meth:`request_check`)."""
        config = self.config(model, tenant=tenant)
        return self._check(config, time.time() if now is None else now)

    def request_check(
        self,
        model: str,
        *,
        tenant: str = "default",
        actor: str = "system",
        now: float | None = None,
    ) -> dict[str, Any]:
        """Ask the workers to check ``model`` now: its check is made due, so the next
        worker sweep claims and computes it (off the request path; :meth:`check` computes
        in the calling process). Audited as ``monitor.check_requested``; returns what was
        scheduled. MonitorNotConfiguredError without a configuration."""
        check_name(model)
        check_tenant(tenant)
        if not isinstance(actor, str) or not 0 < len(actor) <= 300:
            raise DefinitionError("actor must be a string of 1 to 300 characters")
        moment = time.time() if now is None else now
        with self.store.transaction() as uow:
            found = uow.monitors.request_check(tenant, model, moment)
            if found is None:
                raise MonitorNotConfiguredError(
                    f"model {model!r} has no monitor configuration; "
                    "set one with app.monitors.configure(model, ...)"
                )
            config, last = found
            scheduled = {
                "model": model,
                "config_version": config.version,
                "due_at": moment,
                "last_checked_at": last,
                "interval": config.interval,
                "requested_by": actor,
            }
            self.audit.append(
                AuditEvent(
                    action="monitor.check_requested",
                    actor=actor,
                    tenant=tenant,
                    subject=f"model:{model}",
                    data=dict(scheduled),
                ),
                uow=uow,
            )
        return scheduled

    def _check(self, config: MonitorConfig, now: float) -> builtins.list[MonitorResult]:
        found = Check(self.store, self._cases, config, now).run()
        with self.store.transaction() as uow:
            uow.monitors.add_results(found)
        for result in found:
            if result.alert:
                if self._raise(config, result) is None and config.retrain:
                    self._retrain_again(config, result)
            elif result.status == "ok":
                self._recover(config, result)
        return found

    def sweep(self, now: float | None = None) -> builtins.list[str]:
        """Check every monitored model whose interval has passed (every worker does this
        between claims; each check is claimed in the database, so many workers check a
        model once). Returns the models checked, as ``tenant/model``."""
        moment = time.time() if now is None else now
        with self.store.reading() as uow:
            due = uow.monitors.due(moment)
        checked = []
        for config, last in due:
            with self.store.transaction() as uow:
                if not uow.monitors.claim_check(config, last, moment):
                    continue
            try:
                self._check(config, moment)
            except AevosError as exc:
                log.warning(
                    "monitor check of %s (tenant %s) failed: %s",
                    config.model,
                    config.tenant,
                    exc.code,
                )
                continue
            checked.append(f"{config.tenant}/{config.model}")
        return checked

    # -- alerts -----------------------------------------------------------------------------

    def _raise(self, config: MonitorConfig, result: MonitorResult) -> Alert | None:
        alert = Alert(
            alert_id=uuid.uuid4().hex,
            tenant=config.tenant,
            model=config.model,
            version=result.version,
            monitor=result.monitor,
            status="open",
            figures={
                **dict(result.figures),
                "value": result.value,
                "threshold": result.threshold,
                "p_value": result.p_value,
                "n": result.n,
            },
            since=result.since,
            until=result.until,
            actions={},
            opened_at=result.at,
        )
        with self.store.transaction() as uow:
            if not uow.monitors.open_alert(alert):
                return None  # one is open already: not raised twice
            self.audit.append(
                AuditEvent(
                    action="monitor.alerted",
                    actor=ACTOR,
                    tenant=config.tenant,
                    subject=f"model:{config.model}@{result.version}",
                    data={
                        "alert_id": alert.alert_id,
                        "model": config.model,
                        "version": result.version,
                        "monitor": result.monitor,
                        "figures": dict(alert.figures),
                        "window": [result.since, result.until],
                    },
                ),
                uow=uow,
            )
        actions: dict[str, Any] = {}
        if config.retrain:
            actions["retrain"] = self._start_retraining(alert, result.at, config=config)
        if config.task:
            actions["task"] = self._ask_operator(alert)
        if actions:
            with self.store.transaction() as uow:
                uow.monitors.set_actions(alert.alert_id, actions)
        return alert

    def _start_retraining(
        self, alert: Alert, at: float, attempt: int = 1, config: MonitorConfig | None = None
    ) -> dict[str, Any]:
        """Start a drift retraining for ``alert`` unless one would be premature (see
        :meth:`_busy`; an operator's explicit choice, without ``config``, does not wait for
        labels)."""
        retraining = self._retraining()
        tried = {"attempts": attempt, "at": at}
        try:
            busy = self._busy(alert, retraining, config)
            if busy is not None:
                return busy
            # The first attempt's key is the alert's own (as before retries existed).
            key = f"monitor-alert/{alert.alert_id}"
            handle = retraining.start(
                alert.model,
                tenant=alert.tenant,
                trigger=Trigger.DRIFT,
                actor=ACTOR,
                idempotency_key=key if attempt == 1 else f"{key}/{attempt}",
            )
        except AevosError as exc:
            return {"started": False, "reason": exc.message, "code": exc.code, **tried}
        return {"started": True, "run_id": handle.run_id, **tried}

    def _busy(
        self, alert: Alert, retraining: Retraining, config: MonitorConfig | None
    ) -> dict[str, Any] | None:
        """Why no retraining starts now: one of the model's candidates is being rolled
        out (a retraining started now could not hand its candidate over, and the rollout
        may yet bring the fix), or a drift retraining is queued or running. A shift usually
        raises several monitors at once (prediction, input and confidence drift): the first
        alert's retraining answers them all, since one more over the same labels would
        train the same candidate again. (One started by labels or a schedule may have
        snapshotted its data before the shift.)"""
        with self.store.reading() as uow:
            rollout = uow.rollouts.active(alert.tenant, alert.model)
        if rollout is not None:
            return {
                "started": False,
                "code": "rollout_in_progress",
                "reason": f"rollout {rollout.rollout_id} of {alert.model} is in progress",
                "rollout_id": rollout.rollout_id,
            }
        for run in retraining.runs(alert.model, tenant=alert.tenant, limit=20):
            if run.trigger == Trigger.DRIFT and run.status in (
                RetrainingStatus.QUEUED,
                RetrainingStatus.RUNNING,
            ):
                return {
                    "started": False,
                    "code": "retraining_in_progress",
                    "reason": f"drift retraining {run.run_id} of {alert.model} is in progress",
                    "run_id": run.run_id,
                }
        return None if config is None else self._unlearnable(config)

    def _unlearnable(self, config: MonitorConfig) -> dict[str, Any] | None:
        """Why a retraining would come too early: this check's label drift names classes
        that hold fewer labels (their median) than ``min_new_class_labels``."""
        with self.store.reading() as uow:
            # The check's results are stored before its alerts act, so the latest label
            # drift is this check's, whichever monitor's alert asks.
            latest = uow.monitors.results(
                config.tenant, config.model, monitor="label_drift", limit=1
            )
        if not latest or not latest[0].alert:
            return None
        held = latest[0].figures.get("new_class_labels")
        if not isinstance(held, Mapping) or not held:
            return None
        counts = sorted(int(n) for n in held.values())
        median = counts[len(counts) // 2]
        least = int(config.threshold("min_new_class_labels"))
        if median >= least:
            return None
        return {
            "started": False,
            "code": "waiting_for_labels",
            "reason": (
                f"the {len(counts)} new classes of the label drift hold a median of {median} "
                f"labels, fewer than min_new_class_labels ({least}): a candidate could not "
                "learn them yet"
            ),
        }

    def _retrain_again(self, config: MonitorConfig, result: MonitorResult) -> None:
        """The drift an open alert reported is still there: when nothing answers it any
        more (the retrainings it started ended without a better champion, or none started
        because another was under way), start one more. The drift's episode is counted from
        the oldest of the model's open alerts: at most ``max_retrainings`` drift retrainings
        in it, whichever alert started them, and ``retrain_after`` seconds after the last."""
        with self.store.reading() as uow:
            alert = uow.monitors.open_alert_of(config.tenant, config.model, result.monitor)
            opened = [
                a.opened_at
                for a in uow.monitors.alerts(config.tenant, model=config.model, status="open")
            ]
        if alert is None or not opened:
            return
        retraining = self._retraining()
        try:
            runs = retraining.runs(config.model, tenant=config.tenant, limit=100)
        except AevosError:
            return  # the first attempt recorded why (a model without a retraining configuration)
        episode = [r for r in runs if r.trigger == Trigger.DRIFT and r.started_at >= min(opened)]
        if len(episode) >= int(config.threshold("max_retrainings")):
            return
        last = max((r.started_at for r in episode), default=None)
        if last is not None and result.at - last < config.threshold("retrain_after"):
            return
        outcome = self._start_retraining(alert, result.at, len(episode) + 1, config)
        if outcome.get("code") not in BUSY:  # started, or failed to start: say which
            with self.store.transaction() as uow:
                uow.monitors.set_actions(alert.alert_id, {**alert.actions, "retrain": outcome})

    def _ask_operator(self, alert: Alert) -> dict[str, Any]:
        try:
            handle = self.runtime.enqueue(
                self.workflow,
                (alert.alert_id,),
                {},
                StartOptions(
                    tenant=alert.tenant,
                    actor=ACTOR,
                    idempotency_key=f"monitor-task/{alert.alert_id}",
                ),
            )
        except AevosError as exc:
            return {"started": False, "reason": exc.message, "code": exc.code}
        return {"started": True, "run_id": handle.run_id}

    def _recover(self, config: MonitorConfig, result: MonitorResult) -> None:
        with self.store.transaction() as uow:
            alert = uow.monitors.open_alert_of(config.tenant, config.model, result.monitor)
            if alert is None:
                return
            # Within the threshold, or past it but no longer significant: say which figures.
            p = "" if result.p_value is None else f", p {result.p_value:.3g}"
            reason = (
                f"recovered: {result.monitor} {result.value:.4g} (threshold "
                f"{result.threshold:.4g}{p}) no longer raises an alert"
            )
            self._close(uow, alert, "resolved", ACTOR, reason, result.at)

    def _close(
        self, uow: Any, alert: Alert, status: str, actor: str, reason: str, at: float
    ) -> bool:
        if not uow.monitors.close_alert(alert.alert_id, status, by=actor, reason=reason, at=at):
            return False
        self.audit.append(
            AuditEvent(
                action=f"monitor.{status}",
                actor=actor,
                tenant=alert.tenant,
                subject=f"model:{alert.model}@{alert.version}",
                data={
                    "alert_id": alert.alert_id,
                    "model": alert.model,
                    "version": alert.version,
                    "monitor": alert.monitor,
                    "reason": reason,
                },
            ),
            uow=uow,
        )
        return True

    def alert(self, alert_id: str, *, tenant: str = "default") -> Alert:
        """The tenant's alert ``alert_id`` (AlertNotFoundError for another tenant's)."""
        check_tenant(tenant)
        if not isinstance(alert_id, str) or not 0 < len(alert_id) <= 64:
            raise AlertNotFoundError("no such alert")
        with self.store.reading() as uow:
            found = uow.monitors.alert(alert_id)
        if found is None or found.tenant != tenant:
            raise AlertNotFoundError(f"no alert {alert_id!r}")
        return found

    def alerts(
        self,
        *,
        tenant: str = "default",
        model: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Alert]:
        """The tenant's alerts (of ``model``, in ``status``), newest first."""
        check_tenant(tenant)
        if model is not None:
            check_name(model)
        if status is not None and status not in ("open", "acknowledged", "resolved"):
            raise DefinitionError("status is open, acknowledged or resolved")
        with self.store.reading() as uow:
            return uow.monitors.alerts(tenant, model=model, status=status, limit=_limit(limit))

    def acknowledge(
        self,
        alert_id: str,
        *,
        tenant: str = "default",
        actor: str = "system",
        reason: str = "",
        dismiss: bool = False,
    ) -> Alert:
        """Acknowledge the open alert (or, with ``dismiss``, resolve it as a false alarm),
        audited as ``monitor.acknowledged`` / ``monitor.resolved``. Acknowledging an
        alert already closed changes nothing and returns it as it is."""
        alert = self.alert(alert_id, tenant=tenant)
        if not isinstance(reason, str) or len(reason) > 1000:
            raise DefinitionError("reason must be a string of at most 1000 characters")
        status = "resolved" if dismiss else "acknowledged"
        with self.store.transaction() as uow:
            self._close(uow, alert, status, actor, reason or status, time.time())
        return self.alert(alert_id, tenant=tenant)

    def results(
        self,
        model: str,
        *,
        tenant: str = "default",
        since: float | None = None,
        until: float | None = None,
        monitor: str | None = None,
        limit: int = 100,
    ) -> builtins.list[MonitorResult]:
        """``model``'s stored results, newest first."""
        check_name(model)
        check_tenant(tenant)
        if monitor is not None and monitor not in MONITORS:
            raise DefinitionError("monitor is one of " + ", ".join(MONITORS))
        with self.store.reading() as uow:
            return uow.monitors.results(
                tenant, model, since=since, until=until, monitor=monitor, limit=_limit(limit)
            )

    # -- the operator's task ----------------------------------------------------------------

    def _ask(self, ctx: WorkflowContext, alert_id: str) -> dict[str, Any]:
        alert = self.alert(alert_id, tenant=ctx.tenant)
        decision = ctx.ask_human(
            f"{alert.monitor} alert on {alert.model}@{alert.version}",
            form=[
                Field.choice("action", CHOICES),
                Field.text("note", required=False, max_length=1000),
            ],
            case={
                "alert_id": alert.alert_id,
                "model": alert.model,
                "version": alert.version,
                "monitor": alert.monitor,
                "figures": dict(alert.figures),
                "window": [alert.since, alert.until],
            },
            queue=OPERATOR_QUEUE,
            role=OPERATOR_ROLE,
        )
        action = str(decision["action"])
        note = decision.values.get("note")
        return self._apply(ctx, ctx.tenant, alert_id, action, decision.reviewer, note)

    def _apply_step(
        self,
        sctx: StepContext,
        tenant: str,
        alert_id: str,
        action: str,
        reviewer: str,
        note: str | None,
    ) -> dict[str, Any]:
        alert = self.alert(alert_id, tenant=tenant)
        outcome: dict[str, Any] = {"alert_id": alert_id, "action": action, "by": reviewer}
        if action == "retrain":
            outcome["retrain"] = self._start_retraining(alert, time.time())
        self.acknowledge(
            alert_id,
            tenant=tenant,
            actor=reviewer,
            reason=note or f"operator chose {action}",
            dismiss=action == "dismiss",
        )
        return outcome
