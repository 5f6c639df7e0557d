"""Replay (``app.replays``): a candidate re-decides the kept cases of a window before it sees
live traffic.

A replay is a run of the durable workflow ``aevos.replay`` on the ``replay`` queue, so it
runs on a worker, never in the process that asked for it:

1. ``plan``: the candidate checked, the champion and the candidate's certified threshold
   read, and the kept model-call cases of the window listed, newest first, up to ``limit``;
2. ``batch`` (one step per batch): each case opened (decrypted with the tenant's key) and
   decided by the candidate's adapter directly — not through the gateway, so no production
   call is recorded, no budget spent — each call timed; the champion's answer is the label
   of the case's ``model.called`` record, or the champion version decides it too; each
   batch's figures are the step's result, so a crash resumes at the next batch without
   re-deciding finished ones. Between batches a durable sleep (``ctx.sleep``) keeps the
   pace at ``rate`` cases per second at most;
3. ``finish``: the figures added up and judged by :class:`ReplayCriteria`, stored in the
   replay's record and audited (``replay.finished``).

Cases forgotten or past their retention between listing and reading are counted as
``expired``, never an error. Statuses (:mod:`aevos.records.replay`): ``passed``,
``failed``, ``inconclusive`` (fewer than ``min_cases`` decided, zero included: ``passed``
stays None) and ``error`` (the replay could not finish: an unknown version, no vault
key); only ``passed`` is a passing replay. The promotion gate shows the latest replay of a
version to the promotion policy as ``replay``.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent
from ..errors import (
    AevosError,
    DefinitionError,
    ModelNotFoundError,
    ReplayInputError,
    ReplayNotFoundError,
    check_limit,
    failure_reason,
)
from ..identity import check_tenant
from ..kernel.step import StepContext
from ..kernel.workflow import StartOptions
from ..models.registry import check_name
from ..records.label import same_label
from ..records.replay import Replay
from .replay_figures import ReplayCriteria, empty_tally, figures, judge

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..cases import KeptCase, KeptCases
    from ..kernel.context import WorkflowContext
    from ..kernel.runtime import Runtime
    from ..models.registry import ModelRegistry
    from ..models.types import ModelAdapter
    from ..storage import Store

__all__ = [
    "MAX_LIMIT",
    "MAX_RATE",
    "QUEUE",
    "REPLAY_TAG",
    "WORKFLOW",
    "ReplayCriteria",
    "Replays",
]

log = logging.getLogger("aevos.replay")

#: The workflow every replay is a run of, and the queue it runs on.
WORKFLOW = "aevos.replay"
QUEUE = "replay"
#: The tag on a replayed version: the latest replay's status and id ("passed <id>").
REPLAY_TAG = "aevos.replay"
MAX_LIMIT = 10_000
MAX_RATE = 1000.0
MAX_LIST = 200
#: Cases per batch at most: a batch is about one second of the replay's rate.
MAX_BATCH = 50
#: How far apart a kept case and its call's audit record may be written (seconds).
_RECORD_SLACK = 3600.0


def _actor(replay_id: str) -> str:
    return f"service:replay#{replay_id}"


def batch_size(rate: float) -> int:
    """Cases per batch at ``rate`` cases/s: about a second's worth, 1 to MAX_BATCH."""
    return max(1, min(MAX_BATCH, math.ceil(rate)))


class Replays:
    """Replays of the app's model versions over kept cases: start, read, list; the workflow
    (``app.replays``, one per app; building it registers the workflow and its queue)."""

    def __init__(
        self,
        runtime: Runtime,
        store: Store,
        audit: AuditLog,
        registry: ModelRegistry,
        *,
        cases: Callable[[], KeptCases],
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.audit = audit
        self.registry = registry
        self._cases = cases
        if QUEUE not in runtime.queues:
            # One replay at a time per worker: it must never crowd out production work.
            runtime.queue(QUEUE, worker_concurrency=1)
        step = runtime.step
        self._plan = step(name=f"{WORKFLOW}.plan")(self._plan_step)
        self._batch = step(name=f"{WORKFLOW}.batch")(self._batch_step)
        self._finish = step(name=f"{WORKFLOW}.finish")(self._finish_step)
        self.workflow = runtime.workflow(name=WORKFLOW, queue=QUEUE, data_policy="keep")(
            self._replay
        )

    # -- starting and reading ---------------------------------------------------------------

    def start(
        self,
        model: str,
        version: int,
        *,
        tenant: str = "default",
        actor: str = "system",
        since: float | None = None,
        limit: int = 1000,
        rate: float = 20.0,
        criteria: ReplayCriteria | Mapping[str, Any] | None = None,
    ) -> str:
        """Enqueue a replay of ``model@version`` over the tenant's kept cases of ``model``
        made since ``since`` (all kept ones when None), newest first, at most ``limit``
        (1 to 10000), at ``rate`` cases per second at most (above 0, at most 1000); returns
        its id (its workflow run's) at once, audited as ``replay.started``. Bad input is a
        ReplayInputError naming the field, an unknown model or version a
        ModelNotFoundError; either refusal is audited (``replay.rejected``)."""
        check_tenant(tenant)
        if not isinstance(actor, str) or not 0 < len(actor) <= 300:
            raise DefinitionError("actor must be a string of 1 to 300 characters")
        try:
            chosen = _check(model, version, since, limit, rate, criteria)
            self.registry.get(model, version, tenant=tenant)
            champion = self.registry.aliases(model, tenant=tenant).get("champion")
        except AevosError as exc:
            self.audit.append(
                AuditEvent(
                    action="replay.rejected",
                    actor=actor,
                    tenant=tenant,
                    subject=f"model:{str(model)[:200]}",
                    data={"model": str(model)[:200], "code": exc.code, "reason": exc.message},
                )
            )
            raise
        handle = self.runtime.enqueue(
            self.workflow,
            (model, version, since, limit, float(rate), chosen.to_dict(), actor),
            {},
            StartOptions(tenant=tenant, actor=actor),
        )
        replay = Replay(
            replay_id=handle.run_id,
            tenant=tenant,
            model=model,
            version=version,
            champion=champion,
            status="running",
            criteria=chosen.to_dict(),
            since=None if since is None else float(since),
            limit=limit,
            rate=float(rate),
            requested_by=actor,
            started_at=time.time(),
        )
        with self.store.transaction() as uow:
            if uow.replays.add(replay):
                self.audit.append(_started(replay), uow=uow)
        return handle.run_id

    def get(self, replay_id: str, *, tenant: str = "default") -> Replay:
        """The tenant's replay ``replay_id`` (ReplayNotFoundError if it has none)."""
        check_tenant(tenant)
        if not isinstance(replay_id, str) or not 0 < len(replay_id) <= 200:
            raise ReplayNotFoundError(f"no replay {str(replay_id)[:80]!r}")
        with self.store.reading() as uow:
            found = uow.replays.get(replay_id)
        if found is None or found.tenant != tenant:
            raise ReplayNotFoundError(f"no replay {replay_id[:80]!r}")
        return found

    def latest(self, model: str, version: int, *, tenant: str = "default") -> Replay | None:
        """The newest replay of ``model@version`` (running or finished); None if none."""
        check_tenant(tenant)
        with self.store.reading() as uow:
            return uow.replays.latest(tenant, model, version)

    def list(
        self,
        model: str,
        *,
        tenant: str = "default",
        version: int | None = None,
        limit: int = 50,
    ) -> builtins.list[Replay]:
        """``model``'s replays (of ``version``), newest first; ModelNotFoundError for a
        model the tenant does not have."""
        check_tenant(tenant)
        check_name(model)
        check_limit(limit, MAX_LIST, lambda message: ReplayInputError(message, "limit"))
        if version is not None:
            self.registry.get(model, version, tenant=tenant)
        else:
            self.registry.versions(model, tenant=tenant)
        with self.store.reading() as uow:
            return uow.replays.find(tenant, model, version=version, limit=limit)

    # -- the workflow -----------------------------------------------------------------------

    def _replay(
        self,
        ctx: WorkflowContext,
        model: str,
        version: int,
        since: float | None,
        limit: int,
        rate: float,
        criteria: Mapping[str, Any],
        actor: str,
    ) -> dict[str, Any]:
        tenant = ctx.tenant
        plan: dict[str, Any] = {"champion": None, "threshold": None, "cases": []}
        tallies: builtins.list[dict[str, Any]] = []
        try:
            plan = self._plan(ctx, tenant, model, version, since, limit, rate, criteria, actor)
            ids = [case_id for case_id, _ in plan["cases"]]
            size = batch_size(rate)
            for start in range(0, len(ids), size):
                if start:
                    # Durable: a restart mid-sleep wakes when it was due, not later.
                    ctx.sleep(size / rate)
                batch = ids[start : start + size]
                tallies.append(
                    self._batch(
                        ctx, tenant, model, version, plan["champion"], plan["threshold"], batch
                    )
                )
        except AevosError as exc:
            reason: str | None = failure_reason(exc)
        else:
            reason = None
        return self._finish(ctx, tenant, model, version, criteria, actor, plan, tallies, reason)

    def _plan_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        version: int,
        since: float | None,
        limit: int,
        rate: float,
        criteria: Mapping[str, Any],
        actor: str,
    ) -> dict[str, Any]:
        replay_id = sctx.run_id
        with self.store.transaction() as uow:
            # Started by the service, or (after a crash between enqueueing and recording)
            # made here: the record exists once either way.
            draft = Replay(
                replay_id=replay_id,
                tenant=tenant,
                model=model,
                version=version,
                champion=None,
                status="running",
                criteria=dict(criteria),
                since=since,
                limit=limit,
                rate=rate,
                requested_by=actor,
                started_at=time.time(),
            )
            if uow.replays.add(draft):
                self.audit.append(_started(draft), uow=uow)
        self.registry.get(model, version, tenant=tenant)  # gone since: the replay errs
        champion = self.registry.aliases(model, tenant=tenant).get("champion")
        until = time.time()
        with self.store.transaction() as uow:
            _, threshold = uow.certifications.threshold(tenant, model, version)
            listed = uow.replays.window(tenant, model, since=since, until=until, limit=limit)
            uow.replays.update(replay_id, champion=champion)
        return {
            "champion": champion,
            "threshold": threshold,
            "until": until,
            "cases": [[case_id, at] for case_id, at in listed],
        }

    def _batch_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        version: int,
        champion: int | None,
        threshold: float | None,
        ids: Sequence[str],
    ) -> dict[str, Any]:
        tally = empty_tally()
        tally["listed"] = len(ids)
        now = time.time()
        opened = self._cases().open_many(tenant, ids)
        # Forgotten, or past their retention though not yet swept: expired either way.
        live = [opened[i] for i in ids if i in opened and _alive(opened[i], now)]
        tally["expired"] = len(ids) - len(live)
        if not live:
            return tally
        moments = [case.created_at for case in live]
        with self.store.reading() as uow:
            records = uow.replays.answers(
                tenant,
                [(case.call_id or case.case_id, case.run_id) for case in live],
                since=min(moments) - _RECORD_SLACK,
                until=max(moments) + _RECORD_SLACK,
            )
            labels = uow.labels.effective_of(tenant, [case.case_id for case in live])
        candidate = self.registry.load(self.registry.get(model, version, tenant=tenant))
        champion_model = _Lazy(self.registry, model, champion, tenant)
        for case in live:
            started = time.perf_counter()
            try:
                prediction = candidate.predict(case.input)
            except Exception as exc:
                # The input may be quoted in the message: the type only.
                log.warning(
                    "replay %s: %s raised on case %s", sctx.run_id, type(exc).__name__, case.case_id
                )
                tally["errors"] += 1
                continue
            tally["latencies"].append(round((time.perf_counter() - started) * 1000.0, 3))
            tally["decided"] += 1
            tally["cost"] += float(prediction.cost or 0.0)
            label = prediction.label
            confidence = prediction.confidence
            if threshold is not None and confidence is not None and confidence >= threshold:
                tally["above"] += 1
            answer = _answered(records.get(case.call_id or case.case_id, []), champion)
            if answer is not None:
                tally["champion_recorded"] += 1
            else:
                answer = champion_model.decide(case)
                tally["champion_decided"] += int(answer is not None)
            if answer is not None:
                tally["compared"] += 1
                tally["agreed"] += int(same_label(label, answer[0]))
            truth = labels.get(case.case_id)
            if truth is not None:
                tally["labelled"] += 1
                tally["correct"] += int(same_label(label, truth.label))
                if answer is not None:
                    tally["champion_labelled"] += 1
                    tally["champion_correct"] += int(same_label(answer[0], truth.label))
        return tally

    def _finish_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        version: int,
        criteria: Mapping[str, Any],
        actor: str,
        plan: Mapping[str, Any],
        tallies: Sequence[Mapping[str, Any]],
        error: str | None,
    ) -> dict[str, Any]:
        replay_id = sctx.run_id
        found = figures(tallies, threshold=plan["threshold"], champion=plan["champion"])
        if error is not None:
            status, passed, reason = "error", None, error
        else:
            status, passed, reason = judge(found, ReplayCriteria.from_dict(criteria))
        now = time.time()
        with self.store.transaction() as uow:
            # A plan that failed before its record was made: the record exists once now.
            uow.replays.add(
                Replay(
                    replay_id=replay_id,
                    tenant=tenant,
                    model=model,
                    version=version,
                    champion=plan["champion"],
                    status="running",
                    criteria=dict(criteria),
                    requested_by=actor,
                    started_at=now,
                )
            )
            uow.replays.update(
                replay_id,
                status=status,
                passed=passed,
                reason=reason,
                figures=found,
                finished_at=now,
            )
            self.audit.append(
                AuditEvent(
                    action="replay.finished",
                    actor=_actor(replay_id),
                    tenant=tenant,
                    subject=f"model:{model}@{version}",
                    run_id=replay_id,
                    data={
                        "replay_id": replay_id,
                        "model": model,
                        "version": version,
                        "champion": plan["champion"],
                        "status": status,
                        "passed": passed,
                        "reason": reason,
                        "figures": found,
                    },
                ),
                uow=uow,
            )
            stored = uow.replays.get(replay_id)
        assert stored is not None  # the plan step made it
        # Shown with the version wherever versions are (aevos models show, the API); a
        # version that never was, or is gone since, keeps its story in the record and audit.
        with contextlib.suppress(ModelNotFoundError):
            self.registry.set_tags(
                model,
                version,
                {REPLAY_TAG: f"{status} {replay_id}"},
                tenant=tenant,
                by=_actor(replay_id),
            )
        return stored.to_dict()


# -- helpers ----------------------------------------------------------------------------------


class _Lazy:
    """The champion's adapter, loaded on the first case it must decide itself."""

    def __init__(
        self, registry: ModelRegistry, model: str, version: int | None, tenant: str
    ) -> None:
        self.registry, self.model, self.version, self.tenant = registry, model, version, tenant
        self._adapter: ModelAdapter | None = None

    def decide(self, case: KeptCase) -> tuple[Any] | None:
        """``(label,)`` of the champion on ``case``; None without a champion or if it raised."""
        if self.version is None:
            return None
        if self._adapter is None:
            found = self.registry.get(self.model, self.version, tenant=self.tenant)
            self._adapter = self.registry.load(found)
        try:
            return (self._adapter.predict(case.input).label,)
        except Exception as exc:
            log.warning(
                "replay: the champion raised %s on case %s", type(exc).__name__, case.case_id
            )
            return None


def _answered(records: Sequence[Mapping[str, Any]], champion: int | None) -> tuple[Any] | None:
    """``(label,)`` the champion gave in production, from the call's ``model.called``
    records: the last successful one of the champion version that was not a shadow call.
    None if there is none, or its label was recorded only by digest."""
    if champion is None:
        return None
    for data in reversed(records):
        if (
            data.get("route") != "shadow"
            and data.get("outcome") == "ok"
            and data.get("version") == champion
            and not isinstance(data.get("label"), dict)
        ):
            return (data.get("label"),)
    return None


def _alive(case: KeptCase, now: float) -> bool:
    return case.expires_at is None or case.expires_at > now


def _started(replay: Replay) -> AuditEvent:
    return AuditEvent(
        action="replay.started",
        actor=replay.requested_by,
        tenant=replay.tenant,
        subject=f"model:{replay.model}@{replay.version}",
        run_id=replay.replay_id,
        data={
            "replay_id": replay.replay_id,
            "model": replay.model,
            "version": replay.version,
            "champion": replay.champion,
            "since": replay.since,
            "limit": replay.limit,
            "rate": replay.rate,
            "criteria": dict(replay.criteria),
        },
    )


def _check(
    model: object,
    version: object,
    since: object,
    limit: object,
    rate: object,
    criteria: ReplayCriteria | Mapping[str, Any] | None,
) -> ReplayCriteria:
    """The replay's criteria, once every input is checked (ReplayInputError naming it)."""
    if not isinstance(model, str):
        raise ReplayInputError("model is a model name", "model")
    check_name(model)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ReplayInputError(f"version must be a version number >= 1, got {version!r}", "version")
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int | float) or not math.isfinite(since)
    ):
        raise ReplayInputError("since is a time in epoch seconds", "since")
    check_limit(limit, MAX_LIMIT, lambda message: ReplayInputError(message, "limit"))
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not math.isfinite(rate)
        or not 0 < rate <= MAX_RATE
    ):
        raise ReplayInputError(
            f"rate must be a number of cases per second above 0, at most {MAX_RATE:g}", "rate"
        )
    if criteria is None:
        return ReplayCriteria()
    if isinstance(criteria, ReplayCriteria):
        return criteria
    return ReplayCriteria.from_dict(criteria)
