"""What can be done to rollouts (the base of ``app.rollouts``): start, read, act.

Each transition is one unit of work: the rollout's row changes only if it is still at the
revision the actor read (so of two operators or two workers acting at once, one wins and
the other gets :class:`~aevos.errors.RolloutConflictError`), and its ``rollout.*`` audit
record commits with it. The controller that moves rollouts on evidence is
:mod:`aevos.rollouts.controller` (``tick``); the operator task it opens for an
inconclusive step is :mod:`aevos.rollouts.operator`.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..audit import AuditEvent
from ..errors import (
    AevosError,
    RolloutConflictError,
    RolloutInputError,
    RolloutNotFoundError,
    check_limit,
)
from ..identity import Principal, Role, check_tenant
from ..models.registry import check_name
from ..records.rollout import ACTIVE_STATES, RolloutRecord
from .analysis import Criteria
from .model import (
    DEFAULT_STEPS,
    Rollout,
    Transition,
    check_criteria,
    check_minutes,
    check_reason,
    check_steps,
    check_text,
    step_name,
)

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..kernel.runtime import Runtime
    from ..models.promotion import PromotionGate
    from ..models.registry import ModelRegistry
    from ..people.approvals import Approvals
    from ..storage import Store, UnitOfWork

log = logging.getLogger("aevos.rollouts")

MAX_LIST = 500
#: Reasons the controller writes, which it reads back (an operator task is due, an approval
#: is awaited).
INCONCLUSIVE = "inconclusive"
AWAITING_APPROVAL = "awaiting approval"


class ReplayResult(Protocol):
    status: str  # running | passed | failed | error
    reason: str


class ReplayHook(Protocol):
    """What a rollout with ``replay=True`` needs of the replay service."""

    def start(self, model: str, version: int, *, tenant: str, actor: str) -> str: ...

    def latest(self, model: str, version: int, *, tenant: str) -> Any: ...


def principal_of(actor: str, tenant: str) -> Principal:
    """An actor string (``role:name#token``) as the principal an approval records, so four
    eyes compares the same person the access layer would."""
    role_part, _, rest = actor.partition(":")
    name, _, token = rest.partition("#")
    try:
        role = Role(role_part)
    except ValueError:
        role = Role.SERVICE
    if not rest or not name:
        return Principal(token_id=actor[:200], tenant=tenant, role=role, name=actor[:200])
    return Principal(token_id=token or name, tenant=tenant, role=role, name=name)


class RolloutActions:
    """Starting, reading and transitions of rollouts; :class:`~aevos.rollouts.Rollouts`
    adds the controller and the operator tasks."""

    def __init__(
        self,
        runtime: Runtime,
        store: Store,
        audit: AuditLog,
        registry: ModelRegistry,
        *,
        promotions: Callable[[], PromotionGate],
        approvals: Callable[[], Approvals],
        replays: Callable[[], ReplayHook | None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.audit = audit
        self.registry = registry
        self._promotions = promotions
        self._approvals = approvals
        # The replay service (``app.replays``), built when first needed: a rollout with
        # ``replay=True`` needs one.
        self._replays_factory = replays
        self._replays: ReplayHook | None = None

    @property
    def replays(self) -> ReplayHook | None:
        """The replay service rollouts with ``replay=True`` use (None: there is none)."""
        if self._replays is None and self._replays_factory is not None:
            self._replays = self._replays_factory()
        return self._replays

    @replays.setter
    def replays(self, service: ReplayHook | None) -> None:
        self._replays = service

    # -- starting ---------------------------------------------------------------------------

    def start(
        self,
        model: str,
        version: int,
        *,
        tenant: str = "default",
        actor: str = "system",
        steps: tuple[int, ...] | builtins.list[int] = DEFAULT_STEPS,
        criteria: Criteria | Mapping[str, Any] | None = None,
        step_minutes: float = 10.0,
        replay: bool = False,
        policy: str = "promotion-gate",
    ) -> Rollout:
        """Start exposing ``model@version`` step by step (``rollout.started``). Refused,
        and the refusal audited (``rollout.rejected``): an unknown model or version
        (ModelNotFoundError), the champion itself, bad steps, step_minutes, criteria or
        policy (RolloutInputError naming the field), and a second active rollout of the
        model (RolloutConflictError)."""
        check_name(model)
        check_tenant(tenant)
        check_text("actor", actor, 300)
        try:
            record = self._draft(
                model, version, tenant, actor, steps, criteria, step_minutes, replay, policy
            )
            with self.store.transaction() as uow:
                if not uow.rollouts.insert(record):
                    current = uow.rollouts.active(tenant, model)
                    raise RolloutConflictError(
                        f"model {model!r} already has an active rollout"
                        + ("" if current is None else f" ({current.rollout_id}, {current.state})")
                        + "; abort or finish it first"
                    )
                self._audit(uow, record, "rollout.started", actor, None, record.step, "")
        except AevosError as exc:
            self._reject(tenant, actor, model, version, exc)
            raise
        if replay:
            replays = self.replays
            assert replays is not None  # checked in _draft
            replays.start(model, record.version, tenant=tenant, actor=actor)
        return Rollout.of(record)

    def _draft(
        self,
        model: str,
        version: object,
        tenant: str,
        actor: str,
        steps: object,
        criteria: object,
        step_minutes: object,
        replay: object,
        policy: object,
    ) -> RolloutRecord:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RolloutInputError(f"version must be an integer >= 1, got {version!r}", "version")
        plan = check_steps(steps)
        minutes = check_minutes(step_minutes)
        judged = check_criteria(criteria)
        check_text("policy", policy, 100)
        assert isinstance(policy, str)
        if not isinstance(replay, bool):
            raise RolloutInputError("replay is true or false", "replay")
        if replay and self.replays is None:
            raise RolloutInputError("replay needs the replay service (app.replays)", "replay")
        self.registry.get(model, version, tenant=tenant)  # ModelNotFoundError
        champion = self.registry.aliases(model, tenant=tenant).get("champion")
        if champion == version:
            raise RolloutInputError(
                f"version {version} is the champion of {model!r}: nothing to roll out", "version"
            )
        now = time.time()
        seconds = minutes * 60.0
        return RolloutRecord(
            rollout_id="ro_" + uuid.uuid4().hex[:20],
            tenant=tenant,
            model=model,
            version=version,
            champion=champion,
            steps=plan,
            step=0,
            state="replaying" if replay else "progressing",
            criteria=judged.to_dict(),
            step_seconds=seconds,
            step_started_at=now,
            deadline=now + seconds,
            replay=replay,
            policy=policy,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )

    def _reject(
        self, tenant: str, actor: str, model: str, version: object, exc: AevosError
    ) -> None:
        data: dict[str, Any] = {"model": model, "reason": exc.code, "detail": exc.message}
        if isinstance(version, int) and not isinstance(version, bool):
            data["version"] = version
        field = getattr(exc, "field", None)
        if field is not None:
            data["field"] = field
        try:
            self.audit.append(
                AuditEvent(
                    action="rollout.rejected",
                    actor=actor,
                    tenant=tenant,
                    subject=f"model:{model}",
                    data=data,
                )
            )
        except AevosError as failure:  # the refusal stands even if its record cannot be kept
            log.warning("refused rollout of %s not audited: %s", model, failure.code)

    # -- reading ----------------------------------------------------------------------------

    def get(self, rollout_id: str, *, tenant: str = "default") -> Rollout:
        return Rollout.of(self._record(rollout_id, tenant))

    def _record(self, rollout_id: str, tenant: str) -> RolloutRecord:
        if not isinstance(rollout_id, str) or not 0 < len(rollout_id) <= 64:
            raise RolloutNotFoundError(f"no rollout {str(rollout_id)[:80]!r}")
        with self.store.reading() as uow:
            found = uow.rollouts.get(tenant, rollout_id)
        if found is None:
            raise RolloutNotFoundError(f"no rollout {rollout_id!r}")
        return found

    def list(
        self,
        *,
        tenant: str = "default",
        model: str | None = None,
        active: bool | None = None,
        limit: int = 100,
    ) -> builtins.list[Rollout]:
        """The tenant's rollouts, newest first."""
        check_limit(limit, MAX_LIST)
        with self.store.reading() as uow:
            found = uow.rollouts.list(tenant, model=model, active=active, limit=limit)
        return [Rollout.of(r) for r in found]

    def active(self, model: str, *, tenant: str = "default") -> Rollout | None:
        with self.store.reading() as uow:
            found = uow.rollouts.active(tenant, model)
        return None if found is None else Rollout.of(found)

    def history(self, rollout_id: str, *, tenant: str = "default") -> builtins.list[Transition]:
        """The rollout's audited transitions, oldest first."""
        self._record(rollout_id, tenant)
        with self.store.reading() as uow:
            rows = uow.rollouts.history(tenant, rollout_id)
        out = []
        for at, action, actor, data in rows:
            out.append(
                Transition(
                    at=at,
                    action=action,
                    actor=actor,
                    from_step=data.get("from_step"),
                    to_step=data.get("to_step"),
                    step_name=str(data.get("step_name", "")),
                    reason=str(data.get("reason", "")),
                    analysis=data.get("analysis"),
                )
            )
        return out

    # -- operators' actions -----------------------------------------------------------------

    def pause(
        self, rollout_id: str, *, tenant: str = "default", actor: str = "system", reason: str = ""
    ) -> Rollout:
        """Hold the rollout at its step (its split stays; no deadline) until resumed."""
        current = self._acting(rollout_id, tenant, actor, reason, ("replaying", "progressing"))
        return self.move(
            current,
            "rollout.paused",
            actor,
            reason or f"paused by {actor}",
            state="paused",
            deadline=None,
        )

    def resume(
        self, rollout_id: str, *, tenant: str = "default", actor: str = "system", reason: str = ""
    ) -> Rollout:
        """Continue a paused rollout: its step starts a fresh window and deadline."""
        current = self._acting(rollout_id, tenant, actor, reason, ("paused",))
        now = time.time()
        return self.move(
            current,
            "rollout.resumed",
            actor,
            reason or f"resumed by {actor}",
            state="progressing",
            step_started_at=now,
            deadline=now + current.step_seconds,
        )

    def abort(
        self, rollout_id: str, *, tenant: str = "default", actor: str = "system", reason: str = ""
    ) -> Rollout:
        """End the rollout: traffic back to the champion, nothing promoted."""
        current = self._acting(rollout_id, tenant, actor, reason, tuple(ACTIVE_STATES))
        return self.move(
            current, "rollout.aborted", actor, reason or f"aborted by {actor}", state="aborted"
        )

    def rollback(
        self, rollout_id: str, *, tenant: str = "default", actor: str = "system", reason: str = ""
    ) -> Rollout:
        """End the rollout as a rejected candidate (``rollout.rolled_back``)."""
        current = self._acting(rollout_id, tenant, actor, reason, tuple(ACTIVE_STATES))
        return self.move(
            current,
            "rollout.rolled_back",
            actor,
            reason or f"rolled back by {actor}",
            state="rolled_back",
        )

    def promote(
        self, rollout_id: str, *, tenant: str = "default", actor: str = "system", reason: str = ""
    ) -> Rollout:
        """Promote the candidate now, through the promotion gate (the rollout's policy):
        ``allow`` moves the champion alias and ends the rollout ``promoted`` in one
        transaction; ``approve`` leaves it paused awaiting a second person's approval;
        ``deny`` leaves it paused with the policy's reason."""
        current = self._acting(rollout_id, tenant, actor, reason, tuple(ACTIVE_STATES))
        return self.through_gate(current, actor, reason, current.last_verdict)

    def _acting(
        self, rollout_id: str, tenant: str, actor: str, reason: str, allowed: tuple[str, ...]
    ) -> RolloutRecord:
        check_text("actor", actor, 300)
        check_reason(reason)
        current = self._record(rollout_id, tenant)
        if current.state not in allowed:
            raise RolloutConflictError(
                f"rollout {rollout_id} is {current.state}: allowed only when "
                + " or ".join(sorted(allowed))
            )
        return current

    # -- transitions ------------------------------------------------------------------------

    def move(
        self,
        current: RolloutRecord,
        action: str,
        actor: str,
        reason: str,
        *,
        verdict: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> Rollout:
        """Apply one transition (state and audit together) if ``current`` is still the
        rollout's revision; RolloutConflictError when another actor moved it first."""
        with self.store.transaction() as uow:
            self.apply(uow, current, action, actor, reason, verdict=verdict, **values)
            updated = uow.rollouts.get(current.tenant, current.rollout_id)
        assert updated is not None  # just updated in this transaction
        return Rollout.of(updated)

    def apply(
        self,
        uow: UnitOfWork,
        current: RolloutRecord,
        action: str,
        actor: str,
        reason: str,
        *,
        verdict: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> None:
        now = time.time()
        if verdict is not None:
            values["last_verdict"] = dict(verdict)
        moved = uow.rollouts.transition(
            current.rollout_id, current.revision, now, reason=reason[:2000], **values
        )
        if not moved:
            raise RolloutConflictError(
                f"rollout {current.rollout_id} changed while {action} was applied "
                "(another operator or worker acted first); read it again"
            )
        to_step = values.get("step", current.step)
        self._audit(uow, current, action, actor, current.step, to_step, reason, verdict)

    def _audit(
        self,
        uow: UnitOfWork,
        record: RolloutRecord,
        action: str,
        actor: str,
        from_step: int | None,
        to_step: int | None,
        reason: str,
        verdict: Mapping[str, Any] | None = None,
    ) -> None:
        share = record.steps[to_step if to_step is not None else record.step]
        self.audit.append(
            AuditEvent(
                action=action,
                actor=actor,
                tenant=record.tenant,
                subject=f"rollout:{record.rollout_id}",
                data={
                    "rollout_id": record.rollout_id,
                    "model": record.model,
                    "version": record.version,
                    "champion": record.champion,
                    "from_step": from_step,
                    "to_step": to_step,
                    "step_name": step_name(share),
                    "reason": reason[:2000],
                    "analysis": None if verdict is None else dict(verdict),
                },
            ),
            uow=uow,
        )

    def through_gate(
        self,
        current: RolloutRecord,
        actor: str,
        reason: str,
        verdict: Mapping[str, Any] | None,
    ) -> Rollout:
        """The final promotion, judged by the rollout's policy on the step's evidence."""
        gate = self._promotions()
        evidence = _evidence(current, verdict)
        judged = gate.judge(
            current.model,
            current.version,
            evidence=evidence,
            tenant=current.tenant,
            actor=actor,
            policy=current.policy,
        )
        decision = judged.decision
        why = reason or decision.reason or decision.result
        if decision.result == "allow":
            gate.promote(
                current.model,
                current.version,
                alias="champion",
                tenant=current.tenant,
                by=actor,
                also=lambda uow: self.apply(
                    uow,
                    current,
                    "rollout.promoted",
                    actor,
                    why,
                    verdict=verdict,
                    state="promoted",
                    deadline=None,
                ),
            )
            return self.get(current.rollout_id, tenant=current.tenant)
        if decision.result == "approve":
            approval = self._approvals().request(
                principal_of(actor, current.tenant),
                current.model,
                current.version,
                alias="champion",
                alias_was=judged.alias_was,
                policy=current.policy,
                evidence=evidence,
                decision=decision,
            )
            return self.move(
                current,
                "rollout.paused",
                actor,
                f"{AWAITING_APPROVAL} {approval.approval_id}: {decision.reason}",
                verdict=verdict,
                state="paused",
                deadline=None,
            )
        return self.move(
            current,
            "rollout.paused",
            actor,
            f"promotion denied by policy {current.policy}: {decision.reason}",
            verdict=verdict,
            state="paused",
            deadline=None,
        )


def _evidence(record: RolloutRecord, verdict: Mapping[str, Any] | None) -> dict[str, Any]:
    """The promotion policy's input from the step's figures: accuracy is the realised
    precision where labels exist, else the agreement with the champion, else 1 - error rate."""

    def side(figures: Mapping[str, Any] | None) -> dict[str, Any]:
        f = dict(figures or {})
        accuracy = f.get("precision")
        if accuracy is None:
            accuracy = f.get("agreement")
        if accuracy is None:
            accuracy = 1.0 - float(f.get("error_rate") or 0.0)
        samples = int(f.get("labelled") or 0) or int(f.get("calls") or 0)
        return {"accuracy": float(accuracy), "calibration_error": 0.0, "samples": samples}

    verdict = dict(verdict or {})
    return {
        "candidate": side(verdict.get("candidate")),
        "champion": side(verdict.get("champion")),
        "rollout": {"rollout_id": record.rollout_id, "steps": list(record.steps)},
    }
