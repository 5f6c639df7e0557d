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
    start_tickets,
    ticket,
    train_first_version,
)

from aevos import Aevos, TaskStatus  # noqa: E402
from aevos.evolution import Dataset  # noqa: E402
from aevos.pii import Vault  # noqa: E402

TENANT = "default"
OPERATOR = "user:operator"
REVIEWER = "reviewer:simulated"
SEED_PER_INTENT = 5
#: A version "knows" the new intents when it gets at least this share of test.csv's tickets
#: of the new intents right (version 1 gets none: it has never seen them).
KNOWS = 0.5
RECIPE = "tfidf-logreg"
RECIPE_PARAMS: dict[str, Any] = {"char_ngrams": [2, 4]}
#: What a few hundred audited tickets can certify (aevos demo's setting).
CERTIFY: dict[str, Any] = {"target": 0.9, "delta": 0.1}
QUICK_CERTIFY: dict[str, Any] = {"target": 0.9, "delta": 0.2, "min_count": 30}
#: The monitors that look at the traffic and the model's answers, not at people's labels.
DRIFT_MONITORS = ("input_drift", "prediction_drift", "confidence_drift", "estimated_accuracy")
TARGETS = {
    "cases_to_alert": "<= 1,000",
    "worse_max_step": "<= 1 (never past the first canary step)",
    "worse_rolled_back": "true, by the controller, champion untouched",
    "estimate_error_max": "<= 0.03 without concept shift",
}


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
    monitor_window: int = 200
    reference_cases: int = 500
    monitor_interval: float = 5.0
    monitor_thresholds: dict[str, float] = field(default_factory=dict)  # {}: the defaults
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


#: The rollout's final promotion: the analysis already judged every step against the
#: champion; the gate refuses only a candidate clearly less precise than it at the last one.
ROLLOUT_POLICY = "support-rollout"
ROLLOUT_POLICY_YAML = """\
policy: support-rollout
version: 1
kind: promotion
description: >-
  A candidate whose rollout passed every step becomes the champion, unless its realised
  precision at the last step fell more than 5 points below the champion's.
input:
  model.name: string
  candidate.accuracy: number
  candidate.samples: integer
  champion.accuracy?: number
rules:
  - name: less-precise-than-champion
    when: champion.accuracy != None and candidate.accuracy < champion.accuracy - 0.05
    decision: deny
    reason: the candidate was clearly less precise than the champion at the last step
default:
  decision: allow
  reason: every step of the rollout passed its analysis
"""


def policies(workdir: Path) -> Path:
    """The example's policies and the rollout's promotion policy, in one directory."""
    folder = workdir / "policies"
    shutil.copytree(POLICIES, folder)
    (folder / f"{ROLLOUT_POLICY}.yaml").write_text(ROLLOUT_POLICY_YAML, encoding="utf-8")
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


def enter_worse(app: Aevos, options: Options, rows: list[tuple[str, str]]) -> int:
    """Train on ``rows`` with their labels shuffled, register it and enter it for rollout:
    an operator's mistake the rollout must catch. Returns its version."""
    result = app.recipes.train(
        RECIPE, Dataset.from_rows(shuffled_labels(rows, options.seed + 7)), RECIPE_PARAMS
    )
    artifact = result.artifact
    assert artifact is not None
    version = app.models.register(
        MODEL,
        artifact.data,
        flavor=artifact.flavor,
        config=dict(artifact.config),
        parts=artifact.blobs,
        tags={"benchmark.worse": "shuffled labels"},
        tenant=TENANT,
        created_by=OPERATOR,
    ).version
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
    return version


def champion(app: Aevos) -> tuple[int, float | None]:
    version = app.models.aliases(MODEL, tenant=TENANT)["champion"]
    record = app.certifications.latest(MODEL, version, tenant=TENANT)
    return version, None if record is None else record.threshold


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Ticket:
    started: float = 0.0
    routed_by: str | None = None
    right: bool | None = None  # the routed intent is the true one
    version: int | None = None
    call_id: str | None = None


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
            if (
                worse is None
                and guarded_at is not None
                and i >= worse_due
                and app.rollouts.active(MODEL, tenant=TENANT) is None
            ):
                labelled = data.seed_rows + data.stream[:i]
                worse, worse_case = enter_worse(app, options, labelled), i
                print(f"{i:>6} tickets  worse candidate v{worse} entered for rollout", flush=True)
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
    result = measure(app, options, data, tickets, worse, worse_case, guarded_at, shift_time)
    result["reviews"] = reviewers.answered
    result["reviewer_errors"] = [repr(e) for e in reviewers.errors[:5]]
    result["seconds"] = round(time.monotonic() - started, 1)
    app.close()
    return result


# -- the measurements ------------------------------------------------------------------------


def audit(app: Aevos, action: str, since: float | None = None) -> list[Any]:
    records: list[Any] = []
    after = 0
    while True:
        page = app.audit.query(TENANT, action=action, since=since, after_seq=after, limit=1000)
        records += [r for r in page if r.data.get("model") == MODEL]
        if len(page) < 1000:
            return records
        after = page[-1].seq


def cases_before(tickets: list[Ticket], start: int, at: float) -> int:
    """Tickets from ``start`` on that were started before ``at`` (an event that can only
    have been caused by tickets started before it: counting them all is conservative)."""
    return sum(1 for t in tickets[start:] if t.started < at)


class NewIntents:
    """test.csv's tickets of the new intents: how much of them a version gets right."""

    def __init__(self, app: Aevos, data: Data) -> None:
        self.app = app
        self.rows = [(t, y) for t, y in data.test if y in data.new]
        self._cache: dict[int, float] = {}

    def accuracy(self, version: int) -> float:
        if version not in self._cache:
            adapter = self.app.models.load(self.app.models.get(MODEL, version, tenant=TENANT))
            texts = [t for t, _ in self.rows]
            batch = getattr(adapter, "batch_predict", None)
            answers = batch(texts) if callable(batch) else [adapter.predict(t) for t in texts]
            right = sum(a.label == y for a, (_, y) in zip(answers, self.rows, strict=True))
            self._cache[version] = right / len(self.rows)
        return self._cache[version]


def automation(tickets: list[Ticket], window: int, shift: int) -> list[dict[str, Any]]:
    """Per window of tickets: the share routed by the model, and the share of those routed
    to the true intent (the realised precision of automation, from the truth)."""
    windows = []
    for start in range(0, len(tickets), window):
        part = tickets[start : start + window]
        automated = [t for t in part if t.routed_by == "model"]
        windows.append(
            {
                "cases": start + len(part),
                "automated": round(len(automated) / len(part), 4),
                "precision": (
                    round(sum(bool(t.right) for t in automated) / len(automated), 4)
                    if automated
                    else None
                ),
                "after_shift": start >= shift,
            }
        )
    return windows


def estimates(
    app: Aevos, data: Data, tickets: list[Ticket], shift_time: float
) -> list[dict[str, Any]]:
    """Each monitor window's label-free accuracy estimate (CBPE) against the true accuracy
    of the same version's answers in that window, for the windows before the shift."""
    truth_of = {t.call_id: data.stream[i][1] for i, t in enumerate(tickets) if t.call_id}
    calls = [
        (r.at, r.data.get("version"), r.data.get("label") == truth_of[r.data["call_id"]])
        for r in audit(app, "model.called")
        if r.data.get("call_id") in truth_of
        and r.data.get("route") != "shadow"
        and r.data.get("outcome") == "ok"
    ]
    rows = []
    for result in app.monitors.results(
        MODEL, tenant=TENANT, monitor="estimated_accuracy", limit=1000
    ):
        if result.value is None or result.since is None or result.until is None:
            continue  # no data
        if result.until >= shift_time:
            continue
        # The window is the champion's newest calls: [since, until] spans them.
        inside = [
            ok for at, v, ok in calls if v == result.version and result.since <= at <= result.until
        ]
        if len(inside) < 30:
            continue
        true = sum(inside) / len(inside)
        rows.append(
            {
                "version": result.version,
                "since": result.since,
                "until": result.until,
                "calls": len(inside),
                "estimate": round(result.value, 4),
                "true": round(true, 4),
                "error": round(abs(result.value - true), 4),
            }
        )
    return rows


def measure(
    app: Aevos,
    options: Options,
    data: Data,
    tickets: list[Ticket],
    worse: int | None,
    worse_case: int | None,
    guarded_at: int | None,
    shift_time: float,
) -> dict[str, Any]:
    shift = data.shift
    alerts = audit(app, "monitor.alerted")
    after = [a for a in alerts if a.at >= shift_time]
    cases_to_alert = cases_before(tickets, shift, after[0].at) if after else None
    drifted = [a for a in after if a.data.get("monitor") in DRIFT_MONITORS]
    cases_to_drift_alert = cases_before(tickets, shift, drifted[0].at) if drifted else None
    false_alarms = collections.Counter(
        str(a.data.get("monitor")) for a in alerts if a.at < shift_time
    )

    worse_rollout: dict[str, Any] | None = None
    worse_max_step: int | None = None
    worse_rolled_back = False
    worse_promoted = False
    if worse is not None:
        [rollout] = [r for r in app.rollouts.list(tenant=TENANT, model=MODEL) if r.version == worse]
        worse_rollout = rollout.to_dict()
        steps = [rollout.step]
        moves = [
            r
            for action in ("rollout.started", "rollout.advanced", "rollout.rolled_back")
            for r in audit(app, action)
            if r.data.get("rollout_id") == rollout.rollout_id
        ]
        steps += [
            s
            for r in moves
            for s in (r.data.get("from_step"), r.data.get("to_step"))
            if s is not None
        ]
        worse_max_step = max(steps)
        worse_rolled_back = rollout.state == "rolled_back" and any(
            r.action == "rollout.rolled_back" and r.actor != OPERATOR for r in moves
        )
    promotions = [
        p for p in audit(app, "model.promoted") if p.data.get("alias", "champion") == "champion"
    ]
    worse_promoted = any(p.data.get("version") == worse for p in promotions)

    known = NewIntents(app, data)
    recovery: dict[str, Any] | None = None
    for p in promotions:
        if p.at < shift_time:
            continue
        accuracy = known.accuracy(int(p.data["version"]))
        if accuracy >= KNOWS:
            recovery = {
                "version": p.data["version"],
                "cases": cases_before(tickets, shift, p.at),
                "new_intent_accuracy": round(accuracy, 4),
            }
            break
    windows = automation(tickets, options.report_window, shift)
    before = [w["automated"] for w in windows if not w["after_shift"]]
    later = [w["automated"] for w in windows if w["after_shift"]]
    estimated = estimates(app, data, tickets, shift_time)
    runs = list(reversed(app.retraining.runs(MODEL, tenant=TENANT, limit=200)))
    version, threshold = champion(app)
    return {
        "cases_to_alert": cases_to_alert,
        "worse_max_step": worse_max_step,
        "worse_rolled_back": worse_rolled_back,
        "worse_promoted": worse_promoted,
        "cases_to_recovery": None if recovery is None else recovery["cases"],
        "cases_to_drift_alert": cases_to_drift_alert,
        "estimate_error_max": max((r["error"] for r in estimated), default=None),
        "targets": TARGETS,
        "alerts": {
            "before_shift": len(alerts) - len(after),
            "before_shift_by_monitor": dict(false_alarms),
            "after_shift": len(after),
            "first": None if not after else dict(after[0].data),
            "all": [
                {
                    "monitor": a.data.get("monitor"),
                    "version": a.data.get("version"),
                    "at_case": cases_before(tickets, 0, a.at),
                    "value": a.data.get("figures", {}).get("value"),
                }
                for a in alerts
            ],
        },
        "worse": {"version": worse, "entered_at_case": worse_case, "rollout": worse_rollout},
        "recovery": recovery,
        "automation": {
            "windows": windows,
            "before_shift": before[-1] if before else None,
            "dip": min(later) if later else None,
            "last": later[-1] if later else None,
        },
        "estimates": estimated,
        "retrainings": [
            {
                "trigger": r.trigger.value,
                "status": r.status.value,
                "candidate": r.candidate,
                "certified": r.certified,
                "promotion": r.promotion,
                "label_count": r.label_count,
            }
            for r in runs
        ],
        "rollouts": [r.to_dict() for r in app.rollouts.list(tenant=TENANT, model=MODEL)],
        "champion": {"version": version, "threshold": threshold},
        "settings": {
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
            "rollout_policy": ROLLOUT_POLICY_YAML,
            "report_window": options.report_window,
            "rate": options.rate,
            "in_flight": options.in_flight,
            "knows": KNOWS,
            "database": "postgresql" if options.postgres_url else "sqlite",
        },
    }


# -- reporting -------------------------------------------------------------------------------


def _shown(value: Any, form: str = "{:,}") -> str:
    return "—" if value is None else form.format(value)


def summary(result: dict[str, Any]) -> str:
    lines = ["figure                   value  target"]
    for name, shown in (
        ("cases_to_alert", _shown(result["cases_to_alert"])),
        ("worse_max_step", _shown(result["worse_max_step"])),
        ("worse_rolled_back", str(result["worse_rolled_back"]).lower()),
        ("cases_to_recovery", _shown(result["cases_to_recovery"])),
        ("estimate_error_max", _shown(result["estimate_error_max"], "{:.3f}")),
    ):
        lines.append(f"{name:<20} {shown:>9}  {TARGETS.get(name, '(no target)')}")
    lines.append("")
    alerts = result["alerts"]
    lines.append(
        f"first alert after the shift: {(alerts['first'] or {}).get('monitor', '—')}; first of "
        f"a drift monitor after {_shown(result['cases_to_drift_alert'])} cases; alerts before "
        f"the shift: {alerts['before_shift_by_monitor'] or 'none'}"
    )
    lines.append("")
    lines.append(" cases  automated  precision (true)")
    for w in result["automation"]["windows"]:
        precision = _shown(w["precision"], "{:.1%}")
        shifted = "  (after the shift)" if w["after_shift"] else ""
        lines.append(f"{w['cases']:>6}  {w['automated']:>9.1%}  {precision:>9}{shifted}")
    if result["estimates"]:
        lines.append("")
        lines.append("version  calls  estimate  true   error")
        for e in result["estimates"]:
            figures = f"{e['estimate']:>8.1%}  {e['true']:>5.1%}  {e['error']:.3f}"
            lines.append(f"v{e['version']:<7} {e['calls']:>5}  {figures}")
    return "\n".join(lines)


def final_line(result: dict[str, Any]) -> str:
    a = result["automation"]
    return (
        f"final: alert after {_shown(result['cases_to_alert'])} cases (target <= 1,000), "
        f"worse candidate max step {_shown(result['worse_max_step'])} "
        f"{'rolled back' if result['worse_rolled_back'] else 'NOT rolled back'} (target <= 1), "
        f"recovery after {_shown(result['cases_to_recovery'])} cases, automation "
        f"{_shown(a['before_shift'], '{:.1%}')} -> {_shown(a['dip'], '{:.1%}')} -> "
        f"{_shown(a['last'], '{:.1%}')}, estimate error max "
        f"{_shown(result['estimate_error_max'], '{:.3f}')} (target <= 0.03)"
    )


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
