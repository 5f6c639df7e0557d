"""Contract tests of storage's repositories and the unit of work they share, on both backends.

Each repository is exercised through ``store.transaction()`` / ``store.reading()`` alone,
the way the domain services use it: what one unit of work writes is visible to the next,
and what a unit of work that raised wrote is not.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from aevos import AuditChainError, StorageError, TaskConflictError, TaskNotFoundError
from aevos.audit import AuditEvent, AuditLog
from aevos.errors import ApprovalConflictError, ApprovalNotFoundError
from aevos.records.approval import Approval, ApprovalStatus
from aevos.records.run import NewRun
from aevos.records.status import RunStatus
from aevos.records.task import Field, Form, TaskRequest, TaskStatus
from aevos.storage import LeaseLost, StepRecord, Store, open_store
from aevos.storage.audit import CHAIN_COLUMNS, read_chain
from aevos.storage.budgets import Limits
from aevos.storage.cases import CaseRow
from aevos.storage.identity import TokenRow
from aevos.storage.vault import Sealed


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


def _token(token_id: str, tenant: str = "acme", created_at: float = 1.0) -> TokenRow:
    return TokenRow(
        token_id=token_id,
        tenant=tenant,
        name=f"name-{token_id}",
        role="operator",
        secret_hash="0" * 64,
        created_by="admin",
        created_at=created_at,
        expires_at=None,
        revoked_at=None,
        last_used_at=None,
    )


# -- the unit of work ----------------------------------------------------------------------


def test_a_unit_of_work_commits_everything_its_repositories_wrote(store: Store) -> None:
    with store.transaction() as uow:
        uow.tokens.insert(_token("aaaaaaaaaaaa"))
        uow.events.insert(
            tenant="acme",
            source="crm",
            event_id="e1",
            status="ACCEPTED",
            reason=None,
            run_id=None,
            payload_digest=None,
            size=2,
            received_at=5.0,
        )
    with store.reading() as uow:
        assert uow.tokens.get("aaaaaaaaaaaa") == _token("aaaaaaaaaaaa")
        assert [e.event_id for e in uow.events.find("acme")] == ["e1"]
        assert uow.read_only


def test_a_unit_of_work_that_raises_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as uow:
        uow.tokens.insert(_token("bbbbbbbbbbbb"))
        uow.models.ensure("acme", "intent", "ops", 1.0)
        raise RuntimeError("the change failed half way")
    with store.reading() as uow:
        assert uow.tokens.get("bbbbbbbbbbbb") is None
        assert uow.models.names("acme") == []


def test_a_database_error_leaves_as_a_storage_error_and_rolls_back(store: Store) -> None:
    with store.transaction() as uow:
        uow.tokens.insert(_token("cccccccccccc"))
    with pytest.raises(StorageError) as caught, store.transaction() as uow:
        uow.tokens.insert(_token("dddddddddddd"))
        uow.tokens.insert(_token("cccccccccccc"))  # the same primary key again
    assert caught.value.code == "storage_error"
    with store.reading() as uow:
        assert [t.token_id for t in uow.tokens.find("acme")] == ["cccccccccccc"]


def test_a_change_and_its_audit_record_commit_together_or_not_at_all(store: Store) -> None:
    log = AuditLog(store)
    event = AuditEvent(action="model.registered", actor="ops", tenant="acme", subject="m")
    with pytest.raises(RuntimeError), store.transaction() as uow:
        uow.models.ensure("acme", "intent", "ops", 1.0)
        log.append(event, uow=uow)
        raise RuntimeError("refused after the audit record was written")
    assert log.head("acme") is None
    with store.reading() as uow:
        assert uow.models.names("acme") == []
    with store.transaction() as uow:
        uow.models.ensure("acme", "intent", "ops", 1.0)
        record = log.append(event, uow=uow)
        # Inside the unit of work its own writes are visible to every repository.
        assert uow.audit.last_seq("acme") == 1
        assert uow.models.names("acme") == ["intent"]
    assert record.seq == 1
    with store.reading() as uow:
        assert uow.models.names("acme") == ["intent"]
        assert [r.action for r in uow.audit.query("acme")] == ["model.registered"]
    assert log.verify("acme").ok


# -- audit ---------------------------------------------------------------------------------


def test_audit_rows_heads_queries_and_chain_stream(store: Store) -> None:
    log = AuditLog(store)
    for i in range(5):
        log.append(AuditEvent(action=f"a.{i % 2}", actor=f"u{i}", tenant="acme", run_id="r"))
    log.append(AuditEvent(action="a.0", actor="other", tenant="beta"))
    with store.reading() as uow:
        head = uow.audit.head("acme")
        rows = uow.audit.query("acme", action="a.0")
        assert uow.audit.head("nobody") is None
        assert uow.audit.last_seq("nobody") == 0
        assert uow.audit.last_seq("beta") == 1
        after = uow.audit.query("acme", after_seq=3, limit=1)
        by_actor = uow.audit.query("acme", actor="u1")
        heads = uow.audit.heads()
    assert head is not None and head.seq == 5
    assert heads == {"acme": head, "beta": (1, log.query("beta")[0].hash)}
    assert [r.seq for r in rows] == [1, 3, 5]
    assert rows[0].tenant == "acme" and json.loads(rows[0].payload)["action"] == "a.0"
    assert [r.seq for r in after] == [4]
    assert [r.seq for r in by_actor] == [2]
    with store.reading() as uow:
        every = uow.audit.query("acme")
        window = uow.audit.query("acme", since=every[1].at, until=every[3].at + 1e-6)
    assert {r.seq for r in window} >= {2, 3, 4}
    with read_chain(store, "acme", 2) as (chain_head, stream):
        streamed = [tuple(row) for row in stream]
    assert chain_head == head
    assert [row[0] for row in streamed] == [3, 4, 5]
    assert len(streamed[0]) == len(CHAIN_COLUMNS)
    assert streamed[-1][CHAIN_COLUMNS.index("hash")] == head.hash


def test_a_locked_head_serialises_appends_and_a_lost_head_refuses_them(store: Store) -> None:
    with store.transaction() as uow:
        first = uow.audit.lock_head("acme")
        assert (first.seq, first.updated_at) == (0, 0.0)
        uow.audit.insert(
            [
                {
                    "tenant": "acme",
                    "seq": 1,
                    "at": 2.0,
                    "actor": "u",
                    "action": "x",
                    "subject": None,
                    "run_id": None,
                    "payload": "{}",
                    "prev_hash": first.hash,
                    "hash": "f" * 64,
                }
            ]
        )
        uow.audit.move_head("acme", 1, "f" * 64, 2.0)
    with store.transaction() as uow:
        assert tuple(uow.audit.lock_head("acme")) == (1, "f" * 64, 2.0)
    with store._tx() as conn:  # the head row deleted behind the log's back
        from aevos.storage.schema import audit_heads

        conn.execute(audit_heads.delete())
    with pytest.raises(AuditChainError, match="no head row"), store.transaction() as uow:
        uow.audit.lock_head("acme")


# -- tasks ---------------------------------------------------------------------------------


def _ask(store: Store, task_id: str, **request: Any) -> None:
    form = Form([Field.choice("label", ["a", "b"])])
    defaults: dict[str, Any] = {"title": "Check", "form": form, "case": {"text": "hi"}}
    with store.transaction() as uow:
        uow.tasks.create(
            TaskRequest(**(defaults | request)),
            task_id=task_id,
            tenant="acme",
            run_id=task_id.split(".")[0],
            workflow="triage",
            seq=1,
            created_at=100.0,
        )


def test_tasks_are_created_read_and_counted(store: Store) -> None:
    _ask(store, "r1.1", priority=1, suggestion={"label": "a"}, confidence=0.7, sla_seconds=10.0)
    _ask(store, "r2.1", queue="leads", role="lead")
    with store.reading() as uow:
        task = uow.tasks.get("r1.1", tenant="acme")
        assert task.status is TaskStatus.OPEN and task.case == {"text": "hi"}
        assert task.suggestion == {"label": "a"} and task.due_at == 110.0
        assert task.escalations == 1 and task.form.to_list()[0]["name"] == "label"
        assert [t.task_id for t in uow.tasks.find("acme")] == ["r1.1", "r2.1"]
        assert [t.task_id for t in uow.tasks.find("acme", queue="leads")] == ["r2.1"]
        assert [t.task_id for t in uow.tasks.find("acme", roles=["reviewer"])] == ["r1.1"]
        assert uow.tasks.find("other") == []
        assert uow.tasks.count_live("acme") == {("review", "OPEN"): 1, ("leads", "OPEN"): 1}
        with pytest.raises(TaskNotFoundError):
            uow.tasks.get("r1.1", tenant="other")


def test_a_task_is_claimed_released_reassigned_and_submitted_once(store: Store) -> None:
    _ask(store, "r1.1", suggestion={"label": "a"})
    with store.transaction() as uow:
        claimed = uow.tasks.claim("r1.1", "acme", "ann", 101.0)
    assert (claimed.status, claimed.assignee, claimed.claimed_at) == (
        TaskStatus.CLAIMED,
        "ann",
        101.0,
    )
    with pytest.raises(TaskConflictError, match="another person"), store.transaction() as uow:
        uow.tasks.claim("r1.1", "acme", "bob", 102.0)
    with pytest.raises(TaskConflictError, match="another person"), store.transaction() as uow:
        uow.tasks.release("r1.1", "acme", "bob", 102.0)
    with store.transaction() as uow:
        released = uow.tasks.release("r1.1", "acme", "bob", 102.0, anyone=True)
        moved = uow.tasks.reassign("r1.1", "acme", 103.0, queue="leads", assignee="cy")
    assert released.status is TaskStatus.OPEN and released.assignee is None
    assert (moved.queue, moved.status, moved.assignee) == ("leads", TaskStatus.CLAIMED, "cy")
    with store.transaction() as uow:
        done, record = uow.tasks.submit("r1.1", "acme", "cy", '{"label":"b"}', True, 104.0)
    assert done.status is TaskStatus.SUBMITTED and done.result == {"label": "b"}
    assert (record.task_id, record.decision, record.overridden) == ("r1.1", {"label": "b"}, True)
    assert record.suggestion == {"label": "a"} and record.asked_at == 100.0
    with pytest.raises(TaskConflictError, match="already submitted"), store.transaction() as uow:
        uow.tasks.submit("r1.1", "acme", "cy", '{"label":"a"}', False, 105.0)
    with store.reading() as uow:
        assert uow.tasks.find_feedback("acme") == [record]
        assert uow.tasks.find_feedback("acme", since=104.5) == []
        assert uow.tasks.count_live("acme") == {}


def test_claim_next_takes_the_inbox_order_and_skips_what_it_may_not_work(store: Store) -> None:
    _ask(store, "r1.1", priority=0)
    _ask(store, "r2.1", priority=5)
    _ask(store, "r3.1", priority=9, role="lead")
    with store.transaction() as uow:
        first = uow.tasks.claim_next("acme", "ann", ["reviewer"], None, 101.0)
        second = uow.tasks.claim_next("acme", "ann", ["reviewer"], None, 101.0)
        none = uow.tasks.claim_next("acme", "ann", ["reviewer"], None, 101.0)
    assert first is not None and first.task_id == "r2.1"
    assert second is not None and second.task_id == "r1.1"
    assert none is None


def test_a_task_past_its_deadline_is_taken_as_expired_once(store: Store) -> None:
    _ask(store, "r1.1")
    with store.transaction() as uow:
        assert uow.tasks.take("r1.1", deadline=200.0, now=150.0)[1] is False
        task, expired = uow.tasks.take("r1.1", deadline=200.0, now=200.0)
    assert expired and task.status is TaskStatus.EXPIRED
    with store.transaction() as uow:
        again, expired_again = uow.tasks.take("r1.1", deadline=200.0, now=300.0)
    assert again.status is TaskStatus.EXPIRED and not expired_again


def test_overdue_tasks_escalate_one_level_at_a_time(store: Store) -> None:
    _ask(store, "r1.1", sla_seconds=10.0, escalate_to=("leads", "heads"))
    _ask(store, "r2.1")  # no SLA: never overdue
    with store.reading() as uow:
        assert uow.tasks.overdue(105.0) == []
        due = uow.tasks.overdue(111.0)
    assert due == [("r1.1", "acme", 0)]
    with store.transaction() as uow:
        first = uow.tasks.escalate("r1.1", "acme", 0, 111.0)
        assert uow.tasks.escalate("r1.1", "acme", 0, 111.0) is None  # another sweep's turn
    assert first is not None
    assert (first.queue, first.escalation_level, first.due_at) == ("leads", 1, 121.0)
    with store.transaction() as uow:
        last = uow.tasks.escalate("r1.1", "acme", 1, 121.0)
        assert uow.tasks.overdue(1e9) == []  # both escalations spent
    assert last is not None and (last.queue, last.escalation_level) == ("heads", 2)


def test_a_cancelled_runs_tasks_close_and_reopen_with_it(store: Store) -> None:
    _ask(store, "r1.1")
    _ask(store, "r2.1")
    with store.transaction() as uow:
        uow.tasks.cancel_for_runs(["r1"], 101.0)
    with store.reading() as uow:
        assert uow.tasks.get("r1.1").status is TaskStatus.CANCELLED
        assert uow.tasks.get("r2.1").status is TaskStatus.OPEN
    with pytest.raises(TaskConflictError, match="was cancelled"), store.transaction() as uow:
        uow.tasks.claim("r1.1", "acme", "ann", 102.0)
    with store.transaction() as uow:
        uow.tasks.reopen_cancelled("r1", 103.0)
    with store.reading() as uow:
        assert uow.tasks.get("r1.1").status is TaskStatus.OPEN


# -- approvals -----------------------------------------------------------------------------


def _approval(approval_id: str, *, version: int = 2, expires_at: float = 1e12) -> Approval:
    return Approval(
        approval_id=approval_id,
        tenant="acme",
        kind="promotion",
        model="intent",
        version=version,
        alias="champion",
        alias_was=1,
        policy="promotion",
        evidence={"accuracy": 0.9},
        decision={"result": "approve"},
        status=ApprovalStatus.PENDING,
        requested_by="operator:ops#1",
        requester_token="1",
        requester_name="ops",
        requested_at=float(version),
        expires_at=expires_at,
        decided_by=None,
        decided_at=None,
        reason=None,
    )


def test_approvals_are_stored_found_and_closed_once(store: Store) -> None:
    with store.transaction() as uow:
        asked = uow.approvals.insert(_approval("a1"))
        uow.approvals.insert(_approval("a2", version=3, expires_at=50.0))
    assert asked == _approval("a1")
    with store.reading() as uow:
        assert [a.approval_id for a in uow.approvals.find("acme")] == ["a2", "a1"]
        assert [a.approval_id for a in uow.approvals.find("acme", model="x")] == []
        pending = uow.approvals.pending("acme", "intent", 2, "champion")
        assert pending is not None and pending.approval_id == "a1"
        assert [a.approval_id for a in uow.approvals.overdue(60.0)] == ["a2"]
        with pytest.raises(ApprovalNotFoundError):
            uow.approvals.get("a1", tenant="other")
    with store.transaction() as uow:
        done = uow.approvals.close(asked, ApprovalStatus.APPROVED, "admin:lead", "ok", 70.0)
    assert (done.status, done.decided_by, done.decided_at) == (
        ApprovalStatus.APPROVED,
        "admin:lead",
        70.0,
    )
    with pytest.raises(ApprovalConflictError, match="APPROVED"), store.transaction() as uow:
        uow.approvals.close(asked, ApprovalStatus.REJECTED, "x", None, 71.0)
    with store.reading() as uow:
        overdue = uow.approvals.get("a2")
    with pytest.raises(ApprovalConflictError, match="EXPIRED"), store.transaction() as uow:
        uow.approvals.close(overdue, ApprovalStatus.APPROVED, "x", None, 60.0, before_expiry=True)
    with store.reading() as uow:
        assert uow.approvals.get("a2").status is ApprovalStatus.PENDING


# -- models --------------------------------------------------------------------------------


def _version_row(number: int, digest: str, *, config: str = "{}") -> dict[str, Any]:
    return {
        "tenant": "acme",
        "name": "intent",
        "version": number,
        "digest": digest,
        "flavor": "test-echo",
        "config": config,
        "card": "{}",
        "signature": None,
        "tags": "{}",
        "created_by": "ops",
        "created_at": float(number),
    }


def test_model_versions_aliases_and_artifacts(store: Store) -> None:
    data = b"weights"
    digest = hashlib.sha256(data).hexdigest()
    with store.transaction() as uow:
        assert uow.models.lock("acme", "intent") is False
        uow.models.ensure("acme", "intent", "ops", 1.0)
        uow.models.ensure("acme", "intent", "someone else", 2.0)  # exists: unchanged
        assert uow.models.lock("acme", "intent") is True
        uow.models.store_artifact(digest, data, 1.0)
        uow.models.store_artifact(digest, data, 2.0)  # content-addressed: stored once
        assert uow.models.next_number("acme", "intent") == 1
        uow.models.add_version(_version_row(1, digest))
        uow.models.add_version(_version_row(2, digest, config='{"k":1}'))
        uow.models.touch("acme", "intent", 3.0)
        uow.models.point("acme", "intent", "champion", 1, previous=None, by="ops", now=4.0)
        uow.models.point("acme", "intent", "champion", 2, previous=1, by="ops", now=5.0)
    with store.reading() as uow:
        models = uow.models
        assert models.names("acme") == ["intent"] and models.names("acme", "x") == []
        assert models.next_number("acme", "intent") == 3
        assert models.numbers("acme", "intent") == [1, 2]
        assert [v["version"] for v in models.versions("acme", "intent")] == [1, 2]
        same = models.same_version("acme", "intent", digest, "test-echo", '{"k":1}')
        assert same is not None and same["version"] == 2
        assert models.same_version("acme", "intent", digest, "test-echo", '{"k":2}') is None
        latest, by_alias = (
            models.version("acme", "intent", "latest"),
            models.version("acme", "intent", "champion"),
        )
        assert latest is not None and by_alias is not None
        assert latest["version"] == by_alias["version"] == 2
        assert models.version("acme", "intent", 7) is None
        assert models.version("acme", "intent", "canary") is None
        alias = models.alias("acme", "intent", "champion")
        assert alias is not None and (alias["version"], alias["previous_version"]) == (2, 1)
        assert models.alias_version("acme", "intent", "canary") is None
        assert models.artifact(digest) == data and models.artifact("0" * 64) is None
    with store.transaction() as uow:
        uow.models.roll_back("acme", "intent", "champion", 1, by="lead", now=6.0)
        uow.models.set_tags("acme", "intent", 1, '{"stage":"prod"}')
    with store.reading() as uow:
        (row,) = uow.models.aliases("acme", "intent")
        version = uow.models.version("acme", "intent", 1)
    assert (row["version"], row["previous_version"], row["updated_by"]) == (1, None, "lead")
    assert version is not None and version["tags"] == '{"stage":"prod"}'


# -- tokens, vault, budgets, events --------------------------------------------------------


def test_tokens_are_stored_used_and_revoked_per_tenant(store: Store) -> None:
    with store.transaction() as uow:
        uow.tokens.insert(_token("aaaaaaaaaaaa", created_at=2.0))
        uow.tokens.insert(_token("bbbbbbbbbbbb", created_at=1.0))
        uow.tokens.insert(_token("cccccccccccc", tenant="beta"))
        uow.tokens.mark_used("aaaaaaaaaaaa", 9.0)
        assert uow.tokens.revoke("bbbbbbbbbbbb", "beta", 10.0) is False  # another tenant's
        assert uow.tokens.revoke("bbbbbbbbbbbb", "acme", 10.0) is True
        assert uow.tokens.revoke("bbbbbbbbbbbb", "acme", 11.0) is False  # already revoked
    with store.reading() as uow:
        found = uow.tokens.find("acme")
        assert uow.tokens.get("nothing") is None
    assert [t.token_id for t in found] == ["bbbbbbbbbbbb", "aaaaaaaaaaaa"]
    assert found[0].revoked_at == 10.0 and found[1].last_used_at == 9.0


def test_vault_rows_keep_their_first_ciphertext_and_are_erased_per_tenant(store: Store) -> None:
    many = [Sealed(f"tok_{i:04d}", "EMAIL", bytes([i % 256])) for i in range(1200)]
    with store.transaction() as uow:
        uow.vault.add("acme", many, 1.0)
        uow.vault.add("acme", [Sealed("tok_0000", "EMAIL", b"second")], 2.0)
        uow.vault.add("beta", [Sealed("tok_0000", "IBAN", b"theirs")], 1.0)
        uow.vault.add("acme", [], 1.0)
    with store.reading() as uow:
        found = uow.vault.find("acme", [s.token for s in many] + ["tok_none"])
        theirs = uow.vault.find("beta", ["tok_0000", "tok_0001"])
    assert len(found) == 1200
    assert {s.token: s for s in found}["tok_0000"] == Sealed("tok_0000", "EMAIL", b"\x00")
    assert theirs == [Sealed("tok_0000", "IBAN", b"theirs")]
    with store.transaction() as uow:
        assert uow.vault.erase("acme", [s.token for s in many[:700]]) == 700
        assert uow.vault.erase("acme") == 500
    with store.reading() as uow:
        assert uow.vault.find("acme", ["tok_0999"]) == []
        assert len(uow.vault.find("beta", ["tok_0000"])) == 1


def _case(case_id: str, tenant: str = "acme", **fields: Any) -> CaseRow:
    values: dict[str, Any] = {
        "tenant": tenant,
        "case_id": case_id,
        "kind": "model_call",
        "input_digest": "d" * 64,
        "ciphertext": b"sealed-" + case_id.encode(),
        "created_at": 10.0,
        "model": "intent",
        "version": 1,
        "run_id": "run-1",
        "call_id": case_id,
    }
    values.update(fields)
    return CaseRow(**values)


def test_cases_are_kept_once_found_and_forgotten_per_tenant(store: Store) -> None:
    with store.transaction() as uow:
        assert uow.cases.add([_case("c1", subjects=("tok_a", "tok_b")), _case("c2")]) == 2
        # A replayed or retried write keeps the first row.
        assert uow.cases.add([_case("c1", ciphertext=b"second")]) == 0
        uow.cases.add([_case("c3", created_at=20.0, model="other", run_id="run-2")])
        uow.cases.add([_case("c1", tenant="beta", subjects=("tok_a",))])
        uow.cases.add(
            [_case("task:t1", kind="task", task_id="t1", call_id="c1", subjects=("tok_a",))]
        )
    with store.reading() as uow:
        first = uow.cases.get("acme", "c1")
        assert first is not None and first.ciphertext == b"sealed-c1"
        assert first.version == 1 and first.run_id == "run-1" and first.expires_at is None
        assert uow.cases.get("acme", "nope") is None
        assert uow.cases.subjects("acme", "c1") == ["tok_a", "tok_b"]
        assert [c.case_id for c in uow.cases.find("acme", model="intent")] == [
            "c1",
            "c2",
            "task:t1",
        ]
        assert [c.case_id for c in uow.cases.find("acme", since=15.0)] == ["c3"]
        assert [c.case_id for c in uow.cases.find("acme", until=15.0, limit=1)] == ["c1"]
        assert [c.case_id for c in uow.cases.find("acme", run_id="run-2")] == ["c3"]
        assert {c.case_id for c in uow.cases.get_many("acme", ["c1", "c3", "zz"])} == {"c1", "c3"}
        assert [c.tenant for c in uow.cases.get_many("beta", ["c1", "c2"])] == ["beta"]
    with store.transaction() as uow:
        assert uow.cases.delete_subject("acme", "tok_a") == 2  # c1 and the task's case
        assert uow.cases.delete_run("acme", "run-2") == 1
        assert uow.cases.delete_run("acme", "run-9") == 0
    with store.reading() as uow:
        assert [c.case_id for c in uow.cases.find("acme")] == ["c2"]
        assert uow.cases.subjects("acme", "c1") == []
        # The other tenant's case with the same id and subject is untouched.
        assert uow.cases.get("beta", "c1") is not None
        assert uow.cases.subjects("beta", "c1") == ["tok_a"]


def test_expired_cases_are_swept_in_bounded_batches(store: Store) -> None:
    with store.transaction() as uow:
        uow.cases.add([_case(f"e{i}", expires_at=100.0 + i, subjects=("tok_x",)) for i in range(5)])
        uow.cases.add([_case("e0", tenant="beta", expires_at=50.0), _case("keep")])
        uow.cases.add([_case("later", expires_at=1000.0)])
    with store.transaction() as uow:
        assert uow.cases.delete_expired(200.0, 3) == {"beta": 1, "acme": 2}
    with store.transaction() as uow:
        assert uow.cases.delete_expired(200.0, 3) == {"acme": 3}
        assert uow.cases.delete_expired(200.0, 3) == {}
    with store.reading() as uow:
        assert sorted(c.case_id for c in uow.cases.find("acme")) == ["keep", "later"]
        assert uow.cases.subjects("acme", "e4") == []


def test_a_budget_window_hands_out_only_what_fits(store: Store) -> None:
    limits = Limits(window=60.0, calls=3, cost=1.0, tokens=None)
    with store.transaction() as uow:
        budgets = uow.budgets
        assert budgets.usage("tenant:acme", 0.0) is None
        assert budgets.take("tenant:acme", 0.0, [1, 0.1, 0], 1.0) is False  # no window yet
        budgets.open("tenant:acme", 0.0, limits, 1.0)
        budgets.open("tenant:acme", 0.0, Limits(60.0, 99, None, None), 1.0)  # exists
        assert budgets.take("tenant:acme", 0.0, [2, 0.5, 100], 2.0) is True
        assert budgets.take("tenant:acme", 0.0, [2, 0.1, 0], 2.0) is False  # calls: 4 > 3
        assert budgets.take("tenant:acme", 0.0, [1, 0.6, 0], 2.0) is False  # cost: 1.1 > 1
        for _ in range(5):  # five tenths: with the 0.5 taken, exactly the limit of 1.0
            assert budgets.take("tenant:acme", 0.0, [0, 0.1, 0], 3.0) is True
        assert budgets.take("tenant:acme", 0.0, [0, 0.01, 0], 3.0) is False
        budgets.give_back("tenant:acme", 0.0, [10, 5.0, 1000], 4.0)  # never below zero
        used = budgets.usage("tenant:acme", 0.0)
        budgets.set_limits("tenant:acme", 0.0, Limits(60.0, 1, None, 5), 5.0)
        moved = budgets.usage("tenant:acme", 0.0)
    assert used is not None and (used.calls_used, used.cost_used, used.tokens_used) == (0, 0, 0)
    assert used.calls_limit == 3 and used.cost_limit == 1.0 and used.tokens_limit is None
    assert moved is not None
    assert (moved.calls_limit, moved.cost_limit, moved.tokens_limit) == (1, None, 5)


def test_received_events_are_listed_newest_first_with_filters(store: Store) -> None:
    with store.transaction() as uow:
        rows = [
            uow.events.insert(
                tenant="acme",
                source=source,
                event_id=f"e{i}",
                status=status,
                reason=None if status != "REJECTED" else "invalid_event: not JSON",
                run_id=None,
                payload_digest="d" * 64,
                size=10 + i,
                received_at=float(i),
            )
            for i, (source, status) in enumerate(
                [("crm", "ACCEPTED"), ("crm", "REJECTED"), ("erp", "DUPLICATE")]
            )
        ]
    assert [r.id for r in rows] == sorted({r.id for r in rows})
    with store.reading() as uow:
        assert [r.event_id for r in uow.events.find("acme")] == ["e2", "e1", "e0"]
        assert [r.event_id for r in uow.events.find("acme", source="crm")] == ["e1", "e0"]
        rejected = uow.events.find("acme", statuses=["REJECTED"])
        assert [r.reason for r in rejected] == ["invalid_event: not JSON"]
        assert [r.event_id for r in uow.events.find("acme", limit=1, offset=1)] == ["e1"]
        assert uow.events.find("beta") == []


# -- metrics -------------------------------------------------------------------------------


def test_metrics_aggregate_runs_feedback_and_model_calls_in_the_database(store: Store) -> None:
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ENQUEUED):
        store.insert_run(
            NewRun(
                run_id=uuid.uuid4().hex,
                workflow="triage",
                queue="default",
                input_json="{}",
                code_version="v1",
                status=status,
                tenant="acme",
            )
        )
    log = AuditLog(store)
    for i, (version, outcome, confidence) in enumerate(
        [("1", "ok", 0.95), ("1", "ok", 0.15), ("2", "model_error", None)]
    ):
        data = {"model": "intent", "version": version, "route": "primary", "outcome": outcome}
        data |= {"cost": 0.5, "latency_ms": 10.0 * (i + 1), "confidence": confidence}
        log.append(AuditEvent(action="model.called", actor="w", tenant="acme", data=data))
    log.append(AuditEvent(action="model.called", actor="w", tenant="beta", data={"cost": 9}))
    _ask(store, "r1.1", model="intent", model_version="intent@1")
    with store.transaction() as uow:
        uow.tasks.submit("r1.1", "acme", "ann", '{"label":"b"}', True, 150.0)
    with store.reading() as uow:
        metrics = uow.metrics
        counts = metrics.run_counts("acme")
        durations = metrics.run_durations("acme", (0.5, 1e9))
        totals = metrics.call_totals("acme", (0, uow.audit.last_seq("acme")))
        later = metrics.call_totals("acme", (2, 3))
        feedback = metrics.feedback_counts("acme")
        at = [r.at for r in uow.audit.query("acme")]
        calls = metrics.model_calls("acme", "intent", at[0], at[-1] + 1)
        decided = metrics.model_feedback("acme", "intent", 100.0, 200.0)
        by_bucket = metrics.calls_by_bucket("acme", [at[0]], at[-1] + 1)
        feedback_buckets = metrics.feedback_by_bucket("acme", [100.0, 150.0], 200.0)
        finished = metrics.finished_runs("acme", 0.0, 1e12)
    assert sorted(counts) == [
        ("triage", "ENQUEUED", 1),
        ("triage", "FAILED", 1),
        ("triage", "SUCCEEDED", 1),
    ]
    ((workflow, n, _total, buckets),) = durations
    assert (workflow, n, buckets[-1]) == ("triage", 2, 2)
    assert sorted(totals) == [
        ("intent", "1", "primary", "ok", 2, 1.0, 30.0),
        ("intent", "2", "primary", "model_error", 1, 0.5, 30.0),
    ]
    assert later == [("intent", "2", "primary", "model_error", 1, 0.5, 30.0)]
    assert feedback == [("intent", 1, 1)]
    assert sorted((v, o, c) for _, v, o, _, c in calls) == [
        ("1", "ok", 0.15),
        ("1", "ok", 0.95),
        ("2", "model_error", None),
    ]
    assert decided == [(150.0, "intent@1", True)]
    # Confidence bins of tenths: 0.95 -> 9, 0.15 -> 1, none -> None.
    assert sorted(by_bucket, key=str) == sorted(
        [(0, "intent", 9, 1, 0.5), (0, "intent", 1, 1, 0.5), (0, "intent", None, 1, 0.5)],
        key=str,
    )
    assert feedback_buckets == [(1, 1, 1)]
    assert len(finished) == 2 and not any(asked for _, _, asked in finished)


# -- a run's history -----------------------------------------------------------------------


def _running(store: Store, owner: str = "w1") -> str:
    run_id = uuid.uuid4().hex
    store.insert_run(
        NewRun(
            run_id=run_id,
            workflow="triage",
            queue="default",
            input_json="{}",
            code_version="v1",
            status=RunStatus.RUNNING,
            owner=owner,
            lease_until=1e12,
        )
    )
    return run_id


def test_a_step_recorded_in_a_unit_of_work_is_fenced_on_the_lease(store: Store) -> None:
    run_id = _running(store)
    step = StepRecord(0, "decide", "SUCCEEDED", '"yes"', None, 1, 1.0, 2.0)
    log = AuditLog(store)
    event = AuditEvent(action="policy.decided", actor="w", run_id=run_id)
    with pytest.raises(LeaseLost), store.transaction() as uow:
        log.append(event, uow=uow)
        uow.runs.record_step(run_id, "someone-else", step)
    assert store.load_steps(run_id) == {} and log.head("default") is None
    store.record_step_with(run_id, "w1", step, lambda uow: log.append(event, uow=uow))
    assert store.load_steps(run_id)[0].output == "yes"
    assert [r.action for r in log.query("default", run_id=run_id)] == ["policy.decided"]


def test_record_with_records_what_the_build_finds_or_nothing(store: Store) -> None:
    run_id = _running(store)
    _ask(store, f"{run_id}.1")
    seen: list[float] = []

    def wait(uow: Any, now: float) -> StepRecord | None:
        seen.append(now)
        uow.tasks.take(f"{run_id}.1", deadline=1e12, now=now)
        return None

    assert store.record_with(run_id, "w1", wait) is None
    assert len(seen) == 1 and store.load_steps(run_id) == {}

    def expire(uow: Any, now: float) -> StepRecord | None:
        task, expired = uow.tasks.take(f"{run_id}.1", deadline=0.0, now=now)
        assert expired
        return StepRecord(1, "answer", "FAILED", None, {"t": task.status.value}, 1, now, now)

    with pytest.raises(LeaseLost):
        store.record_with(run_id, "w2", expire)
    with store.reading() as uow:  # the expiry rolled back with the refused step
        assert uow.tasks.get(f"{run_id}.1").status is TaskStatus.OPEN
    recorded = store.record_with(run_id, "w1", expire)
    assert recorded is not None and store.load_steps(run_id)[1].error == {"t": "EXPIRED"}
