"""Call records: what every model call leaves behind, and how it reaches the audit log.

Each model call (each attempt: primary, canary, cascade stage, fallback, shadow) becomes one
:class:`CallRecord` and one ``model.called`` audit record holding the model, version, route,
outcome, confidence, the input's SHA-256 (never the input), latency, tokens, cost, tenant,
and the workflow, run and step when called from one.

Calls inside a workflow are recorded durably with the step's result, in its transaction
(see :meth:`Gateway.govern`). Calls outside workflows, and shadow calls, are buffered
here and appended in batches by a background thread, at most ``interval`` seconds apart (and
sooner when ``batch`` records wait), and on ``flush()`` / ``close()``: a durable commit per
call would cost more than the gateway's whole per-call overhead target. A process that dies
loses at most the last interval's records of such calls (their budget usage is already in
the database).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent, AuditLog
from ..codec import input_digest
from ..errors import AevosError, InvalidAuditEventError
from ..storage.cases import CaseRow

if TYPE_CHECKING:
    from ..cases import KeptCases, NewCase

__all__ = ["CallRecord", "CallStats", "Recorder", "input_digest", "seal_case"]

log = logging.getLogger("aevos.gateway")

_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_MAX_LABEL = 120


def _safe_label(label: Any) -> Any:
    """Class labels are recorded as they are; long text (an LLM's answer may quote its
    input) only by digest."""
    if label is None or isinstance(label, bool | int | float):
        return label
    if isinstance(label, str) and len(label) <= _MAX_LABEL:
        return label
    try:
        text = _CANONICAL.encode(label)
    except (TypeError, ValueError):
        text = type(label).__name__
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


@dataclass(slots=True)
class CallRecord:
    """One model call as recorded."""

    call_id: str
    tenant: str
    actor: str
    model: str
    version: int | None  # None when the reference did not resolve
    ref: str  # what was asked for: an alias, "latest" or a version number
    route: str  # primary | canary | cascade:N | fallback:N | shadow
    outcome: str  # "ok" or an error code
    input_digest: str
    latency_ms: float
    confidence: float | None = None
    label: Any = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    error_type: str | None = None
    workflow: str | None = None
    run_id: str | None = None
    seq: int | None = None
    key_digest: str | None = None
    # The model_call policy's decision on this call (its audit record's data), or
    # {"bypassed": reason} for a call that skipped the policy on purpose.
    policy: dict[str, Any] | None = None
    # The digest of the call's kept case when it differs from input_digest (the data policy
    # tokenised what the model was given): both are recorded, never silently one of them.
    case_digest: str | None = None
    # For traces (aevos.telemetry.tracing): the answering version's flavor, and the model
    # the provider says answered (an OpenAI-compatible server's ``model``), when it says.
    flavor: str | None = None
    response_model: str | None = None
    # The tools an LLM asked for ({id, name, arguments_sha256}; never the arguments), and
    # whether its answer was streamed.
    tool_calls: list[dict[str, str]] | None = None
    streamed: bool = False

    @property
    def version_ref(self) -> str:
        return f"{self.model}@{self.version if self.version is not None else self.ref}"

    def event(self) -> AuditEvent:
        data: dict[str, Any] = {
            "call_id": self.call_id,
            "model": self.model,
            "version": self.version,
            "ref": self.ref,
            "route": self.route,
            "outcome": self.outcome,
            "input_sha256": self.input_digest,
            "latency_ms": round(self.latency_ms, 3),
            "confidence": self.confidence,
            "label": _safe_label(self.label),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": self.cost,
        }
        if self.error_type is not None:
            data["error_type"] = self.error_type
        if self.workflow is not None:
            data["workflow"] = self.workflow
        if self.seq is not None:
            data["seq"] = self.seq
        if self.key_digest is not None:
            data["key_sha256"] = self.key_digest
        if self.policy is not None:
            data["policy"] = _policy_ref(self.policy)
        if self.case_digest is not None:
            data["case_sha256"] = self.case_digest
        if self.tool_calls:
            data["tool_calls"] = self.tool_calls
        if self.streamed:
            data["streamed"] = True
        return AuditEvent(
            action="model.called",
            actor=self.actor,
            tenant=self.tenant,
            subject=f"model:{self.version_ref}",
            run_id=self.run_id,
            data=data,
        )

    def events(self) -> list[AuditEvent]:
        """The call's audit records: its policy decision (or the bypass), then the call."""
        if self.policy is None:
            return [self.event()]
        link: dict[str, Any] = {
            "call_id": self.call_id,
            "model": self.version_ref,
            "route": self.route,
        }
        if self.seq is not None:
            link["seq"] = self.seq
        if "bypassed" in self.policy:
            action, subject = "policy.bypassed", f"model:{self.version_ref}"
        else:
            action = "policy.decided"
            subject = f"policy:{self.policy['policy']}@{self.policy['version']}"
        decision = AuditEvent(
            action=action,
            actor=self.actor,
            tenant=self.tenant,
            subject=subject,
            run_id=self.run_id,
            data={**self.policy, **link},
        )
        return [decision, self.event()]


def seal_case(cases: KeptCases, case: NewCase, records: Sequence[CallRecord]) -> CaseRow | None:
    """The sealed case of a model call, or None (not kept); when the kept input differs
    from what the model was given, its digest goes on the call's ``records`` as well.

    A case that cannot be sealed is logged by its error code: keeping what a model saw
    must not fail the decision it made.
    """
    try:
        row = cases.seal(case)
    except AevosError as exc:
        log.error("the case of model call %s was not kept: %s", case.case_id, exc.code)
        return None
    if row is not None and row.input_digest != case.model_input_digest:
        for record in records:
            if record.call_id == case.case_id:
                record.case_digest = row.input_digest
    return row


def _policy_ref(policy: dict[str, Any]) -> dict[str, Any]:
    """What the ``model.called`` record keeps of its decision: enough to find it."""
    if "bypassed" in policy:
        return {"bypassed": True}
    return {
        "name": policy["policy"],
        "version": policy["version"],
        "result": policy["result"],
        "decision_id": policy["decision_id"],
    }


@dataclass
class CallStats:
    """Counters for one (tenant, version, route, outcome), since the gateway started."""

    calls: int = 0
    latency_ms: float = 0.0
    cost: float = 0.0
    tokens: int = 0


class Recorder:
    """Buffers call records and appends them to the audit log from a background thread."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        interval: float = 0.2,
        batch: int = 1000,
        max_pending: int = 200_000,
    ) -> None:
        self.audit = audit
        self.interval = interval
        self.batch = batch
        self.max_pending = max_pending
        self._pending: list[CallRecord] = []
        # Cases of calls outside workflows, sealed here in the background: encrypting (and
        # applying the data policy) stays off the caller's path.
        self._pending_cases: list[tuple[KeptCases, NewCase]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats: dict[tuple[str, str, int | None, str, str], CallStats] = {}
        self.written = 0
        self.dropped = 0

    def add(
        self, records: Sequence[CallRecord], cases: Sequence[tuple[KeptCases, NewCase]] = ()
    ) -> None:
        """Queue ``records`` (and the cases of their calls, to seal and keep) for the next
        flush; a call's records and its case always arrive in one ``add``."""
        with self._lock:
            self._pending.extend(records)
            self._pending_cases.extend(cases)
            waiting = len(self._pending)
            self._count(records)
        if self._thread is None:
            self._start()
        if waiting >= self.batch:
            self._wake.set()

    def count(self, records: Sequence[CallRecord]) -> None:
        """Counted in the stats only: recorded elsewhere (with a workflow step)."""
        with self._lock:
            self._count(records)

    def _count(self, records: Sequence[CallRecord]) -> None:
        for record in records:
            key = (record.tenant, record.model, record.version, record.route, record.outcome)
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = CallStats()
            stats.calls += 1
            stats.latency_ms += record.latency_ms
            stats.cost += record.cost or 0.0
            stats.tokens += (record.tokens_in or 0) + (record.tokens_out or 0)

    def stats(self) -> dict[tuple[str, str, str, str], CallStats]:
        """(tenant, name@version, route, outcome) -> counters."""
        out: dict[tuple[str, str, str, str], CallStats] = {}
        with self._lock:
            for (tenant, model, version, route, outcome), s in self._stats.items():
                ref = f"{model}@{version if version is not None else '?'}"
                out[(tenant, ref, route, outcome)] = CallStats(
                    s.calls, s.latency_ms, s.cost, s.tokens
                )
        return out

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._loop, name="aevos-gateway-recorder", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                # The database may be briefly unreachable: the records stay queued.
                log.warning("gateway background flush failed; will retry", exc_info=True)

    def flush(self) -> int:
        """Append every waiting record now; returns how many were written."""
        with self._flush_lock:
            with self._lock:
                records, self._pending = self._pending, []
                cases, self._pending_cases = self._pending_cases, []
            if cases:
                self._keep(cases, records)
            done = 0
            try:
                while done < len(records):
                    chunk = records[done : done + self.batch]
                    self.audit.append_many(self._events(chunk))
                    done += len(chunk)
                    self.written += len(chunk)
            except BaseException:
                self._requeue(records[done:])
                raise
            return done

    def _keep(self, cases: list[tuple[KeptCases, NewCase]], records: list[CallRecord]) -> None:
        """Seal and write the cases, before their records are built into audit events (a
        case's digest may go on its record) and written: a crash in between leaves a kept
        case whose record is lost, never a record whose case is."""
        rows = [
            row for keeper, case in cases if (row := seal_case(keeper, case, records)) is not None
        ]
        if not rows:
            return
        try:
            with self.audit.store.transaction() as uow:
                uow.cases.add(rows)
        except BaseException:
            # Sealed again on the next flush (the records keep any digest set here).
            with self._lock:
                self._pending[:0] = records
                self._pending_cases[:0] = cases
                excess = len(self._pending_cases) - self.max_pending
                if excess > 0:
                    del self._pending_cases[:excess]
                    log.error("gateway dropped %d kept cases: storage unreachable", excess)
            raise

    def _events(self, records: Sequence[CallRecord]) -> list[AuditEvent]:
        events = []
        for record in records:
            try:
                events.extend(record.events())
            except InvalidAuditEventError as exc:
                # One unrecordable record (an over-long tenant name) must not block the rest.
                self.dropped += 1
                log.error("gateway dropped a call record: %s", exc.message)
        return events

    def _requeue(self, records: list[CallRecord]) -> None:
        with self._lock:
            self._pending[:0] = records
            excess = len(self._pending) - self.max_pending
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess
                log.error("gateway dropped %d call records: the audit log is unreachable", excess)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        try:
            self.flush()
        except Exception:
            log.error("gateway could not write its last call records", exc_info=True)
