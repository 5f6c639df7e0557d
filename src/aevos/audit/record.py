"""Audit records: events, canonical payloads, the chain hash, and verification reports."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from json.encoder import encode_basestring_ascii as _esc
from string import hexdigits
from typing import Any, Literal

from .. import codec
from ..errors import (
    AuditKeyError,
    InvalidAuditEventError,
    SerializationError,
)

GENESIS_HASH = "0" * 64
KEY_ENV = "AEVOS_AUDIT_KEY"
MIN_KEY_BYTES = 16
MAX_DATA_BYTES = 64 * 1024

ProblemKind = Literal[
    "modified", "deleted", "reordered", "inserted", "truncated", "head_mismatch", "anchor_invalid"
]

_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)
_PLAIN = json.JSONEncoder(allow_nan=False)
_LIMITS = {"action": 100, "actor": 200, "subject": 300, "run_id": 200, "tenant": 64}
# The columns the checker reads, in the order it unpacks them.
_ROW = ("seq", "at", "actor", "action", "subject", "run_id", "payload", "prev_hash", "hash")
_IPAD, _OPAD = bytes(x ^ 0x36 for x in range(256)), bytes(x ^ 0x5C for x in range(256))
_PROGRESS_EVERY = 1 << 16


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    if (value is None and optional) or (isinstance(value, str) and 0 < len(value) <= _LIMITS[name]):
        return
    limit = _LIMITS[name]
    raise InvalidAuditEventError(f"audit event {name} must be a string of 1 to {limit} characters")


def _encode_data(data: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``data`` as JSON round-trips it (tuples to lists, keys to strings), and its canonical
    encoding; re-encoding the decoded payload of an exported record then gives it back exactly.
    """
    if not isinstance(data, Mapping):
        raise InvalidAuditEventError(
            f"audit event data must be a mapping, not {type(data).__name__}"
        )
    try:
        normal = json.loads(_PLAIN.encode(dict(data)))
        text = _CANONICAL.encode(normal)
    except (TypeError, ValueError):
        try:
            codec.encode(dict(data), "audit event data")
        except SerializationError as exc:
            raise InvalidAuditEventError(exc.message) from None
        raise  # pragma: no cover - codec refuses whatever the encoder refuses
    if len(text) > MAX_DATA_BYTES:
        raise InvalidAuditEventError(
            f"audit event data is {len(text)} bytes of JSON; at most {MAX_DATA_BYTES} "
            "(record digests and ids, not documents)"
        )
    return normal, text


def _json_str(value: str | None) -> str:
    return "null" if value is None else _esc(value)


def canonical_payload(
    *,
    tenant: str,
    seq: int,
    at: float,
    actor: str,
    action: str,
    subject: str | None,
    run_id: str | None,
    data_json: str,
) -> str:
    """The exact bytes a record's hash covers (see the module docstring).

    Spelled out rather than built with ``json.dumps(sort_keys=True)``, which it equals (a test
    pins that), so that ``data_json`` is not encoded twice and :meth:`AuditLog.verify` can
    check a stored payload against its row by comparing two slices.
    """
    return (
        f'{{"action":{_esc(action)},"actor":{_esc(actor)},"at":{at!r},"data":{data_json},'
        f'"run_id":{_json_str(run_id)},"seq":{seq:d},"subject":{_json_str(subject)},'
        f'"tenant":{_esc(tenant)}}}'
    )


def _message(prev_hash: str, payload: str) -> bytes:
    # surrogateescape: a payload tampered into invalid UTF-8 is read back leniently and must
    # hash to its original bytes, so that it is reported as modified instead of crashing.
    return (prev_hash + payload).encode("utf-8", "surrogateescape")


def _hasher(key: bytes | None) -> Callable[[bytes], str]:
    if key is None:
        sha256 = hashlib.sha256
        return lambda message: sha256(message).hexdigest()
    # HMAC (RFC 2104) from two pre-keyed SHA-256 states, as the pure-Python hmac module
    # builds it: copying a state skips re-keying, which makes it ~3x faster per record than
    # hmac.digest (a test pins that both agree). Verification time is mostly this.
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    inner, outer = hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD))

    def hmac_sha256(message: bytes) -> str:
        state = inner.copy()
        state.update(message)
        result = outer.copy()
        result.update(state.digest())
        return result.hexdigest()

    return hmac_sha256


def chain_hash(prev_hash: str, payload: str, key: bytes | None = None) -> str:
    """``H(prev_hash + payload)``: HMAC-SHA256 under ``key``, or SHA-256 without one."""
    return _hasher(key)(_message(prev_hash, payload))


# -- data model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEvent:
    """Something to record. ``data`` holds JSON values only: digests, ids, versions,
    decisions; never secrets or raw personal data. Invalid events are refused here, with
    :class:`~aevos.errors.InvalidAuditEventError`."""

    action: str
    actor: str
    tenant: str = "default"
    subject: str | None = None
    run_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    _data: dict[str, Any] = field(init=False, repr=False, compare=False)
    _data_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_text("action", self.action)
        _check_text("actor", self.actor)
        _check_text("tenant", self.tenant)
        _check_text("subject", self.subject, optional=True)
        _check_text("run_id", self.run_id, optional=True)
        normal, text = _encode_data(self.data)
        object.__setattr__(self, "_data", normal)
        object.__setattr__(self, "_data_json", text)


@dataclass(frozen=True)
class AuditRecord:
    """A stored record. Its fields come from the hashed payload, not the index columns."""

    tenant: str
    seq: int
    at: float
    actor: str
    action: str
    subject: str | None
    run_id: str | None
    data: Mapping[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "data": dict(self.data)}


@dataclass(frozen=True)
class AuditHead:
    """The end of a chain, ``(seq, hash)``; kept elsewhere, it is an anchor for verify."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> AuditHead:
        """``SEQ:HASH`` as printed by ``aevos audit head``."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64 or digest.strip(hexdigits):
            raise ValueError("an anchor looks like SEQ:HASH (a seq and a 64-digit hex hash)")
        return cls(int(seq), digest.lower())

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


@dataclass(frozen=True)
class AuditProblem:
    """One finding of verify: the record's ``seq``, what happened, and how it shows."""

    seq: int
    kind: ProblemKind
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verifying one chain; ``problems`` are in seq order.

    ``last`` is the end of the chain as found (the newest record's seq and stored hash),
    to keep as an anchor. At most ``max_problems`` problems are listed, plus the first of
    every kind; ``omitted`` counts the rest. ``anchor`` is the head the chain was checked
    against, if any, and ``anchor_file`` the signed anchor file it came from.
    """

    tenant: str
    ok: bool
    checked: int
    problems: list[AuditProblem]
    last: AuditHead | None = None
    head: AuditHead | None = None
    keyed: bool = False
    omitted: int = 0
    anchor: AuditHead | None = None
    anchor_file: str | None = None


# -- verification ----------------------------------------------------------------------------


def key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The audit key: the UTF-8 bytes of ``AEVOS_AUDIT_KEY`` (16 at least), or None if unset.

    Generate one with ``python -c "import secrets; print(secrets.token_urlsafe(32))"`` and
    keep it in the secret store, never in the database it protects.
    """
    value = (os.environ if environ is None else environ).get(KEY_ENV)
    if not value:
        return None
    key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(
            f"{KEY_ENV} is {len(key)} bytes; an audit key must be at least {MIN_KEY_BYTES} "
            "(e.g. secrets.token_urlsafe(32))"
        )
    return key


# -- the log ---------------------------------------------------------------------------------
