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
  re-hashed record is detected and named. Deleting records is detected too, except deleting
  the newest ones together with rolling the head row back, since every earlier
  ``(seq, hash)`` is a valid end of chain. Against that, keep an anchor outside the database
  (``aevos audit head`` from time to time, or the last line of each export) and pass it to
  ``verify(anchor=...)``: a chain that no longer reaches it, or reaches it with another hash,
  is reported.

Records hold digests, ids, versions and decisions: never secrets or raw personal data.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from json.encoder import encode_basestring_ascii as _esc
from string import hexdigits
from typing import IO, Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import codec
from .errors import (
    AevosError,
    AuditChainError,
    AuditKeyError,
    InvalidAuditEventError,
    SerializationError,
    StorageError,
)
from .storage import Store
from .storage.fastpath import Compiled
from .storage.schema import audit, audit_heads

GENESIS_HASH = "0" * 64
KEY_ENV = "AEVOS_AUDIT_KEY"
MIN_KEY_BYTES = 16
MAX_DATA_BYTES = 64 * 1024

ProblemKind = Literal["modified", "deleted", "reordered", "inserted", "truncated", "head_mismatch"]

_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)
_PLAIN = json.JSONEncoder(allow_nan=False)
_LIMITS = {"action": 100, "actor": 200, "subject": 300, "run_id": 200, "tenant": 64}
# The columns the checker reads, in the order it unpacks them.
_ROW = ("seq", "at", "actor", "action", "subject", "run_id", "payload", "prev_hash", "hash")
_BATCH = 10_000
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
    every kind; ``omitted`` counts the rest.
    """

    tenant: str
    ok: bool
    checked: int
    problems: list[AuditProblem]
    last: AuditHead | None = None
    head: AuditHead | None = None
    keyed: bool = False
    omitted: int = 0


# -- verification ----------------------------------------------------------------------------

_RANK = {"head_mismatch": 0, "modified": 1, "reordered": 2}  # the rest: 3


def _rank(problem: AuditProblem) -> int:
    return -_RANK.get(problem.kind, 3)


def _records(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first}..{last} are"


def _short(digest: object) -> str:
    return str(digest)[:12]


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@dataclass
class _Stretch:
    """Consecutive rows that hold genuine, linked records, all displaced by ``offset``."""

    start: int
    offset: int
    last_hash: str
    length: int = 1


@dataclass
class _Prev:
    status: str  # clean | modified | misplaced | unknown
    stored: str
    computed: str
    offset: int | None


class _Checker:
    """Walks a chain's rows in seq order and names what does not fit.

    Rows are ``(seq, at, actor, action, subject, run_id, payload, prev_hash, hash)``. The
    common case, a genuine record in its place, costs one hash and two string comparisons;
    anything else takes the slow path, which parses the payload to tell a modified record
    from a moved, deleted or inserted one.
    """

    def __init__(
        self,
        tenant: str,
        key: bytes | None,
        *,
        start: int = 1,
        start_prev: str | None = GENESIS_HASH,
        limit: int | None = None,
        anchor: AuditHead | None = None,
        max_problems: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.tenant = tenant
        self.hash, self.plain, self.keyed = _hasher(key), _hasher(None), key is not None
        self.tenant_suffix = f',"tenant":{_esc(tenant)}}}'
        self.start = self.expected = start
        self.limit = limit  # the head's seq: rows beyond it are not "missing" records
        # The stored hash of the previous row while it is a genuine record in its place;
        # None sends the next row down the slow path, which reads ``self.prev``.
        self.last_hash: str | None = start_prev
        self.prev = _Prev("clean" if start_prev else "unknown", start_prev or "", "", 0)
        self.stretch: _Stretch | None = None
        self.stretches: list[_Stretch] = []
        self.max_e = start - 1
        self.max_prev = _Prev("clean", start_prev or "", start_prev or "", 0)
        self.anchor, self.anchor_seen, self.progress = anchor, False, progress
        self.max_problems, self.omitted, self.checked = max_problems, 0, 0
        self.problems: dict[int, AuditProblem] = {}
        self.kinds: set[str] = set()

    def add(self, seq: int, kind: ProblemKind, detail: str) -> None:
        existing = self.problems.get(seq)
        if existing is not None and existing.detail != detail:
            # One problem per record: the most telling kind leads, both details stay.
            first, then = sorted((existing, AuditProblem(seq, kind, detail)), key=_rank)
            self.problems[seq] = AuditProblem(seq, first.kind, f"{first.detail}; {then.detail}")
        if existing is not None:
            return
        if len(self.problems) >= self.max_problems and kind in self.kinds:
            self.omitted += 1
            return
        self.problems[seq] = AuditProblem(seq, kind, detail)
        self.kinds.add(kind)

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        hasher = self.hash
        esc = _esc
        suffix = self.tenant_suffix
        expected = self.expected
        last_hash = self.last_hash
        stop = self.anchor.seq if self.anchor is not None else -1
        checked = self.checked
        progress = self.progress
        tick = (checked // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY
        for row in rows:
            seq, at, actor, action, subject, run_id, payload, prev_hash, stored = row
            try:
                fast = (
                    seq == expected
                    and prev_hash == last_hash
                    and seq != stop
                    and hasher((prev_hash + payload).encode("utf-8", "surrogateescape")) == stored
                    and payload.startswith(
                        f'{{"action":{esc(action)},"actor":{esc(actor)},"at":{at!r},"data":'
                    )
                    and payload.endswith(
                        f',"run_id":{"null" if run_id is None else esc(run_id)},"seq":{seq:d},'
                        f'"subject":{"null" if subject is None else esc(subject)}{suffix}'
                    )
                )
            except (TypeError, ValueError, AttributeError):
                fast = False  # a column of an unexpected type: the slow path says which
            if fast:
                expected += 1
                last_hash = stored
            else:
                self.expected, self.last_hash = expected, last_hash
                self._slow(row)
                expected, last_hash = self.expected, self.last_hash
            checked += 1
            if checked == tick:
                tick += _PROGRESS_EVERY
                if progress is not None:
                    progress(checked)
        self.expected, self.last_hash, self.checked = expected, last_hash, checked

    def _fold_max(self, e: int, prev: _Prev) -> None:
        if e >= self.max_e:
            self.max_e, self.max_prev = e, prev

    def _slow(self, row: Sequence[Any]) -> None:
        p, at, actor, action, subject, run_id, payload, prev_hash, stored = row
        payload, prev_hash, stored = str(payload), str(prev_hash), str(stored)
        if self.last_hash is not None:
            prev = _Prev("clean", self.last_hash, self.last_hash, 0)
            self._fold_max(self.expected - 1, prev)
        else:
            prev = self.prev
        if p < self.expected:
            self.add(p, "inserted", f"a record at seq {p} lies before the chain's start")
            return
        link_known = prev.status != "unknown"
        if p > self.expected:
            last_missing = p - 1 if self.limit is None else min(p - 1, self.limit)
            if last_missing >= self.expected:
                gone = f"{_records(self.expected, last_missing)} missing"
                self.add(self.expected, "deleted", gone)
            link_known = False
        self.expected = p + 1

        message = _message(prev_hash, payload)
        computed = self.hash(message)
        record = _parse(payload)
        e = record.get("seq") if record is not None else None
        if not isinstance(e, int) or isinstance(e, bool):
            e = None
        foreign = record is not None and record.get("tenant") != self.tenant
        status, offset = "clean", cast(int | None, 0)
        if computed != stored:
            status = "modified"
            why = self._why(p, prev, link_known, payload, message, stored, record, e)
            self.add(p, "modified", why)
        elif e is None:
            status = "modified"
            why = f"the payload of seq {p} is not an audit record, yet its hash matches (re-hashed without the key?)"
            self.add(p, "modified", why)
        elif foreign:
            status, offset = "misplaced", None
            self.add(p, "inserted", f"seq {p} holds record {e} of another tenant's chain")
        elif e != p:
            status, offset = "misplaced", e - p
            stretch = self.stretch
            if (
                stretch is not None
                and (prev.status, prev.offset, prev.stored) == ("misplaced", offset, prev_hash)
                and link_known
            ):
                stretch.length += 1
                stretch.last_hash = stored
            else:
                self.stretch = _Stretch(p, offset, stored)
                self.stretches.append(self.stretch)
        else:
            assert record is not None
            columns = {"at": at, "actor": actor, "action": action, "subject": subject}
            columns["run_id"] = run_id
            differ = [name for name, value in columns.items() if record.get(name) != value]
            if differ:
                why = f"column {', '.join(differ)} of seq {p} differs from its hashed record"
                self.add(p, "modified", why)
            if link_known and prev.status != "misplaced" and not self._linked(prev, prev_hash):
                if p - 1 < self.start:
                    why = f"record {p} does not start from the genesis hash (re-hashed without the key?)"
                    self.add(p, "modified", why)
                else:
                    why = f"record {p} does not commit to the record stored at seq {p - 1}: that record was replaced (hashes recomputed without the key?)"
                    self.add(p - 1, "modified", why)
        if offset is None or status != "misplaced":
            self.stretch = None
        if self.anchor is not None and p == self.anchor.seq:
            self.anchor_seen = True
            if stored != self.anchor.hash:
                why = f"the hash of seq {p} ({_short(stored)}) is not the anchored one ({_short(self.anchor.hash)}): the chain up to it was rewritten"
                self.add(p, "modified", why)
        current = _Prev(status, stored, computed, offset)
        trusted = status != "modified" and not foreign
        self._fold_max(e if trusted and e is not None else p, current)
        if status == "clean":
            self.last_hash = stored
        else:
            self.last_hash = None
            self.prev = current

    @staticmethod
    def _linked(prev: _Prev, prev_hash: str) -> bool:
        # After a modified record, either hash may be the genuine one: its hash column was
        # altered (computed is genuine) or its content was (stored is).
        return prev_hash == prev.stored or (
            prev.status == "modified" and prev_hash == prev.computed
        )

    def _why(
        self,
        p: int,
        prev: _Prev,
        link_known: bool,
        payload: str,
        message: bytes,
        stored: str,
        record: dict[str, Any] | None,
        e: int | None,
    ) -> str:
        if (
            link_known
            and prev.status in ("clean", "modified")
            and self.hash(_message(prev.stored, payload)) == stored
        ):
            return f"the prev_hash of seq {p} was altered"
        parts = [f"the content or hash of seq {p} was altered: its hash does not match"]
        if self.keyed and self.plain(message) == stored:
            parts.append("it is a plain SHA-256, written or re-hashed without the audit key")
        if record is None:
            parts.append("the payload is not valid JSON")
        elif e is not None and e != p:
            parts.append(f"its payload claims seq {e}")
        return "; ".join(parts)

    def finish(self, *, head: AuditHead | None = None, head_known: bool = False) -> VerifyReport:
        if self.last_hash is not None:
            self._fold_max(self.expected - 1, _Prev("clean", self.last_hash, self.last_hash, 0))
        for s in self.stretches:
            # One displaced record is a move or a swap; a run of them, or a displaced record
            # that ends the chain (the head points at it), is the rest of the chain renumbered.
            at_end = s is self.stretch
            ends_chain = at_end and (
                s.offset > 0 or (head is not None and head.hash == s.last_hash)
            )
            if s.length == 1 and not ends_chain:
                why = f"seq {s.start} holds record {s.start + s.offset}: records were moved or swapped"
                self.add(s.start, "reordered", why)
            elif s.offset > 0:
                why = f"{_records(s.start, s.start + s.offset - 1)} missing"
                why += (
                    f" and the {s.length} after renumbered to close the gap" if head_known else ""
                )
                self.add(s.start, "deleted", why)
            else:
                first = s.start + s.offset
                why = f"{_records(first, s.start - 1)} inserted before the genuine ones"
                why += f", renumbered by {-s.offset} to make room" if head_known else ""
                self.add(first, "inserted", why)
        top, last = self.max_e, self.max_prev
        if head_known and head is None and self.checked:
            why = f"the chain reaches seq {top} but its head row is missing"
            self.add(top, "head_mismatch", why)
        elif head_known and head is not None and head.seq > top:
            why = f"the head says the chain ends at seq {head.seq}, but it ends at seq {top}: {_records(top + 1, head.seq)} deleted from the tail"
            self.add(top + 1, "truncated", why)
        elif head_known and head is not None and head.seq < top:
            why = f"{_records(head.seq + 1, top)} beyond the head (seq {head.seq}): written without going through the audit log"
            self.add(head.seq + 1, "inserted", why)
        elif head_known and head is not None and not self._linked(last, head.hash):
            why = f"the head's hash ({_short(head.hash)}) is not that of record {head.seq}"
            self.add(head.seq, "head_mismatch", why)
        if self.anchor is not None and not self.anchor_seen and self.anchor.seq > top:
            why = f"the anchor is at seq {self.anchor.seq} but the chain ends at seq {top}: records were deleted from the tail"
            self.add(top + 1, "truncated", why)
        problems = sorted(self.problems.values(), key=lambda problem: problem.seq)
        end = AuditHead(top, last.stored) if top >= self.start else None
        ok = not problems and not self.omitted
        return VerifyReport(
            self.tenant, ok, self.checked, problems, end, head, self.keyed, self.omitted
        )


def _parse(payload: str) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- exported files --------------------------------------------------------------------------

# An exported line is the payload with the hashes spliced in front:
# {"hash":"<64>","prev_hash":"<64>",<payload without its opening brace>
_HASH_AT = len('{"hash":"')
_PREV_AT = _HASH_AT + 64 + len('","prev_hash":"')
_REST_AT = _PREV_AT + 64 + len('",')


def _export_line(payload: str, prev_hash: str, digest: str, seq: int) -> str:
    if (
        payload.startswith('{"')
        and payload.endswith("}")
        and (payload + prev_hash + digest).isascii()
    ):
        return f'{{"hash":"{digest}","prev_hash":"{prev_hash}",{payload[1:]}\n'
    # Tampered past JSON or UTF-8: export it as found (escaped), for verify-file to flag.
    return (
        json.dumps({"hash": digest, "prev_hash": prev_hash, "seq": seq, "payload": payload}) + "\n"
    )


def _file_row(position: int, line: str) -> tuple[Any, ...]:
    """A line of an export as a row for the checker (payload exactly as written)."""
    value = _parse(line)
    if value is None:
        return (position, None, None, None, None, None, line, "", "")
    digest = value.pop("hash", "")
    prev_hash = value.pop("prev_hash", "")
    if set(value) == {"seq", "payload"} and isinstance(value["payload"], str):
        payload = value["payload"]  # exported as found: it was not a JSON object
    elif (
        line.startswith('{"hash":"')
        and line[_HASH_AT + 64 : _PREV_AT] == '","prev_hash":"'
        and line[_PREV_AT + 64 : _REST_AT] == '",'
    ):
        payload = "{" + line[_REST_AT:]
    else:
        # Re-serialised by another tool: the canonical form is what was hashed.
        try:
            payload = _CANONICAL.encode(value)
        except (TypeError, ValueError):
            payload = line
    columns = (value.get(name) for name in _ROW[1:6])  # at, actor, action, subject, run_id
    return (position, *columns, payload, prev_hash, digest)


def verify_jsonl(
    lines: Iterable[str],
    key: bytes | None = None,
    *,
    tenant: str | None = None,
    partial: bool = False,
    anchor: AuditHead | None = None,
    max_problems: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify an exported chain offline, the way :meth:`AuditLog.verify` checks the database.

    The file must start at seq 1 unless ``partial`` (an export ``--after`` some seq: its
    first record's link is then taken on trust). A file has no head row, so records cut
    from its end go unnoticed unless ``anchor`` (e.g. ``aevos audit head`` taken from the
    live database) says where the chain reached. Blank lines are ignored.
    """
    stream = (line for line in (text.rstrip("\r\n") for text in lines) if line.strip())
    first = next(stream, None)
    record = _parse(first or "") or {}
    found, seq = record.get("tenant"), record.get("seq")
    tenant = tenant or (found if isinstance(found, str) else "default")
    start = seq if partial and type(seq) is int and seq > 0 else 1
    prev = None if partial else GENESIS_HASH
    checker = _Checker(tenant, key, start=start, start_prev=prev, anchor=anchor, progress=progress)
    checker.max_problems = max_problems
    if first is not None:
        rows = itertools.chain([first], stream)
        checker.feed(_file_row(start + index, line) for index, line in enumerate(rows))
    return checker.finish()


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


class AuditLog:
    """Appends to, queries, verifies and exports the per-tenant audit chains of one store.

    Give ``key`` (or set ``AEVOS_AUDIT_KEY`` and use :meth:`from_env`) to chain with
    HMAC-SHA256: kept outside the database, it makes records unforgeable even by its
    administrator. Every process appending to a chain must use the same key.
    """

    def __init__(self, store: Store, key: bytes | None = None) -> None:
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise AuditKeyError(f"the audit key must be at least {MIN_KEY_BYTES} bytes")
        self.store = store
        self._key = key
        self._hash = _hasher(key)
        self._sqlite = store.backend == "sqlite"
        head_of_tenant = audit_heads.c.tenant == sa.bindparam("tenant")
        self._head = sa.select(audit_heads.c.seq, audit_heads.c.hash).where(head_of_tenant)
        self._head_for_update = self._head.add_columns(audit_heads.c.updated_at).with_for_update()
        self._new_head = (
            store.dialect.insert(audit_heads)
            .on_conflict_do_nothing(index_elements=["tenant"])
            .returning(audit_heads.c.tenant)  # psycopg's rowcount says nothing here
        )
        self._any_record = (
            sa.select(audit.c.seq).where(audit.c.tenant == sa.bindparam("tenant")).limit(1)
        )
        self._set_head = (
            sa.update(audit_heads)
            .where(audit_heads.c.tenant == sa.bindparam("w_tenant"))
            .values({name: sa.bindparam(f"w_{name}") for name in ("seq", "hash", "updated_at")})
        )
        self._insert = Compiled(audit.insert(), store.engine)
        self._rows = (
            sa.select(*(audit.c[name] for name in _ROW))
            .where(audit.c.tenant == sa.bindparam("tenant"), audit.c.seq > sa.bindparam("after"))
            .order_by(audit.c.seq)
        )

    @classmethod
    def from_env(cls, store: Store, environ: Mapping[str, str] | None = None) -> AuditLog:
        """A log keyed by ``AEVOS_AUDIT_KEY`` when it is set (see :func:`key_from_env`)."""
        return cls(store, key_from_env(environ))

    @property
    def keyed(self) -> bool:
        return self._key is not None

    # -- appending ---------------------------------------------------------------------------

    def append(self, event: AuditEvent, *, conn: Connection | None = None) -> AuditRecord:
        """Record ``event`` at the end of its tenant's chain.

        With ``conn``, inside the caller's transaction: the record commits or rolls back with
        the caller's state change. The tenant's head row stays locked until then, so keep
        that transaction short (and READ COMMITTED, PostgreSQL's default).
        """
        return self.append_many([event], conn=conn)[0]

    def append_many(
        self, events: Sequence[AuditEvent], *, conn: Connection | None = None
    ) -> list[AuditRecord]:
        """Record several events in one transaction, in order; returns their records."""
        if not events:
            return []
        if conn is not None:
            with self.store._guard():
                return self._append(conn, events)
        with self.store._tx() as tx:
            return self._append(tx, events)

    def _lock_head(self, conn: Connection, tenant: str) -> tuple[int, str, float]:
        # PostgreSQL: the head row's lock serialises appenders of this chain across
        # processes. SQLite: the store's BEGIN IMMEDIATE already holds the write lock.
        row = conn.execute(self._head_for_update, {"tenant": tenant}).first()
        if row is None:
            # A new chain. A concurrent first appender's insert makes ours wait and then do
            # nothing; if ours creates the head, there must be no records yet (or the head
            # row was deleted: appending would fork the chain).
            head = {"tenant": tenant, "seq": 0, "hash": GENESIS_HASH, "updated_at": 0.0}
            created = conn.execute(self._new_head, head).first() is not None
            if created and conn.execute(self._any_record, {"tenant": tenant}).first():
                raise AuditChainError(
                    f"the audit chain of tenant {tenant!r} has records but no head row; "
                    "run `aevos audit verify` before appending to it"
                )
            row = conn.execute(self._head_for_update, {"tenant": tenant}).one()
        return int(row.seq), str(row.hash), float(row.updated_at)

    def _append(self, conn: Connection, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        by_tenant: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_tenant.setdefault(event.tenant, []).append(index)
        records: list[AuditRecord | None] = [None] * len(events)
        rows: list[dict[str, Any]] = []
        now = time.time()
        # Heads are locked in one order, so two batches spanning tenants cannot deadlock.
        for tenant in sorted(by_tenant):
            seq, prev_hash, last_at = self._lock_head(conn, tenant)
            # Never before the previous record: seq order and time order agree.
            at = max(now, last_at)
            for index in by_tenant[tenant]:
                event = events[index]
                seq += 1
                payload = canonical_payload(
                    tenant=tenant,
                    seq=seq,
                    at=at,
                    actor=event.actor,
                    action=event.action,
                    subject=event.subject,
                    run_id=event.run_id,
                    data_json=event._data_json,
                )
                digest = self._hash(_message(prev_hash, payload))
                row: dict[str, Any] = {"tenant": tenant, "seq": seq, "at": at, "actor": event.actor}
                row.update(action=event.action, subject=event.subject, run_id=event.run_id)
                row.update(prev_hash=prev_hash, hash=digest)
                records[index] = AuditRecord(**row, data=event._data)
                rows.append({**row, "payload": payload})
                prev_hash = digest
            conn.execute(
                self._set_head,
                {"w_tenant": tenant, "w_seq": seq, "w_hash": prev_hash, "w_updated_at": at},
            )
        # Compiled once: SQLAlchemy's per-row parameter processing cost more than the rest
        # of an append together in large batches.
        conn.exec_driver_sql(self._insert.sql, [self._insert.params(row) for row in rows])
        return [record for record in records if record is not None]

    # -- reading -----------------------------------------------------------------------------

    def head(self, tenant: str) -> AuditHead | None:
        """The chain's end as its head row records it; None for a tenant with no records."""
        with self.store._tx() as conn:
            row = conn.execute(self._head, {"tenant": tenant}).first()
        return None if row is None else AuditHead(int(row.seq), str(row.hash))

    def query(
        self,
        tenant: str,
        *,
        run_id: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        """Records of ``tenant`` in seq order; ``since`` inclusive, ``until`` exclusive.

        Page with ``after_seq`` (the last seq of the previous page). Filters use the index
        columns; the records returned are read from the hashed payloads.
        """
        if limit < 1:
            raise InvalidAuditEventError("limit must be at least 1")
        stmt = sa.select(audit).where(audit.c.tenant == tenant, audit.c.seq > after_seq)
        for column, value in ((audit.c.run_id, run_id), (audit.c.action, action)):
            stmt = stmt if value is None else stmt.where(column == value)
        if actor is not None:
            stmt = stmt.where(audit.c.actor == actor)
        if since is not None:
            stmt = stmt.where(audit.c.at >= _timestamp(since))
        if until is not None:
            stmt = stmt.where(audit.c.at < _timestamp(until))
        with self.store._tx() as conn:
            rows = conn.execute(stmt.order_by(audit.c.seq).limit(limit)).all()
        return [_record(row) for row in rows]

    @contextmanager
    def _snapshot(
        self, tenant: str, after_seq: int
    ) -> Iterator[tuple[AuditHead | None, Iterable[Sequence[Any]]]]:
        """The head and a stream of the chain's rows, both from one read snapshot.

        One snapshot, so that appends committed meanwhile are neither half-seen nor taken
        for records beyond the head. Rows stream (SQLite steps its cursor; PostgreSQL uses a
        server-side cursor), so memory stays flat however long the chain.
        """
        params = {"tenant": tenant, "after": after_seq}
        if self._sqlite:
            with self._sqlite_snapshot(tenant, params) as result:
                yield result
            return
        with self.store._guard(), self.store.engine.connect() as conn:
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            with conn.begin():
                row = conn.execute(self._head, params).first()
                head = None if row is None else AuditHead(int(row.seq), str(row.hash))
                stream = conn.execution_options(yield_per=_BATCH).execute(self._rows, params)
                yield head, stream

    @contextmanager
    def _sqlite_snapshot(
        self, tenant: str, params: dict[str, Any]
    ) -> Iterator[tuple[AuditHead | None, Iterable[Sequence[Any]]]]:
        # A raw connection: the engine's transactions are BEGIN IMMEDIATE, which would hold
        # the write lock (and stall every writer) for the whole scan. A deferred BEGIN in WAL
        # mode is a read snapshot that blocks nobody.
        engine = self.store.engine
        head_sql, rows_sql = Compiled(self._head, engine), Compiled(self._rows, engine)
        with self.store._guard():
            raw = engine.raw_connection()
        driver: Any = raw.driver_connection
        cursor = raw.cursor()
        try:
            cursor.execute("BEGIN")
            row = cursor.execute(head_sql.sql, head_sql.params(params)).fetchone()
            head = None if row is None else AuditHead(int(row[0]), str(row[1]))
            yield head, self._sqlite_rows(cursor, driver, rows_sql, params)
        except driver.Error as exc:
            raise self._storage_error(exc) from None
        finally:
            driver.text_factory = str
            with suppress(driver.Error):  # broken: the pool's reset on return drops it
                if driver.in_transaction:
                    cursor.execute("ROLLBACK")
            cursor.close()
            raw.close()

    @staticmethod
    def _sqlite_rows(
        cursor: Any, driver: Any, rows: Compiled, params: dict[str, Any]
    ) -> Iterator[Sequence[Any]]:
        after = params["after"]
        while True:
            try:
                cursor.execute(rows.sql, rows.params({**params, "after": after}))
                while batch := cursor.fetchmany(_BATCH):
                    yield from batch
                    after = batch[-1][0]
                return
            except driver.OperationalError as exc:
                if driver.text_factory is _lenient_text or "decode" not in str(exc):
                    raise
                # A byte changed into invalid UTF-8 must be reported, not end the scan: read
                # on from the last whole batch, decoding leniently (slower, so not from the
                # start).
                driver.text_factory = _lenient_text

    def _storage_error(self, exc: Exception) -> AevosError:
        classified = self.store.dialect.classify(exc, self.store.safe_url)
        if classified is not None:
            return classified
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        return StorageError(
            f"database error on {self.store.safe_url}: "
            f"{reason[0] if reason else type(exc).__name__}"
        )

    def verify(
        self,
        tenant: str,
        *,
        anchor: AuditHead | None = None,
        max_problems: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Check the whole chain of ``tenant`` and name every record that does not fit.

        Streams the chain in seq order and checks, for each record: its seq follows the
        previous one, its payload names this seq and tenant and agrees with the index
        columns, its prev_hash is the previous record's hash, and its hash; then that the
        head row points at the last record, and that the chain still reaches ``anchor``
        with the anchored hash. ``progress`` is called with the count checked so far, every
        65,536 records.
        """
        # From the very bottom: a row forged below seq 1 must be seen too.
        with self._snapshot(tenant, -(2**63)) as (head, rows):
            limit = head.seq if head is not None else None
            checker = _Checker(tenant, self._key, limit=limit, anchor=anchor, progress=progress)
            checker.max_problems = max_problems
            checker.feed(rows)
        return checker.finish(head=head, head_known=True)

    def export_jsonl(self, tenant: str, out: IO[str], *, after_seq: int = 0) -> int:
        """Write the chain after ``after_seq`` to ``out``, one JSON object per line.

        Each line is a record's hashed payload with ``hash`` and ``prev_hash`` added, so
        :func:`verify_jsonl` (``aevos audit verify-file``) can check it without the database.
        Returns the number of records written.
        """
        count = 0
        with self._snapshot(tenant, after_seq) as (_head, rows):
            for seq, *_, payload, prev_hash, digest in rows:
                out.write(_export_line(str(payload), str(prev_hash), str(digest), int(seq)))
                count += 1
        return count


def _timestamp(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidAuditEventError("since/until must be timezone-aware datetimes")
        return value.timestamp()
    return float(value)


def _record(row: Any) -> AuditRecord:
    # The hashed payload is the record; the columns are only its index.
    parsed = _parse(row.payload) or {}
    data = parsed.get("data")
    return AuditRecord(
        tenant=row.tenant,
        seq=int(row.seq),
        at=float(parsed.get("at", row.at)),
        actor=str(parsed.get("actor", row.actor)),
        action=str(parsed.get("action", row.action)),
        subject=parsed.get("subject", row.subject),
        run_id=parsed.get("run_id", row.run_id),
        data=data if isinstance(data, dict) else {},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
