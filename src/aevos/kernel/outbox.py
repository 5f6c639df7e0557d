"""Messages a run publishes: checked at the call, written to the outbox with the position.

``ctx.publish`` (a position of its own) and ``sctx.publish`` (inside a step, written with
the step's result) both end here, so a message is in the outbox exactly when the work that
published it committed; the relay (:mod:`aevos.connectors.relay`) sends it afterwards.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import codec
from ..errors import DefinitionError
from ..storage.outbox import NewMessage

#: NATS's default max_payload; a bigger message could never be delivered.
MAX_PAYLOAD = 1024 * 1024
# NATS subject tokens: no whitespace, no wildcards (a publish names one subject), no empty
# token; webhooks are routed by the same subjects.
_SUBJECT = re.compile(r"^[A-Za-z0-9_\-$]+(\.[A-Za-z0-9_\-$]+)*$")


@dataclass(frozen=True)
class Published:
    """A message checked and encoded, not yet written."""

    subject: str
    payload_json: str


def checked(subject: str, payload: Any) -> Published:
    """``payload`` encoded for ``subject``, or :class:`DefinitionError` saying what is wrong
    (raised in the workflow, before anything is recorded)."""
    if not isinstance(subject, str) or not subject or len(subject) > 300:
        raise DefinitionError(
            f"publish subject must be a non-empty string of at most 300 characters, got {subject!r:.80}"
        )
    if not _SUBJECT.match(subject):
        raise DefinitionError(
            f"publish subject {subject!r} is not a NATS subject: dot-separated tokens of "
            "letters, digits, '-', '_' or '$', without wildcards or spaces"
        )
    text = codec.encode(payload, f"payload published on {subject!r}")
    if len(text.encode()) > MAX_PAYLOAD:
        raise DefinitionError(
            f"payload published on {subject!r} is {len(text.encode())} bytes encoded; "
            f"the limit is {MAX_PAYLOAD}"
        )
    return Published(subject, text)


def messages(
    base_id: str, tenant: str, run_id: str, published: Sequence[Published], *, numbered: bool
) -> list[NewMessage]:
    """The outbox rows of ``published``: ids ``base_id`` (one message of a position) or
    ``base_id/<n>`` (a step's n-th), stable across replays: the downstream de-duplication
    key."""
    now = time.time()
    return [
        NewMessage(
            message_id=f"{base_id}/{n}" if numbered else base_id,
            tenant=tenant,
            subject=p.subject,
            payload_json=p.payload_json,
            run_id=run_id,
            created_at=now,
        )
        for n, p in enumerate(published)
    ]
