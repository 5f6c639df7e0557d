"""Run statuses and the transitions between them.

The table below is the single source of truth: storage updates are conditioned on the
current status, and a property test drives random operation sequences through it.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    ENQUEUED = "ENQUEUED"  # durable, waiting for a worker
    RUNNING = "RUNNING"  # held by one executor under a lease
    WAITING = "WAITING"  # parked: durable sleep, signal or child run; no thread held
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"  # never ran: its input or workflow name was refused

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.REJECTED}
)

# Operator actions (resume, fork) create or re-enqueue runs; they are listed here too so the
# whole life cycle is in one place.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.ENQUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.WAITING,
            RunStatus.ENQUEUED,  # released by a worker shutting down
            RunStatus.RUNNING,  # lease taken over by another executor
        }
    ),
    RunStatus.WAITING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset({RunStatus.ENQUEUED}),  # resume
    RunStatus.CANCELLED: frozenset({RunStatus.ENQUEUED}),  # resume
    RunStatus.REJECTED: frozenset(),
}


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]
