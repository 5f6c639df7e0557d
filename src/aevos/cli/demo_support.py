"""``aevos demo``: support triage on banking77, evolving (the main job).

The support-triage example (``examples/support_triage``: its workflow, policies and ticket
table) runs in this process on an embedded SQLite database in ``--dir``, fresh for each run:

1. version 1 of ``support-intent`` is trained on 5 tickets per intent of banking77's
   ``train.csv`` (TF-IDF + logistic regression: the embedding extra is not installed by
   default) and made the champion; those tickets are imported as labels;
2. evolution is configured (:func:`configure_evolution`, the one place the promotion path
   is set): every ``--every`` labels a worker retrains and certifies the candidate on the
   audited tickets; a certified candidate is handed to a rollout (replay of kept cases,
   shadow, canary shares) that the rollout controller, a chore of the workers, promotes or
   rolls back on the step analysis;
3. the other tickets, in an order fixed by ``--seed``, are runs of ``support.triage`` on
   in-process workers, at most :data:`WINDOW` in flight; simulated reviewers (threads
   holding reviewer tokens) work the inbox through ``app.tasks`` and answer the true intent;
4. without ``--headless`` the HTTP API and the console serve the same app, with an admin
   sign-in token printed, until Ctrl-C; a progress bar shows the live automation rate.

The report (:class:`DemoReport`) counts from the database: reviews answered, retrainings,
promotions and rollbacks by rollouts (``rollout.promoted`` / ``rollout.rolled_back`` audit
records), each rollout's path, and the automation rate of the first and last tenth of the
stream.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..app import Aevos
from ..audit import AuditRecord
from ..errors import RunTimeoutError
from ..identity import Role
from ..pii import Vault
from ..records.retraining import RetrainingStatus
from ..records.task import TaskStatus
from ..rollouts import Rollout
from ..rollouts.operator import QUEUE as OPERATOR_QUEUE
from ..rollouts.operator import TASK_QUEUE as OPERATOR_TASKS
from ..rollouts.replay import QUEUE as REPLAY_QUEUE
from .common import CliError, err
from .demo_evolution import (
    ROLLOUT_STEPS,
    TENANT,
    TICK,
    DemoReplays,
    rollout_plan,
    rollout_settings,
    rollout_state,
    rollout_summaries,
)

#: Where the demo keeps its database and ticket table unless ``--dir`` says otherwise.
DEFAULT_DIR = Path("aevos-demo")
DEFAULT_TICKETS = 3000
DEFAULT_EVERY = 400
INTENTS = 77
SEED_PER_INTENT = 5
#: TF-IDF + logistic regression: trains in seconds on a core, and needs no extra.
RECIPE = "tfidf-logreg"
RECIPE_PARAMS: dict[str, Any] = {"char_ngrams": [2, 4]}
#: Automated routing at precision >= 0.9 with probability >= 0.9: what a few hundred
#: audited tickets of 77 intents can certify (the example's default, 0.97, takes thousands).
CERTIFY: dict[str, Any] = {"target": 0.9, "delta": 0.1}
#: Tickets in flight at most: the stream waits for the oldest, so a retraining's champion
#: routes the tickets that arrive after it, as at a help desk.
WINDOW = 24
REVIEWERS = 2
#: The live automation rate is over the last this many tickets.
LIVE = 100
_FILES = ("aevos.db", "tickets.db")


@dataclass(frozen=True)
class DemoSettings:
    """The command line's choices."""

    directory: Path = DEFAULT_DIR
    tickets: int = DEFAULT_TICKETS
    seed: int = 0
    workers: int = 8
    every: int = DEFAULT_EVERY
    steps: tuple[int, ...] = ROLLOUT_STEPS
    intents: int = INTENTS
    headless: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    timeout: float = 900.0


@dataclass
class DemoReport:
    """What the run came to; :meth:`to_json` is what ``--json`` writes."""

    tickets: int
    routed: dict[str, int]
    reviews: int
    qa_samples: int
    retrainings: int
    certified: int
    promotions: int
    rollbacks: int
    first: float
    last: float
    champion: int
    threshold: float | None
    seconds: float
    runs: list[dict[str, Any]] = field(default_factory=list)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "promotions": self.promotions,
            "rollbacks": self.rollbacks,
            "retrainings": self.retrainings,
            "reviews": self.reviews,
            "certified": self.certified,
            "automation_rate": {"first": self.first, "last": self.last},
            "rollouts": self.rollouts,
            "tickets": self.tickets,
            "routed": dict(self.routed),
            "qa_samples": self.qa_samples,
            "champion": {"version": self.champion, "threshold": self.threshold},
            "retraining_runs": self.runs,
            "seconds": round(self.seconds, 1),
            "settings": self.settings,
        }


def configure_evolution(
    example: ModuleType, app: Aevos, every: int, steps: tuple[int, ...] = ROLLOUT_STEPS
) -> None:
    """How the model evolves, and the one place the demo's promotion path is configured.

    A worker retrains every ``every`` labels and certifies the candidate; a certified
    candidate is not promoted at once but handed to a rollout (retraining's ``rollout``
    option): a replay of the newest kept cases, then shadow and the canary shares of
    :data:`ROLLOUT_STEPS`, each judged by the step analysis on :data:`ROLLOUT_CRITERIA`
    within :data:`STEP_MINUTES`; the controller (a chore of the workers) advances it,
    rolls it back on a failed step, and after the last one asks the
    :data:`ROLLOUT_POLICY` gate to make it the champion. Building ``app.rollouts`` and
    ``app.replays`` here, before any worker starts, registers their workflows and lets the
    workers run the controller."""
    app.rollouts.replays = DemoReplays(app.replays)
    example.configure_retraining(
        app,
        recipe=RECIPE,
        params=RECIPE_PARAMS,
        every_labels=every,
        auto_promote=True,
        rollout=rollout_plan(steps),
        tenant=TENANT,
        **CERTIFY,
    )


# -- the directory, the data ------------------------------------------------------------------


def prepare_directory(directory: Path) -> Path:
    """``directory``, created if needed and emptied of an earlier demo's databases; a
    CliError naming the cause when it cannot be written."""
    path = directory.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Permission bits do not stop every user (root): only a write shows it can be.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".aevos-demo-probe-"):
            pass
        for name in _FILES:
            for suffix in ("", "-wal", "-shm", "-journal"):
                (path / f"{name}{suffix}").unlink(missing_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CliError(
            "bad_directory", f"cannot use {directory} for the demo's databases: {reason}"
        ) from None
    return path.resolve()


def load_stream(
    example: ModuleType, settings: DemoSettings
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The seed (5 labelled tickets per intent) and the stream (``--tickets`` of the other
    training rows, in the order ``--seed`` fixes)."""
    rows: list[tuple[str, str]] = example.load_banking("train")
    if settings.intents < INTENTS:
        kept = set(sorted({intent for _, intent in rows})[: settings.intents])
        rows = [row for row in rows if row[1] in kept]
    seed_idx: list[int] = example.per_intent(rows, SEED_PER_INTENT, seed=settings.seed)
    chosen = set(seed_idx)
    rest = [i for i in range(len(rows)) if i not in chosen]
    if settings.tickets > len(rest):
        raise CliError(
            "bad_option",
            f"--tickets {settings.tickets}: banking77 has {len(rest)} tickets of "
            f"{settings.intents} intent(s) besides the {len(seed_idx)} that train version 1",
        )
    random.Random(settings.seed).shuffle(rest)
    return [rows[i] for i in seed_idx], [rows[i] for i in rest[: settings.tickets]]


# -- the simulated reviewers ------------------------------------------------------------------


class Reviewers:
    """People working the inbox: threads each holding a reviewer token of their own, claiming
    and deciding tasks through ``app.tasks`` as that identity, with the ticket's true intent."""

    def __init__(self, app: Aevos, truth: dict[str, str], count: int = REVIEWERS) -> None:
        self.app = app
        self.truth = truth
        self.answered = 0
        self.qa = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._principals = [
            app.identity.create_token(
                tenant=TENANT,
                role=Role.REVIEWER,
                name=f"simulated reviewer {i + 1}",
                created_by="system:aevos-demo",
            ).principal
            for i in range(count)
        ]
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True, name=f"reviewer-{i}")
            for i in range(count)
        ]
        self.errors: list[BaseException] = []

    def start(self) -> Reviewers:
        for thread in self._threads:
            thread.start()
        return self

    def _work(self, i: int) -> None:
        principal = self._principals[i]
        tasks = self.app.tasks
        while not self._stop.is_set():
            try:
                task = tasks.claim_next(
                    actor=principal.actor, roles=[principal.role.value], tenant=TENANT
                )
                if task is None:
                    self._stop.wait(0.05)
                    continue
                intent = self.truth[str(task.case["ticket_id"])]
                tasks.submit(task.task_id, {"intent": intent}, actor=principal.actor)
            except Exception as exc:  # shown in the report and the exit status, never lost
                self.errors.append(exc)
                self._stop.wait(0.5)
                continue
            with self._lock:
                self.answered += 1
                self.qa += task.purpose == "qa"

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


# -- the run ----------------------------------------------------------------------------------


class SupportDemo:
    """One run of the demo: the app, its workers, reviewers and (optionally) the server."""

    def __init__(self, example: ModuleType, settings: DemoSettings) -> None:
        self.example = example
        self.settings = settings
        self.directory = prepare_directory(settings.directory)
        self.seed_rows, self.stream = load_stream(example, settings)
        self.database_url = f"sqlite:///{self.directory / 'aevos.db'}"
        self.tickets_url = f"sqlite:///{self.directory / 'tickets.db'}"
        self.routed: list[str | None] = [None] * len(self.stream)
        self.started = time.time()
        self.app: Aevos = example.make_app(
            self.database_url,
            tickets_url=self.tickets_url,
            # Kept cases are stored encrypted only: without a key nothing is learned.
            vault_key=Vault.generate_key(),
            park_after=2.0,
            poll_interval=0.05,
        )
        truth = {self._ticket_id(i): intent for i, (_, intent) in enumerate(self.stream)}
        self.reviewers = Reviewers(self.app, truth)

    @staticmethod
    def _ticket_id(i: int) -> str:
        return f"T{i:05d}"

    def setup(self) -> float:
        """Version 1 trained and the champion, the seed imported, evolution configured;
        returns the moment after which promotions count (version 1's is not one)."""
        example, app = self.example, self.app
        example.train_first_version(app, self.seed_rows, recipe=RECIPE, params=RECIPE_PARAMS)
        example.import_labels(app, self.seed_rows)
        configure_evolution(example, app, self.settings.every, self.settings.steps)
        return time.time()

    def token(self) -> str:
        """A sign-in token for the console and the API: an admin of the demo's tenant,
        valid for a day."""
        issued = self.app.identity.create_token(
            tenant=TENANT,
            role=Role.ADMIN,
            name="aevos demo",
            created_by="system:aevos-demo",
            expires_in=86400.0,
        )
        return issued.token

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Workers (tickets; one retraining at a time: it takes a core; replays and operator
        tasks of rollouts) and reviewers. Every worker runs the rollout controller between
        claims; the evolution worker every :data:`TICK` seconds, so a step with its evidence
        in moves on within about a second."""
        app, example = self.app, self.example
        tickets = app.worker(queues=[example.QUEUE], concurrency=self.settings.workers).start()
        retraining = app.worker(queues=["retraining"], concurrency=1).start()
        evolution = app.worker(queues=[REPLAY_QUEUE, OPERATOR_QUEUE], concurrency=2)
        evolution.escalation_interval = TICK
        evolution.start()
        self.reviewers.start()
        try:
            yield
        finally:
            self.reviewers.stop()
            tickets.stop(timeout=10)
            evolution.stop(timeout=30)
            retraining.stop(timeout=30)

    def stream_tickets(self) -> None:
        """Every ticket of the stream through ``support.triage``, at most WINDOW in flight,
        with a progress bar of the live automation rate."""
        deadline = time.monotonic() + self.settings.timeout
        in_flight: deque[tuple[int, Any]] = deque()
        recent: deque[bool] = deque(maxlen=LIVE)
        columns = (
            TextColumn("[bold]tickets"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("automated {task.fields[rate]}"),
            TextColumn("reviews {task.fields[reviews]}"),
            TextColumn("champion v{task.fields[champion]}"),
            TextColumn("retrainings {task.fields[retrainings]}"),
            TextColumn("rollout {task.fields[rollout]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err) as progress:
            bar = progress.add_task(
                "stream",
                total=len(self.stream),
                rate="-",
                reviews=0,
                champion=1,
                retrainings=0,
                rollout="-",
            )

            def finish_oldest() -> None:
                i, handle = in_flight.popleft()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RunTimeoutError(
                        f"ticket {self._ticket_id(i)} still unfinished after --timeout "
                        f"{self.settings.timeout:g} s"
                    )
                output = handle.result(timeout=remaining)
                self.routed[i] = str(output["routed_by"])
                recent.append(output["routed_by"] == "model")
                done = i + 1
                if done % 20 == 0 or done == len(self.stream):
                    progress.update(
                        bar,
                        rate=f"{sum(recent) / len(recent):.0%}",
                        reviews=self.reviewers.answered,
                        champion=self.champion()[0],
                        retrainings=len(self.app.retraining.runs(self.example.MODEL, limit=200)),
                        rollout=rollout_state(self.latest_rollout()),
                    )
                progress.advance(bar)

            for i, (text, _) in enumerate(self.stream):
                while len(in_flight) >= WINDOW:
                    finish_oldest()
                customer = f"customer{i}@example.com"
                [handle] = self.example.start_tickets(
                    self.app, [self.example.ticket(self._ticket_id(i), text, customer)]
                )
                in_flight.append((i, handle))
            while in_flight:
                finish_oldest()

    def settle(self) -> None:
        """The end of the stream: QA samples answered, the retraining in progress finished.
        A rollout in progress is not waited for: without tickets its step gets no evidence
        (the report shows where it stands; at its deadline it pauses for an operator)."""
        deadline = time.monotonic() + max(60.0, self.settings.timeout / 2)
        idle_since: float | None = None
        while time.monotonic() < deadline:
            open_tasks = [
                task
                for task in self.app.tasks.list(
                    status=[TaskStatus.OPEN, TaskStatus.CLAIMED], limit=50
                )
                if task.queue != OPERATOR_TASKS
            ]
            runs = self.app.retraining.runs(self.example.MODEL, limit=1)
            busy = bool(open_tasks) or (
                bool(runs) and runs[0].status in (RetrainingStatus.QUEUED, RetrainingStatus.RUNNING)
            )
            if busy:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 1.0:
                return
            time.sleep(0.2)

    def latest_rollout(self) -> Rollout | None:
        found = self.app.rollouts.list(model=self.example.MODEL, active=None, limit=1)
        return found[0] if found else None

    def champion(self) -> tuple[int, float | None]:
        model = self.example.MODEL
        version = self.app.models.aliases(model)["champion"]
        record = self.app.certifications.latest(model, version)
        return version, None if record is None else record.threshold

    def report(self, since: float) -> DemoReport:
        model = self.example.MODEL
        # Promotions and rollbacks are the rollouts' (version 1's promotion came before
        # ``since``); an operator's rollback of the champion alias counts too.
        moves = [
            record
            for action in ("rollout.promoted", "rollout.rolled_back", "model.rolled_back")
            for record in self._audit(action, since)
            if record.data.get("model") == model
        ]
        runs = list(reversed(self.app.retraining.runs(model, limit=200)))
        routed = [r for r in self.routed if r is not None]
        tenth = max(1, len(routed) // 10)
        version, threshold = self.champion()
        counts: dict[str, int] = {}
        for r in routed:
            counts[r] = counts.get(r, 0) + 1
        return DemoReport(
            tickets=len(routed),
            routed=counts,
            reviews=self.reviewers.answered,
            qa_samples=self.reviewers.qa,
            retrainings=len(runs),
            certified=sum(bool(r.certified) for r in runs),
            promotions=sum(r.action == "rollout.promoted" for r in moves),
            rollbacks=sum(r.action != "rollout.promoted" for r in moves),
            first=_share(routed[:tenth]),
            last=_share(routed[-tenth:]),
            champion=version,
            threshold=threshold,
            seconds=time.time() - self.started,
            runs=[
                {
                    "run_id": r.run_id,
                    "label_count": r.label_count,
                    "status": r.status.value,
                    "candidate": r.candidate,
                    "certified": r.certified,
                    "threshold": r.threshold,
                    "promotion": r.promotion,
                }
                for r in runs
            ],
            rollouts=rollout_summaries(self.app, self.example.MODEL, since),
            settings={
                "seed": self.settings.seed,
                "tickets": len(self.stream),
                "intents": self.settings.intents,
                "seed_labels": len(self.seed_rows),
                "every": self.settings.every,
                "recipe": RECIPE,
                "params": RECIPE_PARAMS,
                "certify": CERTIFY,
                "rollout": rollout_settings(self.settings.steps),
                "workers": self.settings.workers,
                "headless": self.settings.headless,
                "directory": str(self.directory),
            },
        )

    def _audit(self, action: str, since: float) -> list[AuditRecord]:
        records: list[AuditRecord] = []
        after = 0
        while True:
            page = self.app.audit.query(TENANT, action=action, since=since, after_seq=after)
            records += page
            if len(page) < 1000:
                return records
            after = page[-1].seq

    def close(self) -> None:
        self.app.close()


def _share(routed: list[str]) -> float:
    return sum(r == "model" for r in routed) / len(routed) if routed else 0.0


# -- the server -------------------------------------------------------------------------------


class Server:
    """The HTTP API and console of the demo's app, served from a thread on a bound socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    def start(self, app: Aevos) -> None:
        import uvicorn

        from ..server import create_app

        config = uvicorn.Config(create_app(app), log_level="warning")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self.sock]}, daemon=True, name="demo-server"
        )
        self._thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise CliError("server_failed", "the demo's HTTP server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.sock.close()


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM stop the demo as a KeyboardInterrupt in the main thread,
    also when the shell started it with SIGINT ignored (a background job)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_forever() -> None:
    """Until Ctrl-C or SIGTERM (KeyboardInterrupt)."""
    stop = threading.Event()
    while not stop.wait(3600):
        pass
