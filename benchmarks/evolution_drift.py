"""Changing safely on banking77: how soon the system notices new intents, how far a worse
candidate gets, and how soon a version that knows the new intents takes over.

    python benchmarks/evolution_drift.py                          # 6,000 tickets, SQLite
    python benchmarks/evolution_drift.py --quick --json q.json    # a slice (the test suite)
    python benchmarks/evolution_drift.py --postgres-url postgresql://postgres@127.0.0.1/db

The support-triage example (``examples/support_triage``) runs on the real kernel with
in-process workers (tickets; retraining, one at a time; replays) whose chores run the
monitors' sweep and the rollout controller. This process is the help desk and the
reviewers. Nothing here promotes, advances or rolls back a version: it streams tickets,
answers reviews and, once, enters a candidate for rollout as an operator would.

1. ``--new-intents`` intents (10 of 77, chosen by ``--seed``) are unknown at first: version 1
   is trained on 5 tickets of each *other* intent and is the champion; those tickets are
   imported as labels. Reviewers know all 77 intents.
2. The stream (``--tickets`` training rows in an order fixed by ``--seed``): the first half
   holds none of the new intents, the second half draws from all 77 (the **shift** is its
   first ticket). At most ``--in-flight`` tickets run at once, at most ``--rate`` per second.
3. Warm-up: until the first certified champion, retraining every ``--every`` labels
   promotes through the policy gate, as ``aevos demo`` does. Then the operator's setting
   changes (as ``evolution_banking77`` re-configures its interval): no label trigger any
   more; a retraining is started by a drift alert only, and its certified candidate is
   handed to a rollout (replay, shadow, canary steps ``--steps``, promotion) judged by the
   rollout analysis with ``--criteria``. Monitors (``app.monitors``) watch the model over
   windows of ``--monitor-window`` calls.
4. At ``--worse-at`` of the stream (in the first half), a candidate trained on the labels so
   far with their labels **shuffled** is registered and entered for rollout
   (``app.rollouts.start``, no replay: the live analysis is what must stop it).

Measured afterwards from the database (audit log, monitor results, rollouts) and test.csv:
``cases_to_alert`` (tickets from the shift to the first ``monitor.alerted``; target <=
1,000), ``worse_max_step`` (0 shadow, 1 first canary step...; target <= 1) and
``worse_rolled_back`` (by the controller, the champion untouched), ``cases_to_recovery``
(tickets from the shift to the promotion of a version that knows the new intents: at least
``KNOWS`` accuracy on test.csv's tickets of the new intents), the automation rate per window
of ``--report-window`` tickets (the dip after the shift and the recovery), and the
monitors' label-free accuracy estimate (CBPE) against the true accuracy of the same calls
per monitor window before the shift (``estimate_error_max``; target <= 0.03).
``--quick``: 10 intents (2 new), 800 tickets, ``tfidf-logreg``; the test suite runs it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import collections
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.support_triage import (  # noqa: E402
    MODEL,
    POLICIES,
    QUEUE,
    configure_retraining,
    import_labels,
    load_banking,
    make_app,
    per_intent,
    register_trained,
    start_tickets,
    ticket,
    train_first_version,
)

from aevos import Aevos, TaskStatus  # noqa: E402
from aevos.errors import RolloutConflictError  # noqa: E402
from aevos.pii import Vault  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evolution_drift_figures import (  # noqa: E402
    KNOWS,
    OPERATOR,
    TENANT,
    Ticket,
    champion,
    final_line,
    measure,
    summary,
)

REVIEWER = "reviewer:simulated"
SEED_PER_INTENT = 5
RECIPE = "tfidf-logreg"
RECIPE_PARAMS: dict[str, Any] = {"char_ngrams": [2, 4]}
#: What a few hundred audited tickets can certify (aevos demo's setting).
CERTIFY: dict[str, Any] = {"target": 0.9, "delta": 0.1}
QUICK_CERTIFY: dict[str, Any] = {"target": 0.9, "delta": 0.2, "min_count": 30}


@dataclass
class Options:
    seed: int = 0
    quick: bool = False
    postgres_url: str | None = None
    json_path: Path | None = None
    tickets: int = 6000
    intents: int = 77
    new_intents: int = 10
    worse_at: float = 0.3
    in_flight: int = 24
    rate: float = 10.0
    concurrency: int = 8
    reviewers: int = 2
    every: int = 300
    report_window: int = 250
    monitor_window: int = 500
    reference_cases: int = 500
    monitor_interval: float = 5.0
    # The defaults but one: the stream lasts minutes, so an alert whose retraining's candidate
    # was rolled back retrains again after a minute (by default, five).
    monitor_thresholds: dict[str, float] = field(default_factory=lambda: {"retrain_after": 60.0})
    steps: tuple[int, ...] = (0, 5, 25, 50, 100)
    step_minutes: float = 3.0
    criteria: dict[str, Any] = field(
        default_factory=lambda: {"min_calls": 40, "min_labels": 10, "min_agreement": 0.6}
    )
    certify: dict[str, Any] = field(default_factory=lambda: dict(CERTIFY))
    replay: bool = True  # the retraining's rollout replays the candidate first
    timeout: float = 3600.0


# -- what the benchmark needs of the system -------------------------------------------------


def missing_parts() -> list[str]:
    """The parts of issue 12 this benchmark drives that this checkout does not have."""
    missing = []
    for name, what in (
        ("monitors", "app.monitors (aevos.monitoring: drift alerts that start retrainings)"),
        ("replays", "app.replays (aevos.rollouts.replay)"),
        ("rollouts", "app.rollouts (aevos.rollouts: the rollout controller)"),
    ):
        if not hasattr(Aevos, name):
            missing.append(what)
    try:
        from aevos.rollouts import Criteria  # noqa: F401
    except ImportError:
        missing.append("aevos.rollouts.Criteria (rollouts/analysis.py)")
    return missing


# -- data ------------------------------------------------------------------------------------


@dataclass
class Data:
    seed_rows: list[tuple[str, str]]
    stream: list[tuple[str, str]]
    shift: int  # index of the first ticket of the second half
    new: list[str]  # the intents unknown before the shift
    test: list[tuple[str, str]]


def load_data(options: Options) -> Data:
    train, test = load_banking("train"), load_banking("test")
    names = sorted({intent for _, intent in train})
    rng = random.Random(options.seed)
    if options.intents < len(names):
        kept = set(rng.sample(names, options.intents))
        names = sorted(kept)
        train = [r for r in train if r[1] in kept]
        test = [r for r in test if r[1] in kept]
    new = sorted(rng.sample(names, options.new_intents))
    old_rows = [i for i, r in enumerate(train) if r[1] not in new]
    seed_idx = [old_rows[i] for i in per_intent([train[i] for i in old_rows], SEED_PER_INTENT)]
    chosen = set(seed_idx)
    old = [i for i in old_rows if i not in chosen]
    fresh = [i for i, r in enumerate(train) if r[1] in new]
    rng.shuffle(old)
    rng.shuffle(fresh)
    half = options.tickets // 2
    # The second half keeps banking77's own share of the new intents.
    share = len(fresh) / (len(fresh) + len(old))
    n_new = min(len(fresh), round((options.tickets - half) * share))
    n_old = options.tickets - n_new
    if n_old > len(old):
        raise SystemExit(
            f"--tickets {options.tickets}: banking77 has {len(old)} tickets of the "
            f"{len(names) - len(new)} known intents besides version 1's"
        )
    first = old[:half]
    second = old[half:n_old] + fresh[:n_new]
    rng.shuffle(second)
    stream = [train[i] for i in first + second]
    return Data([train[i] for i in seed_idx], stream, half, new, test)


def shuffled_labels(rows: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
    labels = [y for _, y in rows]
    random.Random(seed).shuffle(labels)
    return [(t, y) for (t, _), y in zip(rows, labels, strict=True)]


# -- the simulated help desk -----------------------------------------------------------------


class Reviewers:
    """Reviewer threads working the inbox through the public API, answering the truth."""

    def __init__(self, app: Aevos, truth: dict[str, str], count: int) -> None:
        self.app = app
        self.truth = truth
        self.answered = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(count)
        ]

    def start(self) -> Reviewers:
        for thread in self._threads:
            thread.start()
        return self

    def _work(self, i: int) -> None:
        actor = f"{REVIEWER}-{i}"
        tasks = self.app.tasks
        while not self._stop.is_set():
            try:
                task = tasks.claim_next(actor=actor, roles=["reviewer"], tenant=TENANT)
                if task is None:
                    self._stop.wait(0.05)
                    continue
                intent = self.truth[str(task.case["ticket_id"])]
                tasks.submit(task.task_id, {"intent": intent}, actor=actor)
            except Exception as exc:  # reported at the end, never lost
                self.errors.append(exc)
                self._stop.wait(0.5)
                continue
            with self._lock:
                self.answered += 1

    def open_tasks(self) -> int:
        live = [TaskStatus.OPEN, TaskStatus.CLAIMED]
        return len(self.app.tasks.list(status=live, limit=1000))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


# -- the system's configuration (an operator's) ----------------------------------------------


def criteria(options: Options) -> Any:
    from aevos.rollouts import Criteria

    return Criteria.from_dict(options.criteria)


def warm_up(app: Aevos, options: Options) -> None:
    """Until the first certified champion: retrain every ``--every`` labels, promote
    through the policy gate (nothing is automated yet, so there is nothing to roll out)."""
    configure_retraining(
        app,
        recipe=RECIPE,
        params=RECIPE_PARAMS,
        every_labels=options.every,
        auto_promote=True,
        tenant=TENANT,
        **options.certify,
    )


#: The rollout's final promotion: the example's policy (``support-rollout.yaml``), as ``aevos
#: demo`` uses it: the analysis already judged every step against the champion; the gate
#: holds a candidate clearly less precise than a champion with 50 labelled decisions in the
#: last step.
ROLLOUT_POLICY = "support-rollout"


def policies(workdir: Path) -> Path:
    """The example's policies, copied beside the run's database."""
    folder = workdir / "policies"
    shutil.copytree(POLICIES, folder)
    return folder


def guard(app: Aevos, options: Options) -> None:
    """After it: retrain on a drift alert only, and hand each certified candidate to a
    rollout (replay, shadow, canaries, the promotion gate) instead of promoting it."""
    configure_retraining(
        app,
        recipe=RECIPE,
        params=RECIPE_PARAMS,
        every_labels=None,
        auto_promote=True,
        tenant=TENANT,
        rollout={
            "steps": list(options.steps),
            "criteria": criteria(options).to_dict(),
            "step_minutes": options.step_minutes,
            "replay": options.replay,
            "policy": ROLLOUT_POLICY,
        },
        **options.certify,
    )


def watch(app: Aevos, options: Options) -> None:
    """The monitors: the champion's newest ``--monitor-window`` calls against its first
    ``reference_cases``, checked every ``monitor_interval`` seconds; an alert retrains."""
    app.monitors.configure(
        MODEL,
        tenant=TENANT,
        window_cases=options.monitor_window,
        reference_cases=options.reference_cases,
        interval=options.monitor_interval,
        thresholds=options.monitor_thresholds or None,
        on_alert={"retrain": True, "task": False},
    )


def register_worse(app: Aevos, options: Options, rows: list[tuple[str, str]]) -> int:
    """Train on ``rows`` with their labels shuffled and register it: the candidate an
    operator enters for rollout by mistake. Returns its version."""
    return register_trained(
        app,
        shuffled_labels(rows, options.seed + 7),
        recipe=RECIPE,
        params=RECIPE_PARAMS,
        tags={"benchmark.worse": "shuffled labels"},
        tenant=TENANT,
        created_by=OPERATOR,
    )


def enter_worse(app: Aevos, options: Options, version: int) -> bool:
    """Enter ``version`` for rollout, as the operator; False when another rollout of the
    model is active (a retraining's may start between a look and the start): try later."""
    try:
        app.rollouts.start(
            MODEL,
            version,
            tenant=TENANT,
            actor=OPERATOR,
            steps=options.steps,
            criteria=criteria(options),
            step_minutes=options.step_minutes,
            replay=False,
            policy=ROLLOUT_POLICY,
        )
    except RolloutConflictError:
        return False
    return True


# -- the run ---------------------------------------------------------------------------------


def run(options: Options) -> dict[str, Any]:
    missing = missing_parts()
    if missing:
        raise SystemExit(
            "evolution_drift needs parts this checkout does not have: " + "; ".join(missing)
        )
    started = time.monotonic()
    data = load_data(options)
    workdir = Path(tempfile.mkdtemp(prefix="aevos-drift-"))
    database_url = options.postgres_url or f"sqlite:///{workdir / 'aevos.db'}"
    if options.postgres_url:
        empty = Aevos(database_url)
        empty.store.truncate_all()
        empty.close()
    app = make_app(
        database_url,
        tickets_url=f"sqlite:///{workdir / 'tickets.db'}",
        vault_key=Vault.generate_key(),
        policies=policies(workdir),
        park_after=2.0,
        poll_interval=0.05,
    )
    print(
        f"banking77: {len(data.seed_rows)} seed labels of {options.intents - len(data.new)} "
        f"intents, {len(data.stream)} tickets, shift at {data.shift} (new intents: "
        f"{', '.join(data.new)}); database "
        f"{'PostgreSQL' if options.postgres_url else 'SQLite'} ({workdir})",
        flush=True,
    )
    train_first_version(app, data.seed_rows, recipe=RECIPE, params=RECIPE_PARAMS)
    import_labels(app, data.seed_rows)
    warm_up(app, options)
    # Built before the workers, so their chores run the controller and the monitors.
    app.replays  # noqa: B018
    app.rollouts  # noqa: B018
    truth = {f"T{i:05d}": intent for i, (_, intent) in enumerate(data.stream)}
    tickets = [Ticket() for _ in data.stream]
    reviewers = Reviewers(app, truth, options.reviewers).start()
    workers = [
        app.worker(queues=[QUEUE], concurrency=options.concurrency).start(),
        app.worker(queues=["retraining"], concurrency=1).start(),
        app.worker(queues=[q for q in app.queues if q not in (QUEUE, "retraining")]).start(),
    ]
    worse: int | None = None
    worse_case: int | None = None
    guarded_at: int | None = None
    shift_time = 0.0
    try:
        deadline = time.monotonic() + options.timeout
        in_flight: collections.deque[tuple[int, Any]] = collections.deque()
        worse_due = int(options.worse_at * len(data.stream))

        def finish_oldest() -> None:
            i, handle = in_flight.popleft()
            output = handle.result(timeout=max(1.0, deadline - time.monotonic()))
            t = tickets[i]
            t.routed_by, t.version = str(output["routed_by"]), output["model_version"]
            t.right = output["intent"] == data.stream[i][1]
            t.call_id = output["call_id"]
            if (i + 1) % 250 == 0:
                version, threshold = champion(app)
                rate = sum(x.routed_by == "model" for x in tickets[i - 249 : i + 1]) / 250
                print(
                    f"{i + 1:>6} tickets  automated {rate:5.1%}  reviews {reviewers.answered:,}"
                    f"  champion v{version} ({'-' if threshold is None else f'{threshold:.3f}'})",
                    flush=True,
                )

        pace = 1.0 / options.rate
        for i, (text, _) in enumerate(data.stream):
            while len(in_flight) >= options.in_flight:
                finish_oldest()
            if guarded_at is None and champion(app)[1] is not None:
                guard(app, options)
                watch(app, options)
                guarded_at = i
            if worse_case is None and guarded_at is not None and i >= worse_due:
                if worse is None:
                    worse = register_worse(app, options, data.seed_rows + data.stream[:i])
                idle = app.rollouts.active(MODEL, tenant=TENANT) is None
                if idle and enter_worse(app, options, worse):
                    worse_case = i
                    print(
                        f"{i:>6} tickets  worse candidate v{worse} entered for rollout", flush=True
                    )
            if i == data.shift:
                shift_time = time.time()
                print(f"{i:>6} tickets  shift: the new intents arrive", flush=True)
            tickets[i].started = time.time()
            [handle] = start_tickets(app, [ticket(f"T{i:05d}", text)])
            in_flight.append((i, handle))
            time.sleep(max(0.0, tickets[i].started + pace - time.time()))
        while in_flight:
            finish_oldest()
        while reviewers.open_tasks():
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.stop(timeout=30)
        reviewers.stop()
    print(f"stream done in {time.monotonic() - started:.0f} s; measuring", flush=True)
    result = measure(
        app,
        options,
        data,
        tickets,
        None if worse_case is None else worse,
        worse_case,
        shift_time,
        settings(options, data, guarded_at),
    )
    result["reviews"] = reviewers.answered
    result["reviewer_errors"] = [repr(e) for e in reviewers.errors[:5]]
    result["seconds"] = round(time.monotonic() - started, 1)
    app.close()
    return result


def settings(options: Options, data: Data, guarded_at: int | None) -> dict[str, Any]:
    """What the run was, as the JSON keeps it."""
    shift = data.shift
    return {
        "seed": options.seed,
        "quick": options.quick,
        "tickets": len(data.stream),
        "shift": shift,
        "intents": options.intents,
        "new_intents": data.new,
        "seed_labels": len(data.seed_rows),
        "worse_at": options.worse_at,
        "guarded_at_case": guarded_at,
        "recipe": RECIPE,
        "params": RECIPE_PARAMS,
        "certify": options.certify,
        "every": options.every,
        "steps": list(options.steps),
        "step_minutes": options.step_minutes,
        "replay": options.replay,
        "criteria": options.criteria,
        "monitor_window": options.monitor_window,
        "reference_cases": options.reference_cases,
        "monitor_interval": options.monitor_interval,
        "monitor_thresholds": options.monitor_thresholds,
        "rollout_policy": (POLICIES / f"{ROLLOUT_POLICY}.yaml").read_text(encoding="utf-8"),
        "report_window": options.report_window,
        "rate": options.rate,
        "in_flight": options.in_flight,
        "knows": KNOWS,
        "database": "postgresql" if options.postgres_url else "sqlite",
    }


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 intents (2 new), 800 tickets")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--json", type=Path, default=None, dest="json_path")
    parser.add_argument("--tickets", type=int, default=None)
    parser.add_argument("--new-intents", type=int, default=None)
    parser.add_argument("--worse-at", type=float, default=None, help="share of the stream")
    parser.add_argument("--in-flight", type=int, default=24)
    parser.add_argument("--rate", type=float, default=None, help="tickets per second at most")
    parser.add_argument("--every", type=int, default=None, help="warm-up: retrain every N labels")
    parser.add_argument("--monitor-window", type=int, default=None, help="calls per window")
    parser.add_argument("--report-window", type=int, default=None, help="tickets per window")
    parser.add_argument("--steps", default=None, help="rollout steps, e.g. 0,5,25,50,100")
    parser.add_argument("--step-minutes", type=float, default=None)
    parser.add_argument("--criteria", default=None, help="rollout criteria as JSON")
    parser.add_argument(
        "--no-replay",
        action="store_false",
        dest="replay",
        help="the drift retraining's rollout starts at shadow, without a replay",
    )
    parser.add_argument(
        "--monitor-thresholds", default=None, help="monitor thresholds as JSON (default: theirs)"
    )
    args = parser.parse_args(argv)
    options = Options(
        seed=args.seed,
        quick=args.quick,
        postgres_url=args.postgres_url,
        json_path=args.json_path,
        in_flight=args.in_flight,
        replay=args.replay,
    )
    if options.quick:
        options.tickets, options.intents, options.new_intents = 800, 10, 2
        options.every, options.monitor_window, options.report_window = 50, 60, 100
        options.reference_cases, options.monitor_interval, options.rate = 100, 2.0, 20.0
        options.steps, options.step_minutes = (0, 25, 50, 100), 1.0
        options.criteria = {"min_calls": 20, "min_labels": 5, "min_agreement": 0.6}
        options.certify = dict(QUICK_CERTIFY)
        options.monitor_thresholds = {"retrain_after": 20.0, "estimate_window": 150}
    for name in (
        "rate",
        "tickets",
        "new_intents",
        "worse_at",
        "every",
        "monitor_window",
        "report_window",
        "step_minutes",
    ):
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    if args.steps is not None:
        options.steps = tuple(int(s) for s in args.steps.split(","))
    if args.criteria is not None:
        options.criteria = json.loads(args.criteria)
    if args.monitor_thresholds is not None:
        options.monitor_thresholds = json.loads(args.monitor_thresholds)
    if not 0 < options.worse_at < 0.5:
        parser.error("--worse-at is a share of the stream before the shift (0 < x < 0.5)")
    if not 0 < options.new_intents < options.intents:
        parser.error("--new-intents must be between 1 and the intents less one")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    result = run(options)
    print(summary(result))
    print(f"runtime {result['seconds']:.0f} s")
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(final_line(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
