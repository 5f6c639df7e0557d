"""Verifying a chain: in the database (streamed) or from an exported JSON Lines file."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _esc
from typing import Any, cast

from .anchor import SignedAnchor, anchor_parts
from .record import (
    _CANONICAL,
    _PROGRESS_EVERY,
    _ROW,
    GENESIS_HASH,
    AuditHead,
    AuditProblem,
    ProblemKind,
    VerifyReport,
    _hasher,
    _message,
)

_RANK = {"head_mismatch": 0, "modified": 1, "reordered": 2}  # the rest: 3


def _rank(problem: AuditProblem) -> int:
    return -_RANK.get(problem.kind, 3)


def _records(first: int, last: int) -> str:
    return f"record {first} is" if first == last else f"records {first}..{last} are"


def _short(digest: object) -> str:
    return str(digest)[:12]


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
        anchor_label: str = "the anchor",
        max_problems: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.tenant = tenant
        self.anchor_label = anchor_label
        # Records before ``start`` taken on trust (a partial export, or verifying on from an
        # anchor): with none read, the chain's end is wherever its head says.
        self.trusting = start_prev is None
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
                why = f"the hash of seq {p} ({_short(stored)}) is not the one {self.anchor_label} records ({_short(self.anchor.hash)}): the chain up to it was rewritten"
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
        if head_known and self.trusting and not self.checked:
            # Nothing read from the trusted start on: the chain ends below it, where its head
            # says (the records there were not read, so not contradicted either).
            top = min(top, head.seq if head is not None else 0)
            end_hash = head.hash if head is not None else GENESIS_HASH
            last = _Prev("clean", end_hash, end_hash, 0)
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
            mark, where = self.anchor, "database" if head_known else "file"
            why = f"{self.anchor_label} records seq {mark.seq} hash {_short(mark.hash)}; the {where} ends at seq {top}: {_records(top + 1, mark.seq)} missing from its end"
            self.add(top + 1, "truncated", why)
        problems = sorted(self.problems.values(), key=lambda problem: problem.seq)
        end = AuditHead(top, last.stored) if top >= self.start else None
        ok = not problems and not self.omitted
        return VerifyReport(
            self.tenant,
            ok,
            self.checked,
            problems,
            end,
            head,
            self.keyed,
            self.omitted,
            anchor=self.anchor,
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
    anchor: AuditHead | SignedAnchor | None = None,
    max_problems: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify an exported chain offline, the way :meth:`AuditLog.verify` checks the database.

    The file must start at seq 1 unless ``partial`` (an export ``--after`` some seq: its
    first record's link is then taken on trust). A file has no head row, so records cut
    from its end go unnoticed unless ``anchor`` (a signed anchor, or ``aevos audit head``
    taken from the live database) says where the chain reached. Blank lines are ignored.
    """
    stream = (line for line in (text.rstrip("\r\n") for text in lines) if line.strip())
    first = next(stream, None)
    record = _parse(first or "") or {}
    found, seq = record.get("tenant"), record.get("seq")
    tenant = tenant or (found if isinstance(found, str) else "default")
    start = seq if partial and type(seq) is int and seq > 0 else 1
    prev = None if partial else GENESIS_HASH
    mark, label, anchor_file = anchor_parts(anchor)
    checker = _Checker(
        tenant,
        key,
        start=start,
        start_prev=prev,
        anchor=mark,
        anchor_label=label,
        progress=progress,
    )
    checker.max_problems = max_problems
    if first is not None:
        rows = itertools.chain([first], stream)
        checker.feed(_file_row(start + index, line) for index, line in enumerate(rows))
    report = checker.finish()
    return report if anchor_file is None else dataclasses.replace(report, anchor_file=anchor_file)
