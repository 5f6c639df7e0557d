"""Lineage: why a case was decided as it was.

Assembled from the run's recorded history (inputs and outputs as digests, never values:
they may hold personal data) and from its audit records (policy decisions, model calls,
human actions, operator actions), recursively through its child runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import codec

if TYPE_CHECKING:
    from ..storage import Store
    from .log import AuditLog

# Audit actions recorded by the kernel itself rather than by a person or a service.
_SYSTEM_ACTORS = ("system", "kernel")


@dataclass(frozen=True)
class StepLineage:
    seq: int
    name: str
    status: str
    attempts: int
    started_at: float
    finished_at: float
    output_digest: str | None
    error_type: str | None
    decision: dict[str, Any] | None = None  # policy decisions are recorded in full


@dataclass(frozen=True)
class Lineage:
    run_id: str
    tenant: str
    workflow: str
    status: str
    code_version: str
    input_digest: str | None
    output_digest: str | None
    error: dict[str, Any] | None
    created_at: float
    finished_at: float | None
    parent_run_id: str | None
    steps: list[StepLineage]
    decisions: list[dict[str, Any]]
    model_calls: list[dict[str, Any]]
    human_actions: list[dict[str, Any]]
    people: list[str]
    audit: list[dict[str, Any]]
    children: list[Lineage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _maybe(value: Any) -> str | None:
    return None if value is None else codec.digest(value)


def lineage(store: Store, audit_log: AuditLog, run_id: str, *, depth: int = 5) -> Lineage:
    """The lineage of ``run_id`` and (up to ``depth`` levels of) its children."""
    info = store.get_run(run_id)
    steps = []
    for step in store.list_steps(run_id):
        decision = step.output if step.name.startswith("aevos.decide:") else None
        steps.append(
            StepLineage(
                seq=step.seq,
                name=step.name,
                status=step.status,
                attempts=step.attempts,
                started_at=step.started_at,
                finished_at=step.finished_at,
                output_digest=_maybe(step.output),
                error_type=(step.error or {}).get("type"),
                decision=decision if isinstance(decision, dict) else None,
            )
        )
    records = audit_log.query(info.tenant, run_id=run_id, limit=10_000)
    audit: list[dict[str, Any]] = [
        {
            "seq": r.seq,
            "at": r.at,
            "action": r.action,
            "actor": r.actor,
            "subject": r.subject,
            "data": dict(r.data),
            "hash": r.hash,
        }
        for r in records
    ]
    children = []
    if depth > 0:
        for child in store.list_runs(parent_run_id=run_id, limit=1000):
            children.append(lineage(store, audit_log, child.run_id, depth=depth - 1))
    return Lineage(
        run_id=info.run_id,
        tenant=info.tenant,
        workflow=info.workflow,
        status=info.status.value,
        code_version=info.code_version,
        input_digest=_maybe(info.input),
        output_digest=_maybe(info.output),
        error=info.error,
        created_at=info.created_at,
        finished_at=info.finished_at,
        parent_run_id=info.parent_run_id,
        steps=steps,
        decisions=[a for a in audit if a["action"] == "policy.decided"],
        model_calls=[a for a in audit if a["action"] == "model.called"],
        human_actions=[a for a in audit if a["action"].startswith(("human.", "task."))],
        people=sorted({a["actor"] for a in audit if not a["actor"].startswith(_SYSTEM_ACTORS)}),
        audit=audit,
        children=children,
    )
