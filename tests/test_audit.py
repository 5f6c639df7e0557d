"""The audit log: chains per tenant, atomic and concurrent appends, and tamper detection.

The tamper tests edit the tables behind the log's back, as a database administrator could,
and check that ``verify`` names the record that was touched and what happened to it.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aevos.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditHead,
    AuditLog,
    VerifyReport,
    canonical_payload,
    chain_hash,
    verify_jsonl,
)
from aevos.cli import cli
from aevos.errors import AuditChainError, AuditKeyError, InvalidAuditEventError
from aevos.storage import Store, open_store
from aevos.storage.schema import audit, audit_heads

KEY = b"k" * 32
N = 12  # records in the chains the tamper tests attack

# A fixture's chain is built once per test and restored after each hypothesis example.
_PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


@pytest.fixture
def log(store: Store) -> AuditLog:
    return AuditLog(store)


def _event(i: int, tenant: str = "default", **overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "action": "run.started" if i % 2 else "policy.decided",
        "actor": f"svc:{i % 3}",
        "tenant": tenant,
        "subject": f"claim:{i}" if i % 4 else None,
        "run_id": f"run-{i // 3}",
        "data": {"i": i, "digest": f"{i:064x}", "nested": {"b": [1, 2.5, None], "a": "é"}},
    }
    fields.update(overrides)
    return AuditEvent(**fields)


def _fill(log: AuditLog, n: int = N, tenant: str = "default") -> None:
    log.append_many([_event(i, tenant) for i in range(1, n + 1)])


def _rows(store: Store, tenant: str = "default") -> dict[int, dict[str, Any]]:
    with store.engine.begin() as conn:
        rows = conn.execute(sa.select(audit).where(audit.c.tenant == tenant)).mappings().all()
    return {row["seq"]: dict(row) for row in rows}


def _head(store: Store, tenant: str = "default") -> dict[str, Any] | None:
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(audit_heads).where(audit_heads.c.tenant == tenant)).first()
    return None if row is None else dict(row._mapping)


def _write(store: Store, tenant: str, seq: int, **values: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(audit).where(audit.c.tenant == tenant, audit.c.seq == seq).values(**values)
        )


def _restore(store: Store, tenant: str, rows: dict[int, dict[str, Any]], head: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.tenant == tenant))
        conn.execute(audit.insert(), list(rows.values()))
        conn.execute(sa.delete(audit_heads).where(audit_heads.c.tenant == tenant))
        conn.execute(audit_heads.insert(), [head])


def _seqs(report: VerifyReport) -> set[int]:
    return {problem.seq for problem in report.problems}


def _kinds(report: VerifyReport) -> dict[int, str]:
    return {problem.seq: problem.kind for problem in report.problems}


# -- appending ------------------------------------------------------------------------------


def test_append_links_each_record_to_the_previous_one(log: AuditLog, store: Store) -> None:
    first = log.append(_event(1))
    second, third = log.append_many([_event(2), _event(3)])
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert first.at <= second.at == third.at
    rows = _rows(store)
    for record in (first, second, third):
        row = rows[record.seq]
        assert row["hash"] == record.hash == chain_hash(row["prev_hash"], row["payload"])
        assert json.loads(row["payload"]) == {
            "tenant": "default",
            "seq": record.seq,
            "at": record.at,
            "actor": record.actor,
            "action": record.action,
            "subject": record.subject,
            "run_id": record.run_id,
            "data": dict(record.data),
        }
    assert log.head("default") == AuditHead(3, third.hash)
    report = log.verify("default")
    assert report.ok and report.checked == 3 and report.problems == []
    assert report.last == AuditHead(3, third.hash) == report.head


def test_payload_is_compact_sorted_ascii_json(log: AuditLog, store: Store) -> None:
    record = log.append(_event(1, data={"z": 1, "a": (1, 2), "é": "ü", 3: "three"}))
    payload = _rows(store)[1]["payload"]
    value = json.loads(payload)
    assert payload == json.dumps(value, sort_keys=True, separators=(",", ":"))
    assert payload.isascii()
    # Normalised the way JSON round-trips it: tuples become lists, keys strings.
    assert value["data"] == {"z": 1, "a": [1, 2], "é": "ü", "3": "three"} == record.data


@given(
    text=st.text(max_size=20),
    optional=st.none() | st.text(max_size=20),
    at=st.floats(min_value=0, max_value=4e9),
    seq=st.integers(min_value=1, max_value=2**62),
    data=st.dictionaries(
        st.text(max_size=5),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=5),
        max_size=4,
    ),
)
def test_canonical_payload_is_sorted_json(
    text: str, optional: str | None, at: float, seq: int, data: dict[str, Any]
) -> None:
    record: dict[str, Any] = {
        "tenant": "t",
        "seq": seq,
        "at": at,
        "actor": text or "a",
        "action": "x" + text,
        "subject": optional,
        "run_id": optional,
        "data": data,
    }
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"))
    data_json = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert (
        canonical_payload(**{k: v for k, v in record.items() if k != "data"}, data_json=data_json)
        == expected
    )


@given(
    key=st.binary(min_size=16, max_size=200),
    prev=st.text("0123456789abcdef", min_size=64, max_size=64),
    payload=st.text(max_size=300),
)
def test_keyed_hash_is_hmac_sha256(key: bytes, prev: str, payload: str) -> None:
    message = (prev + payload).encode("utf-8", "surrogateescape")
    assert chain_hash(prev, payload, key) == hmac.new(key, message, hashlib.sha256).hexdigest()
    assert chain_hash(prev, payload) == hashlib.sha256(message).hexdigest()


def test_events_are_validated_when_created() -> None:
    with pytest.raises(InvalidAuditEventError, match="action"):
        AuditEvent(action="", actor="a")
    with pytest.raises(InvalidAuditEventError, match="actor"):
        AuditEvent(action="a", actor="x" * 201)
    with pytest.raises(InvalidAuditEventError, match=r"object at \$\.when"):
        AuditEvent(action="a", actor="a", data={"when": object()})
    with pytest.raises(InvalidAuditEventError, match="at most"):
        AuditEvent(action="a", actor="a", data={"blob": "x" * 70_000})
    with pytest.raises(InvalidAuditEventError, match="mapping"):
        AuditEvent(action="a", actor="a", data=[1])  # type: ignore[arg-type]


def test_keys_come_from_the_environment(store: Store) -> None:
    assert not AuditLog.from_env(store, {}).keyed
    assert AuditLog.from_env(store, {"AEVOS_AUDIT_KEY": "s" * 32}).keyed
    with pytest.raises(AuditKeyError, match="AEVOS_AUDIT_KEY is 5 bytes") as caught:
        AuditLog.from_env(store, {"AEVOS_AUDIT_KEY": "short"})
    assert "short" not in caught.value.message
    with pytest.raises(AuditKeyError):
        AuditLog(store, b"short")


def test_tenants_have_separate_chains_and_queries(log: AuditLog) -> None:
    _fill(log, 5, "acme")
    _fill(log, 3, "globex")
    a = log.query("acme")
    b = log.query("globex")
    assert [r.seq for r in a] == [1, 2, 3, 4, 5] and {r.tenant for r in a} == {"acme"}
    assert [r.seq for r in b] == [1, 2, 3] and {r.tenant for r in b} == {"globex"}
    assert a[0].prev_hash == b[0].prev_hash == GENESIS_HASH and a[0].hash != b[0].hash
    assert log.query("initech") == [] and log.head("initech") is None
    assert log.verify("acme").ok and log.verify("globex").ok
    assert log.verify("initech").ok and log.verify("initech").checked == 0
    # A batch spanning tenants appends to each chain.
    records = log.append_many([_event(1, "globex"), _event(2, "acme"), _event(3, "globex")])
    assert [(r.tenant, r.seq) for r in records] == [("globex", 4), ("acme", 6), ("globex", 5)]
    assert log.verify("acme").ok and log.verify("globex").ok


def test_query_filters_and_pages(log: AuditLog) -> None:
    log.append_many([_event(i) for i in range(1, 7)])
    time.sleep(0.01)
    middle = time.time()
    time.sleep(0.01)
    log.append_many([_event(i) for i in range(7, 13)])
    assert {r.action for r in log.query("default", action="run.started")} == {"run.started"}
    assert [r.seq for r in log.query("default", run_id="run-2")] == [6, 7, 8]
    assert [r.seq for r in log.query("default", actor="svc:0")] == [3, 6, 9, 12]
    page = log.query("default", after_seq=4, limit=3)
    assert [r.seq for r in page] == [5, 6, 7]
    assert [r.seq for r in log.query("default", since=middle)] == list(range(7, 13))
    assert [r.seq for r in log.query("default", until=middle)] == list(range(1, 7))
    aware = datetime.fromtimestamp(middle, tz=UTC)
    assert [r.seq for r in log.query("default", since=aware)] == list(range(7, 13))
    with pytest.raises(InvalidAuditEventError, match="timezone"):
        log.query("default", since=datetime.now())  # noqa: DTZ005
    assert log.query("default")[0].data["nested"] == {"a": "é", "b": [1, 2.5, None]}


def test_append_commits_or_rolls_back_with_the_callers_transaction(
    log: AuditLog, store: Store
) -> None:
    log.append(_event(1))
    with pytest.raises(RuntimeError), store.transaction() as uow:
        log.append(_event(2), uow=uow)
        raise RuntimeError("the state change failed")
    assert log.head("default") == AuditHead(1, log.query("default")[0].hash)
    with store.transaction() as uow:
        record = log.append(_event(3), uow=uow)
    assert record.seq == 2
    assert log.verify("default").ok


def test_a_chain_whose_head_was_deleted_refuses_appends(log: AuditLog, store: Store) -> None:
    _fill(log, 3)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit_heads))
    with pytest.raises(AuditChainError, match="no head row"):
        log.append(_event(4))
    report = log.verify("default")
    assert _kinds(report) == {3: "head_mismatch"}


@pytest.mark.slow
def test_concurrent_appenders_produce_a_gap_free_chain(log: AuditLog, store: Store) -> None:
    threads, per_thread = 4, 200
    errors: list[BaseException] = []

    def appender(worker: int) -> None:
        try:
            for i in range(per_thread):
                log.append(_event(i, actor=f"thread:{worker}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=appender, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    total = threads * per_thread
    assert sorted(_rows(store)) == list(range(1, total + 1))
    report = log.verify("default")
    assert report.ok and report.checked == total and report.head is not None
    assert report.head.seq == total


@pytest.mark.slow
def test_concurrent_first_appends_to_new_tenants(log: AuditLog) -> None:
    tenants = [f"fresh-{n}" for n in range(10)]
    errors: list[BaseException] = []

    def appender(worker: int) -> None:
        try:
            for i in range(50):
                log.append(_event(i, tenants[(i + worker) % len(tenants)]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=appender, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    reports = [log.verify(tenant) for tenant in tenants]
    assert all(report.ok for report in reports)
    assert sum(report.checked for report in reports) == 200


_CHILD = """
import sys
from aevos.audit import AuditEvent, AuditLog
from aevos.storage import open_store
store = open_store(sys.argv[1])
log = AuditLog(store)
for i in range(int(sys.argv[2])):
    log.append(AuditEvent(action="x", actor="proc:" + sys.argv[3], tenant="multi"))
store.close()
"""


@pytest.mark.slow
def test_concurrent_processes_produce_a_gap_free_chain(database_url: str, log: AuditLog) -> None:
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, database_url, "100", str(n)])
        for n in range(3)
    ]
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0]
    report = log.verify("multi")
    assert report.ok and report.checked == 300


def test_verify_while_appending_sees_a_consistent_snapshot(log: AuditLog) -> None:
    _fill(log, 50)
    stop = threading.Event()

    def appender() -> None:
        while not stop.is_set():
            log.append(_event(1))

    thread = threading.Thread(target=appender)
    thread.start()
    try:
        reports = [log.verify("default") for _ in range(10)]
    finally:
        stop.set()
        thread.join()
    assert all(report.ok for report in reports), [r.problems for r in reports if not r.ok]


# -- tampering ------------------------------------------------------------------------------


@pytest.fixture
def chain(log: AuditLog, store: Store) -> Iterator[tuple[dict[int, dict[str, Any]], Any]]:
    """A verified chain of N records; each test restores it after tampering."""
    _fill(log, N)
    _fill(log, 3, "bystander")
    rows, head = _rows(store), _head(store)
    assert log.verify("default").ok
    yield rows, head


def _flip(text: str, index: int, byte: int) -> bytes:
    data = bytearray(text.encode())
    data[index % len(data)] = byte
    return bytes(data)


@_PROPERTY
@given(
    seq=st.integers(1, N),
    column=st.sampled_from(["payload", "hash", "prev_hash"]),
    index=st.integers(0, 10_000),
    byte=st.integers(0, 255),
)
def test_any_single_byte_change_is_named(
    log: AuditLog,
    store: Store,
    chain: tuple[dict[int, dict[str, Any]], Any],
    seq: int,
    column: str,
    index: int,
    byte: int,
) -> None:
    rows, _head_row = chain
    original: str = rows[seq][column]
    if store.backend == "postgresql":
        byte = byte % 127 + 1  # PostgreSQL text holds neither NUL nor invalid UTF-8
    changed = _flip(original, index, byte)
    if changed == original.encode():
        return
    with store.engine.begin() as conn:
        if store.backend == "sqlite":
            # Raw bytes, possibly invalid UTF-8, exactly as a disk editor would leave them.
            conn.execute(
                sa.text(
                    f"UPDATE aevos_audit SET {column} = CAST(:v AS TEXT) WHERE tenant = 'default' AND seq = :s"
                ),
                {"v": changed, "s": seq},
            )
        else:
            conn.execute(
                sa.update(audit)
                .where(audit.c.tenant == "default", audit.c.seq == seq)
                .values({column: changed.decode()})
            )
    try:
        report = log.verify("default")
        assert not report.ok
        assert _kinds(report) == {seq: "modified"}, report.problems
        assert log.verify("bystander").ok
    finally:
        _write(store, "default", seq, **{column: original})
    assert log.verify("default").ok


def test_invalid_utf8_is_reported_not_fatal(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        log = AuditLog(store)
        # More records than one fetch batch, so the scan resumes after the bad row.
        log.append_many([_event(i) for i in range(1, 25_001)])
        with store.engine.begin() as conn:
            for seq, column in ((12_345, "payload"), (20_000, "hash")):
                conn.execute(
                    sa.text(f"UPDATE aevos_audit SET {column} = CAST(:v AS TEXT) WHERE seq = :s"),
                    {"v": b"\xff\xfe" + b"x" * 62, "s": seq},
                )
        report = log.verify("default")
        assert report.checked == 25_000
        assert _kinds(report) == {12_345: "modified", 20_000: "modified"}
        exported = io.StringIO()
        assert log.export_jsonl("default", exported) == 25_000
        exported.getvalue().encode("utf-8")  # a file can hold it
        assert _seqs(verify_jsonl(exported.getvalue().splitlines())) == {12_345, 20_000}
    finally:
        store.close()


@_PROPERTY
@given(seq=st.integers(1, N))
def test_a_deleted_record_is_named(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any], seq: int
) -> None:
    rows, head = chain
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.tenant == "default", audit.c.seq == seq))
    try:
        report = log.verify("default")
        # The last record's deletion shows against the head row.
        assert _kinds(report) == {seq: "truncated" if seq == N else "deleted"}, report.problems
        assert report.checked == N - 1
    finally:
        _restore(store, "default", rows, head)


@_PROPERTY
@given(pair=st.lists(st.integers(1, N), min_size=2, max_size=2, unique=True).map(sorted))
def test_swapped_records_are_named(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any], pair: list[int]
) -> None:
    rows, head = chain
    i, j = pair
    content = [c for c in rows[i] if c not in ("tenant", "seq")]
    try:
        # Whole records swapped: each is genuine, in the other's place.
        _write(store, "default", i, **{c: rows[j][c] for c in content})
        _write(store, "default", j, **{c: rows[i][c] for c in content})
        report = log.verify("default")
        assert _kinds(report) == {i: "reordered", j: "reordered"}, report.problems
        # Only the payloads swapped: neither matches its hash.
        _restore(store, "default", rows, head)
        _write(store, "default", i, payload=rows[j]["payload"])
        _write(store, "default", j, payload=rows[i]["payload"])
        report = log.verify("default")
        assert _kinds(report) == {i: "modified", j: "modified"}, report.problems
        assert f"claims seq {j}" in report.problems[0].detail
    finally:
        _restore(store, "default", rows, head)


def _forge(
    rows: dict[int, dict[str, Any]], seq: int, prev_hash: str, key: bytes | None
) -> dict[str, Any]:
    """A record at ``seq`` that looks right and is hashed the way a forger would."""
    row = dict(rows[1])
    payload = json.loads(row["payload"])
    payload.update(seq=seq, actor="mallory", data={"approved": True})
    row["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    row.update(seq=seq, actor="mallory", prev_hash=prev_hash)
    row["hash"] = chain_hash(prev_hash, row["payload"], key)
    return row


@_PROPERTY
@given(seq=st.integers(1, N + 1), keyed_forgery=st.booleans())
def test_an_inserted_record_is_named(
    log: AuditLog,
    store: Store,
    chain: tuple[dict[int, dict[str, Any]], Any],
    seq: int,
    keyed_forgery: bool,
) -> None:
    rows, head = chain
    # Without the key a forger can only hash with plain SHA-256, which is what this log uses;
    # "keyed_forgery" stands for a forger using a key that is not the log's.
    forged = _forge(
        rows,
        seq,
        rows[seq - 1]["hash"] if seq > 1 else GENESIS_HASH,
        KEY if keyed_forgery else None,
    )
    try:
        with store.engine.begin() as conn:
            # Make room: move the records from seq on up by one (from the top down).
            for s in range(N, seq - 1, -1):
                conn.execute(
                    sa.update(audit)
                    .where(audit.c.tenant == "default", audit.c.seq == s)
                    .values(seq=s + 1)
                )
            conn.execute(audit.insert(), [forged])
        report = log.verify("default")
        assert not report.ok
        assert _kinds(report)[seq] == "inserted", report.problems
        assert min(_seqs(report)) == seq
    finally:
        _restore(store, "default", rows, head)


def test_a_record_before_genesis_or_from_another_tenant_is_named(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any]
) -> None:
    rows, head = chain
    with store.engine.begin() as conn:
        conn.execute(audit.insert(), [_forge(rows, 0, GENESIS_HASH, None)])
    assert _kinds(log.verify("default")) == {0: "inserted"}
    _restore(store, "default", rows, head)
    other = _rows(store, "bystander")[2]
    _write(store, "default", 5, **{c: v for c, v in other.items() if c not in ("tenant", "seq")})
    report = log.verify("default")
    assert _kinds(report) == {5: "inserted"} and "another tenant" in report.problems[0].detail


def test_renumbering_to_hide_a_deletion_is_named(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any]
) -> None:
    del chain  # only its set-up
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.tenant == "default", audit.c.seq == 4))
        for s in range(5, N + 1):
            conn.execute(
                sa.update(audit)
                .where(audit.c.tenant == "default", audit.c.seq == s)
                .values(seq=s - 1)
            )
        conn.execute(
            sa.update(audit_heads).where(audit_heads.c.tenant == "default").values(seq=N - 1)
        )
    report = log.verify("default")
    assert _kinds(report)[4] == "deleted", report.problems


def test_edited_index_columns_and_head_are_named(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any]
) -> None:
    rows, _head_row = chain
    _write(store, "default", 7, actor="someone-else")
    report = log.verify("default")
    assert _kinds(report) == {7: "modified"} and "actor" in report.problems[0].detail
    _write(store, "default", 7, actor=rows[7]["actor"])
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(audit_heads).where(audit_heads.c.tenant == "default").values(hash="f" * 64)
        )
    assert _kinds(log.verify("default")) == {N: "head_mismatch"}
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(audit_heads).where(audit_heads.c.tenant == "default").values(seq=N + 2)
        )
    assert _kinds(log.verify("default")) == {N + 1: "truncated"}


def test_several_problems_are_all_reported(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any]
) -> None:
    rows, _head_row = chain
    _write(store, "default", 2, payload=rows[2]["payload"].replace('"i":2', '"i":9'))
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.tenant == "default", audit.c.seq.in_([6, 7])))
        conn.execute(sa.delete(audit).where(audit.c.tenant == "default", audit.c.seq == N))
    report = log.verify("default")
    assert _kinds(report) == {2: "modified", 6: "deleted", N: "truncated"}
    assert "records 6..7 are missing" in report.problems[1].detail


def test_problems_are_capped_but_every_kind_is_kept(log: AuditLog, store: Store) -> None:
    _fill(log, 30)
    report = AuditLog(store, KEY).verify("default", max_problems=5)
    assert not report.ok and len(report.problems) == 5 and report.omitted == 25
    assert "plain SHA-256" in report.problems[0].detail


# -- the key --------------------------------------------------------------------------------


def test_a_rewrite_without_the_key_is_detected_with_it(store: Store) -> None:
    keyed = AuditLog(store, KEY)
    keyed.append_many([_event(i) for i in range(1, N + 1)])
    assert keyed.verify("default").ok
    assert not AuditLog(store).verify("default").ok  # a keyed chain is not plain SHA-256
    rows = _rows(store)
    # The administrator edits record 5 and re-hashes everything from there, head included.
    prev = rows[4]["hash"]
    with store.engine.begin() as conn:
        for seq in range(5, N + 1):
            payload = rows[seq]["payload"]
            if seq == 5:
                payload = payload.replace('"i":5', '"i":500')
            digest = chain_hash(prev, payload)
            conn.execute(
                sa.update(audit)
                .where(audit.c.tenant == "default", audit.c.seq == seq)
                .values(payload=payload, prev_hash=prev, hash=digest)
            )
            prev = digest
        conn.execute(sa.update(audit_heads).values(hash=prev))
    report = keyed.verify("default")
    assert not report.ok and report.keyed
    assert min(_seqs(report)) == 5 and _kinds(report)[5] == "modified"
    assert "without the audit key" in report.problems[0].detail
    assert AuditLog(store).verify("default").problems[0].seq == 1  # plain: only the old part fails


def test_an_anchor_catches_a_tail_cut_with_the_head_rolled_back(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any]
) -> None:
    rows, _head_row = chain
    anchor = log.verify("default").last
    assert anchor == AuditHead(N, rows[N]["hash"])
    assert AuditHead.parse(str(anchor)) == anchor
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.tenant == "default", audit.c.seq >= N - 1))
        conn.execute(
            sa.update(audit_heads)
            .where(audit_heads.c.tenant == "default")
            .values(seq=N - 2, hash=rows[N - 2]["hash"])
        )
    assert log.verify("default").ok  # consistent: only an anchor kept elsewhere can tell
    report = log.verify("default", anchor=anchor)
    assert _kinds(report) == {N - 1: "truncated"}


# -- export ---------------------------------------------------------------------------------


def _export(log: AuditLog, tenant: str = "default", after_seq: int = 0) -> list[str]:
    buffer = io.StringIO()
    count = log.export_jsonl(tenant, buffer, after_seq=after_seq)
    lines = buffer.getvalue().splitlines()
    assert count == len(lines)
    return lines


def test_export_round_trips_and_verifies_offline(log: AuditLog) -> None:
    _fill(log, N)
    lines = _export(log)
    assert len(lines) == N
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(1, N + 1))
    assert records[0]["prev_hash"] == GENESIS_HASH and records[1]["prev_hash"] == records[0]["hash"]
    assert records[3]["data"] == dict(log.query("default")[3].data)
    report = verify_jsonl(lines)
    assert report.ok and report.checked == N and report.last == log.head("default")
    # Re-serialised by another tool (key order, spacing): still the same records.
    reformatted = [json.dumps(r, indent=None) for r in records]
    assert verify_jsonl(reformatted).ok
    partial = _export(log, after_seq=5)
    assert [json.loads(line)["seq"] for line in partial] == list(range(6, N + 1))
    assert verify_jsonl(partial, partial=True).ok
    assert _kinds(verify_jsonl(partial)) == {1: "deleted"}


def test_a_keyed_export_needs_the_key(store: Store) -> None:
    keyed = AuditLog(store, KEY)
    keyed.append_many([_event(i) for i in range(1, 6)])
    lines = _export(keyed)
    assert verify_jsonl(lines, KEY).ok
    assert not verify_jsonl(lines).ok


@_PROPERTY
@given(line=st.integers(0, N - 1), index=st.integers(0, 10_000), char=st.characters(codec="ascii"))
def test_a_changed_byte_in_an_export_is_named(
    log: AuditLog, chain: tuple[dict[int, dict[str, Any]], Any], line: int, index: int, char: str
) -> None:
    lines = _export(log)
    text = lines[line]
    index %= len(text)
    if text[index] == char or char in "\r\n":
        return
    lines[line] = text[:index] + char + text[index + 1 :]
    if not lines[line].strip():
        return
    report = verify_jsonl(lines)
    assert not report.ok
    assert line + 1 in _seqs(report), report.problems


def test_tampered_exports_are_named(log: AuditLog) -> None:
    _fill(log, N)
    lines = _export(log)
    assert _kinds(verify_jsonl(lines[:4] + lines[5:])) == {5: "deleted"}
    assert _kinds(verify_jsonl(lines[1:])) == {1: "deleted"}
    assert _kinds(verify_jsonl(lines[:-2] + lines[-1:])) == {N - 1: "deleted"}
    swapped = list(lines)
    swapped[2], swapped[8] = swapped[8], swapped[2]
    assert _kinds(verify_jsonl(swapped)) == {3: "reordered", 9: "reordered"}
    anchor = AuditHead(N, json.loads(lines[-1])["hash"])
    assert verify_jsonl(lines[:-1]).ok  # a file has no head: a cut tail needs the anchor
    assert _kinds(verify_jsonl(lines[:-1], anchor=anchor)) == {N: "truncated"}
    assert _kinds(verify_jsonl([*lines[:3], "not json", *lines[4:]])) == {4: "modified"}


def test_an_export_of_a_tampered_database_fails_offline(
    log: AuditLog, store: Store, chain: tuple[dict[int, dict[str, Any]], Any]
) -> None:
    _write(store, "default", 6, payload="garbage")
    lines = _export(log)
    assert _kinds(verify_jsonl(lines)) == {6: "modified"}


# -- CLI ------------------------------------------------------------------------------------


def _cli(url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["--database-url", url, "audit", *args], env=env)


def test_cli_verify_show_export_and_verify_file(
    database_url: str, log: AuditLog, store: Store, tmp_path: Path
) -> None:
    _fill(log, N)
    result = _cli(database_url, "verify")
    assert result.exit_code == 0, result.output
    assert f"{N} records" in result.output and "intact" in result.output

    result = _cli(database_url, "show", "--json", "--run-id", "run-1")
    assert result.exit_code == 0, result.output
    shown = [json.loads(line) for line in result.output.splitlines()]
    assert [r["seq"] for r in shown] == [3, 4, 5] and shown[0]["data"]["i"] == 3
    result = _cli(database_url, "show", "--action", "run.started", "--limit", "2")
    assert result.exit_code == 0 and "run.started" in result.output

    result = _cli(database_url, "head")
    assert result.exit_code == 0 and result.output.strip() == str(log.head("default"))

    out = tmp_path / "audit.jsonl"
    result = _cli(database_url, "export", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == N
    result = _cli(database_url, "verify-file", str(out))
    assert result.exit_code == 0, result.output
    result = _cli(database_url, "export", "--after", "10")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2

    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    result = _cli(database_url, "verify-file", str(out))
    assert result.exit_code == 1 and "deleted" in result.output and "4" in result.output

    rows = _rows(store)
    _write(store, "default", 9, payload=rows[9]["payload"].replace('"i":9', '"i":8'))
    result = _cli(database_url, "verify")
    assert result.exit_code == 1
    assert "modified" in result.output and "9" in result.output

    result = _cli(database_url, "verify", "--anchor", "nonsense")
    assert result.exit_code == 2 and "anchor" in result.output


def test_cli_uses_the_key_from_the_environment(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        AuditLog(store, KEY).append_many([_event(i, "acme") for i in range(3)])
    finally:
        store.close()
    keyed = {"AEVOS_AUDIT_KEY": KEY.decode()}
    assert _cli(sqlite_url, "verify", "--tenant", "acme", env=keyed).exit_code == 0
    result = _cli(sqlite_url, "verify", "--tenant", "acme", env={"AEVOS_AUDIT_KEY": ""})
    assert result.exit_code == 1 and "AEVOS_AUDIT_KEY" in result.output
    result = _cli(sqlite_url, "verify", "--tenant", "acme", env={"AEVOS_AUDIT_KEY": "tiny"})
    assert (
        result.exit_code == 2
        and "audit_key_invalid" in result.output
        and "tiny" not in result.output
    )
