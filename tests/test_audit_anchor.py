"""Signed anchors: a chain cut short, with its head row moved back, fails verification.

The attacks edit the tables behind the log's back, as a database administrator could: they
delete the newest records and move the head row to the last one left, which leaves a
consistent, shorter chain. Only a signed head kept outside the database can tell.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from aevos import Aevos
from aevos.audit import (
    AuditAnchors,
    AuditEvent,
    AuditHead,
    AuditLog,
    VerifyReport,
    chain_hash,
    verify_jsonl,
)
from aevos.audit.keys import (
    Ed25519PrivateKey,
    generate_signing_key,
    key_id,
    load_public_keys,
    load_signing_key,
    public_key_text,
    signing_key_pem,
    signing_key_text,
)
from aevos.cli import cli
from aevos.errors import (
    AuditAnchorError,
    AuditAnchorRefusedError,
    AuditSigningKeyError,
    AuditSigningKeyMissingError,
    DefinitionError,
)
from aevos.server import create_app
from aevos.storage import Store, open_store
from aevos.storage.schema import audit, audit_heads

KEY = b"k" * 32
N = 12


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    yield opened
    opened.close()


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture
def anchor_dir(tmp_path: Path) -> Path:
    path = tmp_path / "anchors"
    path.mkdir()
    return path


def _event(i: int, tenant: str = "default") -> AuditEvent:
    return AuditEvent(action="policy.decided", actor=f"svc:{i % 3}", tenant=tenant, data={"i": i})


def _fill(log: AuditLog, n: int = N, tenant: str = "default", first: int = 1) -> None:
    log.append_many([_event(i, tenant) for i in range(first, first + n)])


def _rows(store: Store, tenant: str = "default") -> dict[int, dict[str, Any]]:
    with store.engine.begin() as conn:
        rows = conn.execute(sa.select(audit).where(audit.c.tenant == tenant)).mappings().all()
    return {row["seq"]: dict(row) for row in rows}


def _truncate(store: Store, keep: int, tenant: str = "default") -> None:
    """Delete the records after ``keep`` and move the head row back to it: consistent."""
    kept = _rows(store, tenant)[keep]
    with store.engine.begin() as conn:
        conn.execute(sa.delete(audit).where(audit.c.tenant == tenant, audit.c.seq > keep))
        conn.execute(
            sa.update(audit_heads)
            .where(audit_heads.c.tenant == tenant)
            .values(seq=keep, hash=kept["hash"])
        )


def _kinds(report: VerifyReport) -> dict[int, str]:
    return {problem.seq: problem.kind for problem in report.problems}


def _files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def _overwrite(path: Path, text: str) -> None:
    path.chmod(0o644)  # anchors are written read-only
    path.write_text(text)


# -- truncation -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
def test_a_truncated_chain_fails_against_its_anchor(
    store: Store,
    anchor_dir: Path,
    signing_key: Ed25519PrivateKey,
    key: bytes | None,
) -> None:
    log = AuditLog(store, key, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
    _fill(log)
    outcome = log.anchor("default")
    anchor = outcome.anchor
    assert outcome.written and anchor is not None and anchor.head == log.head("default")
    assert anchor.path is not None and anchor.path.parent.parent == anchor_dir
    report = log.verify("default")
    assert report.ok and report.anchor == anchor.head
    assert report.anchor_file == str(anchor.path)

    _truncate(store, N - 2)
    # Without an anchor the shorter chain is consistent, key or no key: the gap anchors close.
    assert AuditLog(store, key).verify("default").ok
    report = log.verify("default")
    assert not report.ok and _kinds(report) == {N - 1: "truncated"}, report.problems
    detail = report.problems[0].detail
    assert f"anchor {anchor.path} records seq {N} hash {anchor.hash[:12]}" in detail
    assert f"the database ends at seq {N - 2}" in detail
    # An auditor holding only the public key sees the same.
    public_only = AuditAnchors(anchor_dir, public_keys=[signing_key.public_key()])
    assert _kinds(AuditLog(store, key, anchors=public_only).verify("default")) == {
        N - 1: "truncated"
    }

    # The anchorer (another process: no memory of the anchor) refuses to sign the shorter
    # head, and still refuses once the chain has grown past the anchored seq again.
    anchorer = AuditLog(store, key, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
    with pytest.raises(AuditAnchorRefusedError, match=f"truncated at seq {N - 1}"):
        anchorer.anchor("default")
    _fill(anchorer, 4, first=100)
    with pytest.raises(AuditAnchorRefusedError, match=f"modified at seq {N}: .*rewritten"):
        anchorer.anchor("default")
    assert _kinds(log.verify("default")) == {N: "modified"}
    assert _files(anchor_dir) == [anchor.path]


def test_a_rewrite_at_or_before_the_anchor_is_named(
    store: Store, anchor_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    log = AuditLog(store, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
    _fill(log)
    anchor = log.anchor("default").anchor
    assert anchor is not None
    # Without a key anyone can edit record 5 and re-hash everything after it, head included.
    rows = _rows(store)
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
    assert AuditLog(store).verify("default").ok
    report = log.verify("default")
    assert _kinds(report) == {N: "modified"}
    assert "rewritten" in report.problems[0].detail
    assert str(anchor.path) in report.problems[0].detail


def test_a_tampered_anchor_file_is_rejected(
    store: Store, anchor_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    anchors = AuditAnchors(anchor_dir, signing_key=signing_key)
    log = AuditLog(store, anchors=anchors)
    _fill(log, 6)
    older = log.anchor("default").anchor
    _fill(log, 6, first=7)
    newest = log.anchor("default").anchor
    assert older is not None and newest is not None and newest.path is not None
    assert (older.seq, newest.seq) == (6, N)
    assert anchors.read(newest.path, "default") == newest
    genuine = newest.path.read_text()

    def invalid_because(text: str) -> tuple[str, VerifyReport]:
        _overwrite(newest.path, text)
        report = log.verify("default")
        assert not report.ok and _kinds(report) == {N: "anchor_invalid"}, report.problems
        assert report.problems[0].detail.startswith(f"{newest.path}: ")
        # Checked against the newest valid anchor instead.
        assert report.anchor == older.head
        return report.problems[0].detail, report

    fields = json.loads(genuine)
    detail, _ = invalid_because(json.dumps({**fields, "signed_at": "2030-01-01T00:00:00+00:00"}))
    assert "signature does not verify" in detail
    detail, _ = invalid_because(genuine[:40])
    assert "not JSON" in detail
    forged = AuditAnchors(anchor_dir, signing_key=generate_signing_key())
    detail, _ = invalid_because(forged.sign("default", newest.head).to_json())
    assert "not by a known key" in detail
    # A genuine anchor in the wrong place vouches for nothing: another tenant's, or renamed.
    _fill(log, 12, "other")
    theirs = log.anchor("other").anchor
    assert theirs is not None and theirs.path is not None
    detail, _ = invalid_because(theirs.path.read_text())
    assert "tenant 'other', filed under 'default'" in detail
    with pytest.raises(AuditAnchorError, match="not a valid anchor: a genuine anchor of"):
        anchors.read(newest.path, "default")
    _overwrite(newest.path, genuine)
    assert log.verify("default").ok
    renamed = newest.path.with_name(f"{N + 1:020d}-{newest.hash}.json")
    shutil.copy(newest.path, renamed)
    report = log.verify("default")
    assert _kinds(report) == {N + 1: "anchor_invalid"} and "renamed" in report.problems[0].detail
    renamed.unlink()

    # A bad anchor and a truncation: both named, the truncation against the valid anchor.
    _overwrite(newest.path, genuine.replace('"seq":12', '"seq":11'))
    _truncate(store, 4)
    assert _kinds(log.verify("default")) == {5: "truncated", N: "anchor_invalid"}


def test_an_export_cut_short_fails_against_the_anchor(
    store: Store, anchor_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    anchors = AuditAnchors(anchor_dir, signing_key=signing_key)
    log = AuditLog(store, anchors=anchors)
    _fill(log)
    log.anchor("default")
    buffer = io.StringIO()
    log.export_jsonl("default", buffer)
    lines = buffer.getvalue().splitlines()
    anchor = AuditAnchors(anchor_dir, public_keys=[signing_key.public_key()]).newest("default")
    assert anchor.anchor is not None and not anchor.invalid
    assert verify_jsonl(lines, anchor=anchor.anchor).ok
    assert verify_jsonl(lines[:-2]).ok  # a file has no head row
    report = verify_jsonl(lines[:-2], anchor=anchor.anchor)
    assert _kinds(report) == {N - 1: "truncated"}
    assert f"the file ends at seq {N - 2}" in report.problems[0].detail
    assert report.anchor_file == str(anchor.anchor.path)


# -- writing --------------------------------------------------------------------------------


def test_anchors_are_written_once_and_only_when_the_head_moves(
    store: Store, anchor_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    log = AuditLog(store, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
    assert log.anchor("default").anchor is None  # no chain yet: nothing to sign
    _fill(log, 3)
    first = log.anchor("default")
    again = log.anchor("default")
    assert first.written and not again.written and again.anchor == first.anchor
    assert first.anchor is not None and first.anchor.path is not None
    written = first.anchor.path.read_bytes()
    # Another process with the same head finds the name taken and rewrites nothing.
    other = AuditLog(store, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
    third = other.anchor("default")
    assert not third.written and third.anchor is not None
    assert third.anchor.path == first.anchor.path and first.anchor.path.read_bytes() == written
    assert _files(anchor_dir) == [first.anchor.path]  # no temporary file left behind
    assert stat.S_IMODE(first.anchor.path.stat().st_mode) & 0o222 == 0  # read-only
    name = first.anchor.path.name
    assert name == f"{3:020d}-{first.anchor.hash}.json"
    assert json.loads(written)["tenant"] == "default"

    _fill(log, 2, first=4)
    moved = log.anchor("default")
    assert moved.written and moved.anchor is not None and moved.anchor.seq == 5
    assert len(_files(anchor_dir)) == 2
    # Tenants that are not plain names get a directory named by a digest.
    _fill(log, 1, "Odd Tenant/../x")
    odd = log.anchor("Odd Tenant/../x").anchor
    assert odd is not None and odd.path is not None
    assert odd.path.parent.parent == anchor_dir and odd.path.parent.name.startswith("~")


def test_without_hard_links_anchors_are_still_created_exclusively(
    store: Store,
    anchor_dir: Path,
    signing_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_links(_src: object, _dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    # A file system without hard links (some network and FUSE mounts) is out of reach here.
    monkeypatch.setattr(os, "link", no_links)
    log = AuditLog(store, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
    _fill(log, 3)
    outcome = log.anchor("default")
    assert outcome.written and outcome.anchor is not None
    assert _files(anchor_dir) == [outcome.anchor.path]
    assert (
        AuditLog(store, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
        .verify("default")
        .ok
    )


# -- keys and configuration -----------------------------------------------------------------


def test_keys_and_directory_come_from_the_environment(
    store: Store, anchor_dir: Path, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    assert AuditLog.from_env(store, {}).anchors is None
    text = signing_key_text(signing_key)
    assert signing_key_text(load_signing_key(text)) == text
    pem = tmp_path / "signing.pem"
    pem.write_bytes(signing_key_pem(signing_key))
    base = {"AEVOS_AUDIT_ANCHOR_DIR": str(anchor_dir)}
    writer = AuditLog.from_env(store, {**base, "AEVOS_AUDIT_SIGNING_KEY_FILE": str(pem)})
    _fill(writer, 4)
    assert writer.anchor("default").written

    # A verifier with the public keys only (old and new, after a rotation).
    old = public_key_text(generate_signing_key().public_key())
    public = f"{old}, {public_key_text(signing_key.public_key())}"
    verifier = AuditLog.from_env(store, {**base, "AEVOS_AUDIT_PUBLIC_KEY": public})
    assert verifier.verify("default").ok
    assert verifier.anchors is not None and key_id(signing_key.public_key()) in (
        verifier.anchors.public_keys
    )
    assert len(load_public_keys(public)) == 2

    # Missing keys fail when they are needed, naming the variables.
    appender = AuditLog.from_env(store, base)
    _fill(appender, 1, first=5)  # appending needs no key
    with pytest.raises(AuditSigningKeyMissingError, match="AEVOS_AUDIT_SIGNING_KEY"):
        appender.anchor("default")
    with pytest.raises(AuditSigningKeyMissingError, match="AEVOS_AUDIT_PUBLIC_KEY"):
        appender.verify("default")
    secret = "not-a-key-but-a-secret"
    broken = AuditLog.from_env(store, {**base, "AEVOS_AUDIT_SIGNING_KEY": secret})
    with pytest.raises(AuditSigningKeyError, match="neither a PEM key") as caught:
        broken.anchor("default")
    assert secret not in caught.value.message
    both = {**base, "AEVOS_AUDIT_SIGNING_KEY": text, "AEVOS_AUDIT_SIGNING_KEY_FILE": str(pem)}
    with pytest.raises(AuditSigningKeyError, match="not both"):
        AuditLog.from_env(store, both).anchor("default")
    with pytest.raises(AuditSigningKeyError, match="cannot read"):
        AuditLog.from_env(
            store, {**base, "AEVOS_AUDIT_SIGNING_KEY_FILE": str(tmp_path / "absent.pem")}
        ).anchor("default")

    # A directory that is not there is an error, never created (an unmounted volume?).
    gone = tmp_path / "not-mounted"
    absent = AuditLog(store, anchors=AuditAnchors(gone, signing_key=signing_key))
    with pytest.raises(AuditAnchorError, match="does not exist"):
        absent.anchor("default")
    with pytest.raises(AuditAnchorError, match="does not exist"):
        absent.verify("default")
    assert not gone.exists()


# -- the schedule ---------------------------------------------------------------------------


def test_workers_anchor_every_moved_chain_on_a_schedule(
    app: Aevos, anchor_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    app.audit.anchors = AuditAnchors(anchor_dir, signing_key=signing_key)
    _fill(app.audit, 3, "acme")
    _fill(app.audit, 2, "globex")
    worker = app.worker()
    worker.escalation_interval = 0.0  # sweep on every call; the anchor interval still holds
    worker._sweep_overdue()  # what the poll loop does between claims
    assert [p.parent.name for p in _files(anchor_dir)] == ["acme", "globex"]

    _fill(app.audit, 1, "acme", first=4)
    worker._sweep_overdue()
    assert len(_files(anchor_dir)) == 2  # within the interval: not yet
    worker.anchor_interval = 0.0
    worker._sweep_overdue()
    names = [(p.parent.name, int(p.name[:20])) for p in _files(anchor_dir)]
    assert names == [("acme", 3), ("acme", 4), ("globex", 2)]
    outcomes = worker.anchor_audit()  # nothing moved: nothing signed
    assert [(o.tenant, o.written) for o in outcomes] == [("acme", False), ("globex", False)]
    assert len(_files(anchor_dir)) == 3
    assert app.audit.verify("acme").anchor == app.audit.head("acme")


def test_a_worker_that_cannot_sign_says_so_once(
    app: Aevos, anchor_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app.audit.anchors = AuditAnchors(anchor_dir)
    _fill(app.audit, 2, "acme")
    worker = app.worker()
    worker.escalation_interval = worker.anchor_interval = 0.0
    with caplog.at_level(logging.ERROR, logger="aevos.worker"):
        worker._sweep_overdue()
        worker._sweep_overdue()
    messages = [r.getMessage() for r in caplog.records if "anchors" in r.getMessage()]
    assert len(messages) == 1 and "AEVOS_AUDIT_SIGNING_KEY" in messages[0]
    assert _files(anchor_dir) == []


def test_the_anchor_interval_comes_from_the_environment(
    app: Aevos, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.worker().anchor_interval == 300.0
    monkeypatch.setenv("AEVOS_AUDIT_ANCHOR_INTERVAL", "60")
    assert app.worker().anchor_interval == 60.0
    monkeypatch.setenv("AEVOS_AUDIT_ANCHOR_INTERVAL", "soon")
    with pytest.raises(DefinitionError, match="AEVOS_AUDIT_ANCHOR_INTERVAL"):
        app.worker()


# -- the HTTP API ---------------------------------------------------------------------------


def test_the_api_verifies_against_the_anchor(
    app: Aevos, anchor_dir: Path, signing_key: Ed25519PrivateKey
) -> None:
    app.audit.anchors = AuditAnchors(anchor_dir, signing_key=signing_key)
    issued = app.identity.create_token(tenant="acme", role="auditor", name="a", created_by="t")
    auditor = {"Authorization": f"Bearer {issued.token}"}
    _fill(app.audit, 4, "acme")
    assert app.audit.anchor("acme").written
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        assert client.post("/v1/audit/verify", headers=auditor).json()["ok"] is True
        _truncate(app.store, 2, "acme")
        body = client.post("/v1/audit/verify", headers=auditor).json()
    assert body["ok"] is False
    assert [(p["seq"], p["kind"]) for p in body["problems"]] == [(3, "truncated")]


# -- CLI ------------------------------------------------------------------------------------


def _cli(url: str, *args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner().invoke(cli, ["--database-url", url, "audit", *args], env=env)


def test_cli_keygen(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "keygen"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    key = load_signing_key(lines["AEVOS_AUDIT_SIGNING_KEY"])
    assert load_public_keys(lines["AEVOS_AUDIT_PUBLIC_KEY"])[0] == key.public_key()
    assert key_id(key.public_key()) in result.output

    out = tmp_path / "audit-signing.pem"
    result = CliRunner().invoke(cli, ["audit", "keygen", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = load_signing_key(out.read_text())
    public = Path(str(out) + ".pub")
    assert load_public_keys(public.read_text())[0] == key.public_key()
    assert f"AEVOS_AUDIT_SIGNING_KEY_FILE={out}" in result.stdout
    again = CliRunner().invoke(cli, ["audit", "keygen", "--out", str(out)])
    assert again.exit_code == 2 and "file_exists" in again.output
    assert signing_key_text(load_signing_key(out.read_text())) == signing_key_text(key)


def test_cli_anchor_and_verify(
    database_url: str,
    store: Store,
    anchor_dir: Path,
    signing_key: Ed25519PrivateKey,
) -> None:
    _fill(AuditLog(store), N, "acme")
    env: dict[str, str | None] = {
        "AEVOS_AUDIT_ANCHOR_DIR": str(anchor_dir),
        "AEVOS_AUDIT_SIGNING_KEY": signing_key_text(signing_key),
        "AEVOS_AUDIT_PUBLIC_KEY": None,
        "AEVOS_AUDIT_KEY": None,
    }
    result = _cli(database_url, "anchor", env=env)
    assert result.exit_code == 0, result.output
    assert f"acme: anchored seq {N} -> {anchor_dir}" in result.output
    result = _cli(database_url, "anchor", "--tenant", "acme", env=env)
    assert result.exit_code == 0 and f"already anchored seq {N}" in result.output
    [anchor] = _files(anchor_dir)

    # A verifier with only the public key, the directory given as an option.
    public = {
        **env,
        "AEVOS_AUDIT_ANCHOR_DIR": None,
        "AEVOS_AUDIT_SIGNING_KEY": None,
        "AEVOS_AUDIT_PUBLIC_KEY": public_key_text(signing_key.public_key()),
    }
    args = ("verify", "--tenant", "acme", "--anchor-dir", str(anchor_dir))
    result = _cli(database_url, *args, env=public)
    assert result.exit_code == 0, result.output
    assert f"anchor reached: seq {N} as {anchor} records it" in result.output

    _truncate(store, N - 2, "acme")
    result = _cli(database_url, *args, env=public)
    assert result.exit_code == 1, result.output
    assert "truncated" in result.output and anchor.name in result.output
    assert f"ends at seq {N - 2}" in result.output
    # No anchor: it passes, and says what that leaves open.
    result = _cli(database_url, "verify", "--tenant", "acme", env=public)
    assert result.exit_code == 0 and "no anchor directory" in result.output
    result = _cli(database_url, "anchor", env=env)
    assert result.exit_code == 1 and "audit_anchor_refused" in result.output

    _overwrite(anchor, anchor.read_text().replace(f'"seq":{N}', f'"seq":{N - 2}'))
    result = _cli(database_url, *args, env=public)
    assert result.exit_code == 1 and "anchor_invalid" in result.output
    assert "no valid anchor of tenant 'acme'" in result.output

    result = _cli(database_url, "anchor", env={**env, "AEVOS_AUDIT_SIGNING_KEY": None})
    assert result.exit_code == 2 and "audit_signing_key_missing" in result.output
    result = _cli(database_url, "anchor", env={**env, "AEVOS_AUDIT_ANCHOR_DIR": None})
    assert result.exit_code == 2 and "audit_anchor_failed" in result.output


def test_cli_verify_file_against_the_anchor(
    sqlite_url: str, anchor_dir: Path, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    store = open_store(sqlite_url)
    try:
        log = AuditLog(store, anchors=AuditAnchors(anchor_dir, signing_key=signing_key))
        _fill(log, N, "acme")
        log.anchor("acme")
    finally:
        store.close()
    env: dict[str, str | None] = {
        "AEVOS_AUDIT_ANCHOR_DIR": str(anchor_dir),
        "AEVOS_AUDIT_PUBLIC_KEY": public_key_text(signing_key.public_key()),
        "AEVOS_AUDIT_SIGNING_KEY": None,
        "AEVOS_AUDIT_KEY": None,
    }
    export = tmp_path / "acme.jsonl"
    result = _cli(sqlite_url, "export", "--tenant", "acme", "--out", str(export), env=env)
    assert result.exit_code == 0, result.output
    result = _cli(sqlite_url, "verify-file", str(export), env=env)
    assert result.exit_code == 0 and "anchor reached" in result.output, result.output
    lines = export.read_text().splitlines()
    export.write_text("\n\n" + "\n".join(lines[:-3]) + "\n")
    result = _cli(sqlite_url, "verify-file", str(export), env=env)
    assert result.exit_code == 1 and "truncated" in result.output
    assert f"the file ends at seq {N - 3}" in result.output
    # An explicit SEQ:HASH takes the anchor's place.
    head = AuditHead(N - 3, json.loads(lines[N - 4])["hash"])
    result = _cli(sqlite_url, "verify-file", str(export), "--anchor", str(head), env=env)
    assert result.exit_code == 0, result.output
