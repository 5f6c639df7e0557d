"""Rollouts: the rollout controller's state, and what the gateway routes by.

Every change after the insert is a transition conditional on the revision the caller read
(``UPDATE ... WHERE rollout_id = ? AND revision = ?``), which it bumps: of two actors that
read the same revision, one changes the row and the other is told it lost. The column
``active_model`` holds the model while the rollout is active and NULL once it ended; unique
with the tenant, it keeps one active rollout per model even between two processes racing
to start one.
"""

from __future__ import annotations

import builtins
import dataclasses
from typing import Any

import sqlalchemy as sa

from .. import codec
from ..records.rollout import ACTIVE_STATES, STATES, RolloutRecord, RolloutRouting
from .repository import Repository, StoreHandle
from .schema import audit, rollouts

#: Fields a transition may set (the identity, candidate and plan never change).
_MUTABLE = {
    "step",
    "state",
    "step_started_at",
    "deadline",
    "reason",
    "last_verdict",
    "champion",
}


def rollout_of(row: Any) -> RolloutRecord:
    verdict = None if row.last_verdict is None else codec.decode(row.last_verdict)
    return RolloutRecord(
        rollout_id=row.rollout_id,
        tenant=row.tenant,
        model=row.model,
        version=int(row.version),
        champion=None if row.champion is None else int(row.champion),
        steps=tuple(int(s) for s in codec.decode(row.steps)),
        step=int(row.step),
        state=row.state,
        criteria=codec.decode(row.criteria),
        step_seconds=float(row.step_seconds),
        step_started_at=float(row.step_started_at),
        deadline=None if row.deadline is None else float(row.deadline),
        replay=bool(row.replay),
        policy=row.policy,
        created_by=row.created_by,
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
        reason=row.reason,
        last_verdict=verdict,
        revision=int(row.revision),
    )


def _values(record: RolloutRecord) -> dict[str, Any]:
    values = dataclasses.asdict(record)
    values["steps"] = codec.encode(list(record.steps), "the rollout's steps")
    values["criteria"] = codec.encode(dict(record.criteria), "the rollout's criteria")
    values["last_verdict"] = (
        None
        if record.last_verdict is None
        else codec.encode(dict(record.last_verdict), "the rollout's verdict")
    )
    values["active_model"] = record.model if record.state in ACTIVE_STATES else None
    return values


def _insert(store: StoreHandle) -> Any:
    # A second active rollout of the model collides on (tenant, active_model): no row.
    return store.dialect.insert(rollouts).on_conflict_do_nothing().returning(rollouts.c.rollout_id)


class RolloutRepository(Repository):
    """Rollouts, in the unit of work it is bound to."""

    def insert(self, record: RolloutRecord) -> bool:
        """Store a new rollout; False (nothing stored) when the model already has an
        active one in the tenant, or the id is taken."""
        if record.state not in STATES:
            raise ValueError(f"not a rollout state: {record.state!r}")
        inserted = self.conn.execute(self.uow.prepared(_insert), _values(record)).first()
        return inserted is not None

    def get(self, tenant: str, rollout_id: str) -> RolloutRecord | None:
        c = rollouts.c
        row = self.conn.execute(
            sa.select(rollouts).where(c.rollout_id == rollout_id, c.tenant == tenant)
        ).first()
        return None if row is None else rollout_of(row)

    def active(self, tenant: str, model: str) -> RolloutRecord | None:
        c = rollouts.c
        row = self.conn.execute(
            sa.select(rollouts).where(c.tenant == tenant, c.active_model == model)
        ).first()
        return None if row is None else rollout_of(row)

    def list(
        self,
        tenant: str,
        *,
        model: str | None = None,
        active: bool | None = None,
        limit: int = 100,
    ) -> list[RolloutRecord]:
        """The tenant's rollouts, newest first."""
        c = rollouts.c
        query = sa.select(rollouts).where(c.tenant == tenant)
        if model is not None:
            query = query.where(c.model == model)
        if active is True:
            query = query.where(c.active_model.is_not(None))
        elif active is False:
            query = query.where(c.active_model.is_(None))
        rows = self.conn.execute(
            query.order_by(c.created_at.desc(), c.rollout_id.desc()).limit(limit)
        )
        return [rollout_of(row) for row in rows]

    def in_states(self, states: frozenset[str] | set[str]) -> builtins.list[RolloutRecord]:
        """Every tenant's rollouts in ``states`` (the controller's sweep), oldest first."""
        c = rollouts.c
        rows = self.conn.execute(
            sa.select(rollouts)
            .where(c.active_model.is_not(None), c.state.in_(sorted(states)))
            .order_by(c.created_at, c.rollout_id)
        )
        return [rollout_of(row) for row in rows]

    def transition(self, rollout_id: str, revision: int, now: float, **values: Any) -> bool:
        """Set ``values`` of the rollout if it is still at ``revision`` (and bump it);
        whether it was (False: another actor moved it first, or there is no such rollout)."""
        unknown = set(values) - _MUTABLE
        if unknown:
            raise ValueError(f"not a mutable rollout field: {sorted(unknown)}")
        if "state" in values:
            if values["state"] not in STATES:
                raise ValueError(f"not a rollout state: {values['state']!r}")
            if values["state"] not in ACTIVE_STATES:
                values["active_model"] = None
        if "last_verdict" in values and values["last_verdict"] is not None:
            values["last_verdict"] = codec.encode(
                dict(values["last_verdict"]), "the rollout's verdict"
            )
        c = rollouts.c
        result = self.conn.execute(
            rollouts.update()
            .where(c.rollout_id == rollout_id, c.revision == revision)
            .values(revision=revision + 1, updated_at=now, **values)
        )
        return bool(result.rowcount == 1)

    def routing(self, tenant: str, model: str) -> RolloutRouting | None:
        """The candidate and its share of traffic of the model's active rollout, when it
        takes traffic: progressing (replaying takes none), or paused by an operator or a
        verdict that did not fail (the split in force stays until a person decides; a
        failing candidate is rolled back at once rather than paused)."""
        c = rollouts.c
        row = self.conn.execute(
            sa.select(c.rollout_id, c.version, c.steps, c.step, c.state, c.last_verdict).where(
                c.tenant == tenant, c.active_model == model
            )
        ).first()
        if row is None or row.state not in ("progressing", "paused"):
            return None
        if row.state == "paused" and row.last_verdict is not None:
            verdict = codec.decode(row.last_verdict)
            if isinstance(verdict, dict) and verdict.get("outcome") == "failed":
                return None
        steps = codec.decode(row.steps)
        return RolloutRouting(
            version=int(row.version),
            share=int(steps[int(row.step)]),
            state=row.state,
            rollout_id=row.rollout_id,
        )

    def history(
        self, tenant: str, rollout_id: str
    ) -> builtins.list[tuple[float, str, str, dict[str, Any]]]:
        """The rollout's ``rollout.*`` audit records as (at, action, actor, data), oldest
        first."""
        c = audit.c
        rows = self.conn.execute(
            sa.select(c.at, c.action, c.actor, c.payload)
            .where(c.tenant == tenant, c.subject == f"rollout:{rollout_id}")
            .order_by(c.seq)
        )
        out: builtins.list[tuple[float, str, str, dict[str, Any]]] = []
        for row in rows:
            data = codec.decode(row.payload).get("data") or {}
            out.append((float(row.at), str(row.action), str(row.actor), dict(data)))
        return out
