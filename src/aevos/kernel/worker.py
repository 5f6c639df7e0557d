"""Workers pull runs from queues and execute them; any worker recovers any dead worker's runs.

There is no coordinator: a run's lease lives in its database row, the heartbeat of the
process holding it keeps it fresh, and a run whose lease lapsed is claimable by every
worker on every host exactly like a new one.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from ..audit import AnchorOutcome, anchor_all
from ..errors import (
    AevosError,
    AuditSigningKeyError,
    DefinitionError,
    StorageUnavailableError,
)
from ..records.queue import INLINE_QUEUE, Queue
from ..records.run import RunInfo
from ..storage.outage import Outage, Tracebacks, seconds

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..storage import Store
    from .lease import Leases


class Services(Protocol):
    @property
    def audit(self) -> AuditLog: ...


class Companion(Protocol):
    """Something a worker runs beside its claim loop (an event consumer): started with the
    worker, stopped before it stops claiming."""

    def start(self) -> object: ...

    def stop(self, timeout: float = ...) -> None: ...


class Host(Protocol):
    """What a worker claims for and executes through (the kernel's runtime)."""

    owner: str
    lease_seconds: float
    poll_interval: float
    leases: Leases
    work_available: threading.Event

    @property
    def store(self) -> Store: ...

    @property
    def services(self) -> Services: ...

    @property
    def queues(self) -> Mapping[str, Queue]: ...

    @property
    def workflows(self) -> Mapping[str, object]: ...

    @property
    def claimable_versions(self) -> frozenset[str] | None: ...

    def queue_named(self, name: str) -> Queue: ...

    def execute_claimed(self, info: RunInfo) -> object: ...


log = logging.getLogger("aevos.worker")

#: How long a run interrupted by storage waits before its first attempt to resume, and the
#: most it waits between attempts: short, so a restart costs the outage and little more.
RESUME_FIRST = 0.05
RESUME_MAX = 0.25
#: The longest wait before trying again a run that the database took back but interrupted
#: again (a disk still full answers reads and small updates): each try re-runs the step
#: whose commit failed, so a long outage must not repeat it four times a second.
RESUME_AGAIN_MAX = 2.0
#: The claim loop's longest back-off while the database is unavailable.
POLL_BACKOFF_MAX = 2.0

ANCHOR_INTERVAL_ENV = "AEVOS_AUDIT_ANCHOR_INTERVAL"
DEFAULT_ANCHOR_INTERVAL = 300.0


def _anchor_interval() -> float:
    text = os.environ.get(ANCHOR_INTERVAL_ENV)
    if not text:
        return DEFAULT_ANCHOR_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise DefinitionError(f"{ANCHOR_INTERVAL_ENV} must be a number of seconds > 0")
    return seconds


def _recovery_queue() -> Queue:
    # Runs started inline by a process that died live on the internal queue; every worker
    # recovers them. It has no limits, so validation (which rejects '_' names) is bypassed.
    queue = object.__new__(Queue)
    for field, value in (
        ("name", INLINE_QUEUE),
        ("concurrency", None),
        ("worker_concurrency", None),
        ("rate_limit", None),
        ("rate_period", 1.0),
    ):
        object.__setattr__(queue, field, value)
    return queue


class Worker:
    """Executes runs of a runtime's workflows from the named queues, ``concurrency`` at a
    time (``app.worker()`` builds one).

    Between claims it does the ``chores`` it is given, each on its own every
    ``escalation_interval`` seconds: the app gives it the sweeps of the services above the
    kernel (human tasks past their SLA, approvals past their expiry, counted refusals).
    """

    def __init__(
        self,
        runtime: Host,
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 8,
        chores: Sequence[Callable[[], object]] = (),
        companions: Sequence[Companion] = (),
    ) -> None:
        if concurrency < 1:
            raise DefinitionError(f"worker concurrency must be >= 1, got {concurrency}")
        self.runtime = runtime
        names = list(queues) if queues else list(runtime.queues)
        self.queues = [runtime.queue_named(name) for name in names] + [_recovery_queue()]
        self.chores = tuple(chores)
        self.companions = tuple(companions)
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="aevos-run")
        self._active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._turn = 0
        self._next_recovery_scan = 0.0
        self._next_escalation_sweep = 0.0
        # How often this worker looks for human tasks past their SLA and approvals past
        # their expiry.
        self.escalation_interval = 5.0
        # How often this worker signs the audit chains' heads into the anchor directory,
        # when there is one (AEVOS_AUDIT_ANCHOR_DIR): the longest stretch of newest records
        # whose deletion would go unnoticed. Heads that have not moved are not signed again.
        self.anchor_interval = _anchor_interval()
        self._anchored_at = -math.inf
        self._anchoring = True
        self.executed = 0
        self._outage = Outage(log, "worker")
        self._tracebacks = Tracebacks(log)

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def start(self) -> Worker:
        """Start polling in a background thread (embedded worker)."""
        for queue in self.queues:
            self.runtime.store.upsert_queue(queue)
        # Before the first claim: a run this worker holds is recovered at once if it dies.
        self.runtime.leases.liveness.ensure()
        self._thread = threading.Thread(target=self._poll_loop, name="aevos-poll", daemon=True)
        self._thread.start()
        for companion in self.companions:
            companion.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, and wait up to ``timeout`` seconds for the runs in hand to finish.

        Runs still executing after that keep their lease until this process exits; then
        another worker takes them over and replays them from their last committed step.
        """
        # Events in hand are handled (and acknowledged) while the database is still ours.
        for companion in self.companions:
            companion.stop(timeout)
        self._stopping.set()
        self.runtime.work_available.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        self._pool.shutdown(wait=False, cancel_futures=False)

    def run(self) -> None:
        """Run in the foreground until SIGINT or SIGTERM, then stop gracefully."""

        def _handle(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping worker", signum)
            self._stopping.set()
            self.runtime.work_available.set()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)
        self.start()
        while not self._stopping.wait(0.5):
            pass
        self.stop()

    def _poll_loop(self) -> None:
        runtime = self.runtime
        backoff = runtime.poll_interval
        workflows = sorted(runtime.workflows)
        while not self._stopping.is_set():
            try:
                self._sweep_overdue()
                self._recover_dead()
                claimed = self._claim_round(workflows)
                backoff = runtime.poll_interval
                self._outage.ended()
            except StorageUnavailableError as exc:
                self._outage.failed(exc.message, f"claiming again in {seconds(backoff)}")
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, POLL_BACKOFF_MAX)
                continue
            except Exception as exc:
                # Whatever went wrong, a worker that stops polling while its process lives on
                # is worse than one that logs, backs off and tries again.
                self._tracebacks.error(exc, "claiming failed; retrying in %s", seconds(backoff))
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not claimed:
                runtime.work_available.wait(runtime.poll_interval)
                runtime.work_available.clear()

    def _recover_dead(self) -> None:
        try:
            if self.runtime.leases.liveness.sweep():
                # Runs of a dead owner are claimable now; the internal queue's too.
                self._next_recovery_scan = 0.0
        except StorageUnavailableError:
            raise  # the claim loop's outage, reported once
        except AevosError as exc:
            # Claiming goes on: those runs are recovered when their leases lapse.
            self._tracebacks.error(exc, "looking for dead owners failed: [%s]", exc.code)

    def _sweep_overdue(self) -> None:
        # Every worker sweeps; each escalation or expiry is a conditional update, so sweeps
        # on many hosts escalate a task, or expire an approval, once.
        now = time.monotonic()
        if now < self._next_escalation_sweep:
            return
        self._next_escalation_sweep = now + self.escalation_interval
        # Each chore on its own: one that fails (its database write, say) is logged and
        # tried again next sweep without holding up the others.
        for chore in (*self.chores, self._anchor_when_due):
            try:
                chore()
            except StorageUnavailableError as exc:
                # The outage the claim loop reports too: one line for it, not one per chore.
                self._outage.failed(exc.message, "chores retried next sweep")
            except AevosError as exc:
                name = getattr(chore, "__name__", repr(chore))
                log.warning("%s failed (%s); retrying next sweep", name, exc.code)

    def _anchor_when_due(self) -> None:
        now = time.monotonic()
        if not self._anchoring or now - self._anchored_at < self.anchor_interval:
            return
        self._anchored_at = now
        self.anchor_audit()

    def anchor_audit(self) -> list[AnchorOutcome]:
        """Sign the head of every audit chain that moved since its newest anchor (what the
        schedule does every ``anchor_interval`` seconds); nothing without an anchor
        directory. A tenant whose chain is refused is logged and does not stop the others.
        """
        audit = self.runtime.services.audit
        if audit.anchors is None:
            return []
        try:
            outcomes = anchor_all(audit)
        except AuditSigningKeyError as exc:
            # Configured to anchor but unable to sign: say so once, not every interval.
            log.error("audit anchors will not be written by this worker: %s", exc.message)
            self._anchoring = False
            return []
        for outcome in outcomes:
            if outcome.error is not None:
                log.error(
                    "audit chain of tenant %r not anchored [%s]: %s",
                    outcome.tenant,
                    outcome.error.code,
                    outcome.error.message,
                )
            elif outcome.written and outcome.anchor is not None:
                log.info(
                    "audit chain of tenant %r anchored at seq %d",
                    outcome.tenant,
                    outcome.anchor.seq,
                )
        return outcomes

    def _claim_round(self, workflows: list[str]) -> int:
        claimed = 0
        count = len(self.queues)
        self._turn = (self._turn + 1) % count
        # Rotate the starting queue so one busy queue cannot starve the others.
        now = time.monotonic()
        for offset in range(count):
            free = self.concurrency - self.active
            if free <= 0:
                break
            queue = self.queues[(self._turn + offset) % count]
            if queue.name == INLINE_QUEUE:
                # Inline runs become claimable only when their owner's lease lapses (or an
                # operator resumes one), so scanning for them every poll would be wasted work.
                if now < self._next_recovery_scan:
                    continue
                self._next_recovery_scan = now + max(0.05, self.runtime.lease_seconds / 4)
            # Never re-claim a run this process is executing, even if its lease lapsed
            # (a late heartbeat on a loaded host): the fence cannot tell our threads apart.
            runtime = self.runtime
            held = runtime.leases.held()
            for info in runtime.store.claim(
                runtime.owner,
                queue,
                workflows,
                free,
                runtime.lease_seconds,
                exclude=held,
                versions=runtime.claimable_versions,
            ):
                with self._lock:
                    self._active += 1
                claimed += 1
                self._pool.submit(self._execute, info)
        return claimed

    def _execute_through_outages(self, info: RunInfo) -> None:
        """Execute a claimed run; when storage fails under it, take it up again as soon as
        the database answers (not a lease later), replaying it from its last committed
        step. Gives up only if the run is no longer this process's, or the worker stops
        (its lease then lapses and any worker recovers it)."""
        interrupted: float | None = None
        current: RunInfo | None = info
        pause = RESUME_FIRST
        while current is not None:
            try:
                self.runtime.execute_claimed(current)
            except StorageUnavailableError as exc:
                if interrupted is None:
                    interrupted = time.monotonic()
                    log.warning(
                        "run %s interrupted: %s; will resume when storage returns",
                        info.run_id,
                        exc.message,
                    )
                else:
                    pause = min(pause * 2, RESUME_AGAIN_MAX)
                    log.debug(
                        "run %s interrupted again: %s; trying again in %s",
                        info.run_id,
                        exc.message,
                        seconds(pause),
                    )
                current = self._reacquire(info.run_id, pause)
                continue
            if interrupted is not None:
                log.info(
                    "run %s resumed and executed after %.1f s without storage",
                    info.run_id,
                    time.monotonic() - interrupted,
                )
            return

    def _reacquire(self, run_id: str, delay: float) -> RunInfo | None:
        """The run, taken again once the database answers (first tried after ``delay``);
        None if it is no longer ours to execute (taken over, cancelled, finished) or the
        worker is stopping."""
        runtime = self.runtime
        while not self._stopping.wait(delay):
            try:
                info = runtime.store.acquire(run_id, runtime.owner, runtime.lease_seconds)
            except StorageUnavailableError:
                delay = min(delay * 2, max(RESUME_MAX, delay))
                continue
            if info is None:
                log.info("run %s is no longer this worker's to resume", run_id)
            return info
        log.info("run %s left to be recovered once its lease lapses: stopping", run_id)
        return None

    def _execute(self, info: RunInfo) -> None:
        try:
            self._execute_through_outages(info)
        except AevosError as exc:
            # The run keeps its lease and is retried after it lapses; say why, without data.
            log.error(
                "run %s interrupted: [%s] %s; another attempt when its lease lapses",
                info.run_id,
                exc.code,
                exc.message,
            )
        except BaseException as exc:
            self._tracebacks.error(exc, "run %s crashed the executor", info.run_id)
        finally:
            with self._lock:
                self._active -= 1
                self.executed += 1
            self.runtime.work_available.set()
