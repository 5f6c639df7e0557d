"""The tamper-evident audit log: append-only, one hash chain per tenant.

Every record's canonical payload is the compact JSON, keys sorted, ASCII-only, of
``{action, actor, at, data, run_id, seq, subject, tenant}``; it is stored verbatim in the
``payload`` column and its hash is ``H(prev_hash + payload)``, where ``prev_hash`` is the
previous record's hash (64 zeros for seq 1) and ``H`` is HMAC-SHA256 under the audit key when
one is configured, plain SHA-256 otherwise (hex digests). The indexed columns (``at``,
``actor``, ...) are copies for querying; :meth:`AuditLog.verify` checks them against the
payload. ``aevos_audit_heads`` holds each chain's last seq and hash: it serialises appenders
and is how a deleted tail is noticed.

What can be forged, by whom:

* Without a key, the chain detects accidental corruption and naive tampering (an edited,
  deleted, swapped or inserted row; a truncated tail while the head row is intact). Anyone
  with write access to the database can still recompute every hash from some record on and
  rewrite the head, and such a rewrite verifies.
* With a key (``AEVOS_AUDIT_KEY``) held outside the database, nobody without the key, a
  database administrator included, can produce a record that verifies: any edit, forged or
  re-hashed record is detected and named. Deleting records in the middle is detected too.
* Neither detects deleting the newest records together with rolling the head row back:
  every earlier ``(seq, hash)`` is a valid end of chain. Signed anchors (:mod:`.anchor`)
  published outside the database, to a directory on write-once storage, close that gap down
  to the records appended since the newest anchor: ``verify`` checks the chain against the
  newest one and names a truncation below it, or a rewrite at or before it.

Records hold digests, ids, versions and decisions: never secrets or raw personal data.
"""

from __future__ import annotations

from .anchor import (
    ANCHOR_DIR_ENV,
    PUBLIC_KEY_ENV,
    SIGNING_KEY_ENV,
    AnchorOutcome,
    AnchorScan,
    AuditAnchors,
    InvalidAnchor,
    SignedAnchor,
    anchor_all,
    anchor_chain,
)
from .log import AuditLog
from .record import (
    GENESIS_HASH,
    KEY_ENV,
    AuditEvent,
    AuditHead,
    AuditProblem,
    AuditRecord,
    ProblemKind,
    VerifyReport,
    canonical_payload,
    chain_hash,
    key_from_env,
)
from .verify import verify_jsonl

__all__ = [
    "ANCHOR_DIR_ENV",
    "GENESIS_HASH",
    "KEY_ENV",
    "PUBLIC_KEY_ENV",
    "SIGNING_KEY_ENV",
    "AnchorOutcome",
    "AnchorScan",
    "AuditAnchors",
    "AuditEvent",
    "AuditHead",
    "AuditLog",
    "AuditProblem",
    "AuditRecord",
    "InvalidAnchor",
    "ProblemKind",
    "SignedAnchor",
    "VerifyReport",
    "anchor_all",
    "anchor_chain",
    "canonical_payload",
    "chain_hash",
    "key_from_env",
    "verify_jsonl",
]
