"""The rollout controller: what a tick does to each active rollout.

For a progressing rollout it measures the step window (``analysis.measure``) and judges it
(``analysis.judge``): ``successful`` moves to the next step, or after the last one to the
promotion gate; ``failed`` rolls back at once (the gateway routes by the rollout's state,
so traffic returns to the champion within its cache TTL); ``inconclusive`` (the deadline
passed with too little evidence) pauses it and opens a task for an operator; ``running``
waits. An analysis that raises leaves the rollout where it is with the error as its reason,
to be tried again next tick, unless its deadline has passed: then it is paused, like an
inconclusive step, so no rollout stays progressing past its deadline.

Every move is revision-fenced (:meth:`Rollouts.apply`): workers ticking at once move each
rollout once; the losers skip it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import AevosError, RolloutConflictError
from ..records.rollout import ACTIVE_STATES, RolloutRecord
from . import analysis
from .actions import AWAITING_APPROVAL, INCONCLUSIVE
from .analysis import Criteria

if TYPE_CHECKING:
    from .actions import RolloutActions
    from .operator import OperatorTasks

log = logging.getLogger("aevos.rollouts")

ACTOR = "system:rollouts"


def tick(service: RolloutActions, operators: OperatorTasks, now: float) -> list[str]:
    with service.store.reading() as uow:
        records = uow.rollouts.in_states(ACTIVE_STATES)
    moved = []
    for record in records:
        try:
            if _tick_one(service, operators, record, now):
                moved.append(record.rollout_id)
        except RolloutConflictError:
            continue  # another worker or an operator moved it first
        except AevosError as exc:
            log.warning("rollout %s not advanced: %s", record.rollout_id, exc.code)
    return moved


def _tick_one(
    service: RolloutActions, operators: OperatorTasks, record: RolloutRecord, now: float
) -> bool:
    if record.state == "progressing":
        return _progress(service, operators, record, now)
    if record.state == "replaying":
        return _replaying(service, operators, record, now)
    return _paused(service, operators, record)


def _progress(
    service: RolloutActions, operators: OperatorTasks, record: RolloutRecord, now: float
) -> bool:
    deadline_passed = record.deadline is not None and now >= record.deadline
    share = record.steps[record.step]
    try:
        candidate, champion = analysis.measure(
            service.store,
            record.tenant,
            record.model,
            record.version,
            record.champion,
            record.step_started_at,
            now,
        )
        verdict = analysis.judge(
            candidate,
            champion,
            Criteria.from_dict(dict(record.criteria)),
            shadow=share == 0,
            deadline_passed=deadline_passed,
        )
    except Exception as exc:  # the analysis of one rollout must not stop the others
        error = f"analysis failed: {type(exc).__name__}: {str(exc)[:300]}"
        log.warning("rollout %s: %s", record.rollout_id, error)
        if deadline_passed:
            _inconclusive(
                service, operators, record, f"{INCONCLUSIVE}: the deadline passed while {error}"
            )
            return True
        if record.reason != error:
            with service.store.transaction() as uow:
                uow.rollouts.transition(record.rollout_id, record.revision, now, reason=error)
        return False
    outcome = verdict.outcome
    found = verdict.to_record()
    reasons = "; ".join(verdict.reasons)
    if outcome == "running":
        return False
    if outcome == "failed":
        service.move(
            record,
            "rollout.rolled_back",
            ACTOR,
            f"failed at {_name(share)}: {reasons}",
            verdict=found,
            state="rolled_back",
            deadline=None,
        )
        return True
    if outcome == "inconclusive":
        _inconclusive(
            service, operators, record, f"{INCONCLUSIVE} at {_name(share)}: {reasons}", found
        )
        return True
    # successful
    if record.step + 1 < len(record.steps):
        service.move(
            record,
            "rollout.advanced",
            ACTOR,
            f"{_name(share)} successful: {reasons}",
            verdict=found,
            step=record.step + 1,
            step_started_at=now,
            deadline=now + record.step_seconds,
        )
        return True
    try:
        service.through_gate(record, ACTOR, f"every step successful: {reasons}", found)
    except RolloutConflictError:
        raise
    except AevosError as exc:
        # The gate could not decide (a policy missing or failing): like a failing analysis,
        # recorded and retried, and paused for a person once the deadline passed.
        error = f"promotion gate failed: {exc.code}: {exc.message[:300]}"
        log.warning("rollout %s: %s", record.rollout_id, error)
        if deadline_passed:
            _inconclusive(service, operators, record, f"{INCONCLUSIVE}: {error}", found)
            return True
        if record.reason != error:
            with service.store.transaction() as uow:
                uow.rollouts.transition(record.rollout_id, record.revision, now, reason=error)
        return False
    return True


def _inconclusive(
    service: RolloutActions,
    operators: OperatorTasks,
    record: RolloutRecord,
    reason: str,
    verdict: dict[str, Any] | None = None,
) -> None:
    paused = service.move(
        record,
        "rollout.paused",
        ACTOR,
        reason,
        verdict=verdict,
        state="paused",
        deadline=None,
    )
    operators.open(paused.rollout_id, paused.tenant, paused.revision)


def _replaying(
    service: RolloutActions, operators: OperatorTasks, record: RolloutRecord, now: float
) -> bool:
    deadline_passed = record.deadline is not None and now >= record.deadline
    try:
        replays = service.replays
        result = (
            None
            if replays is None
            else replays.latest(record.model, record.version, tenant=record.tenant)
        )
        if result is None and replays is not None and not deadline_passed:
            # Started but not recorded (a crash between the rollout's start and the replay's).
            replays.start(record.model, record.version, tenant=record.tenant, actor=ACTOR)
            return False
    except Exception as exc:  # like a failing analysis: recorded, retried, paused at the deadline
        error = f"replay unreadable: {type(exc).__name__}: {str(exc)[:300]}"
        log.warning("rollout %s: %s", record.rollout_id, error)
        if deadline_passed:
            _inconclusive(service, operators, record, f"{INCONCLUSIVE}: {error}")
            return True
        if record.reason != error:
            with service.store.transaction() as uow:
                uow.rollouts.transition(record.rollout_id, record.revision, now, reason=error)
        return False
    status = None if result is None else str(getattr(result, "status", ""))
    if status == "passed":
        service.move(
            record,
            "rollout.advanced",
            ACTOR,
            "replay passed",
            state="progressing",
            step_started_at=now,
            deadline=now + record.step_seconds,
        )
        return True
    if status in ("failed", "error"):
        why = str(getattr(result, "reason", "") or status)
        service.move(
            record,
            "rollout.failed",
            ACTOR,
            f"replay {status}: {why}",
            state="failed",
            deadline=None,
        )
        return True
    if status == "inconclusive":
        why = str(getattr(result, "reason", "") or "too few cases")
        _inconclusive(service, operators, record, f"{INCONCLUSIVE}: replay inconclusive: {why}")
        return True
    if deadline_passed:
        _inconclusive(
            service, operators, record, f"{INCONCLUSIVE}: the replay did not finish by the deadline"
        )
        return True
    return False


def _paused(service: RolloutActions, operators: OperatorTasks, record: RolloutRecord) -> bool:
    if record.reason.startswith(AWAITING_APPROVAL):
        # The approvals flow moves the alias; the rollout follows it here.
        aliases = service.registry.aliases(record.model, tenant=record.tenant)
        if aliases.get("champion") == record.version:
            service.move(
                record,
                "rollout.promoted",
                ACTOR,
                "promotion approved",
                state="promoted",
                deadline=None,
            )
            return True
    elif record.reason.startswith(INCONCLUSIVE):
        # Idempotent: a crash between the pause and the task's start is mended here.
        operators.open(record.rollout_id, record.tenant, record.revision)
    return False


def _name(share: int) -> str:
    return "shadow" if share == 0 else f"canary {share}%"
