"""Replays: their records, and the two reads a replay makes of what production did.

``window`` lists the kept model-call cases a replay re-decides (newest first: the most
recent traffic is what the candidate will meet); ``answers`` finds the ``model.called``
audit records of those calls, the answer production gave each case.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .. import codec
from ..records.replay import Replay
from .repository import Repository, StoreHandle
from .schema import audit, cases, replays

_CHUNK = 500
_FIELDS = {"champion", "status", "passed", "reason", "figures", "finished_at"}


def replay_of(row: Any) -> Replay:
    return Replay(
        replay_id=row.replay_id,
        tenant=row.tenant,
        model=row.model,
        version=int(row.version),
        champion=None if row.champion is None else int(row.champion),
        status=row.status,
        criteria=codec.decode(row.criteria),
        figures=codec.decode(row.figures),
        passed=None if row.passed is None else bool(row.passed),
        reason=row.reason,
        since=None if row.since is None else float(row.since),
        limit=int(row.case_limit),
        rate=float(row.rate),
        requested_by=row.requested_by,
        started_at=float(row.started_at),
        finished_at=None if row.finished_at is None else float(row.finished_at),
    )


def _insert(store: StoreHandle) -> Any:
    # The service and the workflow's first step both make sure the record exists: the
    # first row stays.
    return (
        store.dialect.insert(replays)
        .on_conflict_do_nothing(index_elements=["replay_id"])
        .returning(replays.c.replay_id)
    )


class ReplayRepository(Repository):
    """Replays, and the kept cases and call records they read, in one unit of work."""

    def add(self, replay: Replay) -> bool:
        """Store ``replay`` unless a replay of that id exists; whether it was new."""
        values = {
            "replay_id": replay.replay_id,
            "tenant": replay.tenant,
            "model": replay.model,
            "version": replay.version,
            "champion": replay.champion,
            "status": replay.status,
            "passed": replay.passed,
            "reason": replay.reason,
            "criteria": codec.encode(dict(replay.criteria), "replay criteria"),
            "figures": codec.encode(dict(replay.figures), "replay figures"),
            "since": replay.since,
            "case_limit": replay.limit,
            "rate": replay.rate,
            "requested_by": replay.requested_by,
            "started_at": replay.started_at,
            "finished_at": replay.finished_at,
        }
        return bool(self.conn.execute(self.uow.prepared(_insert), values).all())

    def update(self, replay_id: str, **changes: Any) -> None:
        unknown = set(changes) - _FIELDS
        if unknown:
            raise ValueError(f"not a replay field to update: {', '.join(sorted(unknown))}")
        if "figures" in changes:
            changes["figures"] = codec.encode(dict(changes["figures"]), "replay figures")
        self.conn.execute(
            sa.update(replays).where(replays.c.replay_id == replay_id).values(**changes)
        )

    def get(self, replay_id: str) -> Replay | None:
        row = self.conn.execute(
            sa.select(replays).where(replays.c.replay_id == replay_id)
        ).one_or_none()
        return None if row is None else replay_of(row)

    def find(
        self, tenant: str, model: str, *, version: int | None = None, limit: int = 100
    ) -> list[Replay]:
        """``model``'s replays (of ``version``), newest first."""
        r = replays.c
        query = sa.select(replays).where(r.tenant == tenant, r.model == model)
        if version is not None:
            query = query.where(r.version == version)
        query = query.order_by(r.started_at.desc(), r.replay_id.desc()).limit(limit)
        return [replay_of(row) for row in self.conn.execute(query)]

    def latest(self, tenant: str, model: str, version: int) -> Replay | None:
        """The newest replay of ``model@version``, running or not."""
        found = self.find(tenant, model, version=version, limit=1)
        return found[0] if found else None

    # -- what a replay reads ------------------------------------------------------------------

    def window(
        self,
        tenant: str,
        model: str,
        *,
        since: float | None,
        until: float,
        limit: int,
    ) -> list[tuple[str, float]]:
        """(case_id, created_at) of the kept model calls of ``model`` made in
        [``since``, ``until``), newest first; at most ``limit``."""
        c = cases.c
        query = sa.select(c.case_id, c.created_at).where(
            c.tenant == tenant, c.model == model, c.kind == "model_call", c.created_at < until
        )
        if since is not None:
            query = query.where(c.created_at >= since)
        query = query.order_by(c.created_at.desc(), c.case_id.desc()).limit(limit)
        return [(str(case_id), float(at)) for case_id, at in self.conn.execute(query)]

    def answers(
        self,
        tenant: str,
        calls: Sequence[tuple[str, str | None]],
        *,
        since: float,
        until: float,
    ) -> dict[str, list[dict[str, Any]]]:
        """``call_id -> [data of its model.called records]`` (oldest first) for ``calls``,
        pairs of (call_id, run_id): a call made in a run is found by the run's index; one
        made outside any run among the records written in [``since``, ``until``]."""
        dialect = self.uow.store.dialect
        call = dialect.json_field(audit.c.payload, "data", "call_id").as_string()
        wanted = {call_id for call_id, _ in calls}
        in_runs = sorted({run_id for _, run_id in calls if run_id is not None})
        loose = sorted({call_id for call_id, run_id in calls if run_id is None})
        called = (audit.c.tenant == tenant, audit.c.action == "model.called")
        queries = [
            sa.select(audit.c.seq, audit.c.payload).where(
                *called, audit.c.run_id.in_(in_runs[i : i + _CHUNK])
            )
            for i in range(0, len(in_runs), _CHUNK)
        ] + [
            sa.select(audit.c.seq, audit.c.payload).where(
                *called,
                audit.c.at >= since,
                audit.c.at <= until,
                call.in_(loose[i : i + _CHUNK]),
            )
            for i in range(0, len(loose), _CHUNK)
        ]
        rows: list[tuple[int, str]] = []
        for query in queries:
            rows.extend((int(seq), str(payload)) for seq, payload in self.conn.execute(query))
        found: dict[str, list[dict[str, Any]]] = {}
        for _, payload in sorted(rows):
            data = json.loads(payload).get("data") or {}
            call_id = str(data.get("call_id"))
            if call_id in wanted:
                found.setdefault(call_id, []).append(data)
        return found
