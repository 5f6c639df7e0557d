"""Human tasks: ``ctx.ask_human``, the inbox actions and feedback records (both backends).

A real model (banking77, 4 intents) suggests; a person claims, decides or overrides; the
run resumes with the decision and a feedback record links it to the model version.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aevos import (
    Aevos,
    Field,
    HumanDecision,
    RunStatus,
    TaskConflictError,
    TaskExpiredError,
    TaskInputError,
    TaskNotFoundError,
    TaskStatus,
    WorkflowContext,
)
from aevos.audit.lineage import lineage
from aevos.errors import DefinitionError
from aevos.public_data import data_file

DATA = data_file("banking77")
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked"]
FORM = [
    Field.choice("intent", INTENTS, label="Intent"),
    Field.number("refund", required=False, minimum=0, maximum=500),
    Field.text("note", required=False, max_length=200),
]
ALICE = "reviewer:alice#t1"
BOB = "reviewer:bob#t2"


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _train() -> Any:
    from aevos.models.adapters.sklearn import train_text_classifier

    seen: dict[str, int] = {}
    texts, labels = [], []
    with (DATA / "train.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in INTENTS and seen.get(row["category"], 0) < 40:
                seen[row["category"]] = seen.get(row["category"], 0) + 1
                texts.append(row["text"])
                labels.append(row["category"])
    return train_text_classifier(texts, labels)


@pytest.fixture(scope="module")
def intent_model() -> bytes:
    from aevos.models.artifact import dump_sklearn

    return dump_sklearn(_train())


@pytest.fixture
def triage_app(app: Aevos, intent_model: bytes) -> Iterator[Aevos]:
    app.models.register(
        "intent", intent_model, flavor="sklearn", signature={"type": "string"}, aliases=["champion"]
    )

    @app.workflow(name="triage")
    def triage(ctx: WorkflowContext, text: str) -> dict[str, Any]:
        prediction = ctx.predict("intent", text)
        decision = ctx.ask_human(
            "Which intent is this?",
            form=FORM,
            case={"text": text},
            prediction=prediction,
            queue="support",
            sla=3600,
            escalate_to="senior",
        )
        return {
            "intent": decision["intent"],
            "by": decision.reviewer,
            "changed": decision.overridden,
        }

    yield app


def _open_task(app: Aevos, run_id: str) -> Any:
    wait_for(lambda: bool(app.tasks.list(run_id=run_id)))
    (task,) = app.tasks.list(run_id=run_id)
    return task


def test_a_person_decides_and_the_parked_run_resumes_with_a_feedback_record(
    triage_app: Aevos,
) -> None:
    app = triage_app
    handle = app.start("triage", "My new card has still not arrived")
    worker = app.worker(concurrency=2).start()
    try:
        task = _open_task(app, handle.run_id)
        wait_for(lambda: handle.status() is RunStatus.WAITING)  # parked: no thread held
        assert worker.active == 0
        assert task.status is TaskStatus.OPEN and task.queue == "support"
        assert task.case == {"text": "My new card has still not arrived"}
        assert task.suggestion == {"intent": "card_arrival"}
        assert task.model_version == "intent@1" and 0 < (task.confidence or 0) <= 1
        assert task.call_id and task.input_digest and task.due_at is not None

        claimed = app.tasks.claim(task.task_id, actor=ALICE)
        assert claimed.status is TaskStatus.CLAIMED and claimed.assignee == ALICE
        done, record = app.tasks.submit(
            task.task_id,
            {"intent": "lost_or_stolen_card", "note": "customer says stolen"},
            actor=ALICE,
        )
        result = handle.result(timeout=15)
    finally:
        worker.stop()
    assert result == {"intent": "lost_or_stolen_card", "by": ALICE, "changed": True}
    assert done.status is TaskStatus.SUBMITTED and done.submitted_by == ALICE
    assert record.overridden and record.model_version == "intent@1"
    assert record.suggestion == {"intent": "card_arrival"}
    assert record.decision == {
        "intent": "lost_or_stolen_card",
        "refund": None,
        "note": "customer says stolen",
    }
    assert record.run_id == handle.run_id and record.call_id == task.call_id
    assert app.tasks.feedback() == [record]
    # Parking re-executed the run from the start: the task was replayed, not asked again.
    assert len(app.tasks.list(run_id=handle.run_id)) == 1
    assert handle.info().executions >= 2

    actions = [r.action for r in app.audit.query("default", run_id=handle.run_id)]
    assert actions.index("task.created") < actions.index("task.claimed")
    assert actions.index("task.claimed") < actions.index("task.submitted")
    submitted = app.audit.query("default", run_id=handle.run_id, action="task.submitted")[0]
    assert submitted.actor == ALICE and submitted.data["overridden"] is True
    assert "stolen" not in str(submitted.to_dict())  # the decision only as a digest
    assert app.audit.verify("default").ok
    assert ALICE in lineage(app.store, app.audit, handle.run_id).people


def test_an_accepted_suggestion_is_not_an_override(triage_app: Aevos) -> None:
    app = triage_app
    handle = app.start("triage", "I think my card was stolen yesterday")
    worker = app.worker().start()
    try:
        task = _open_task(app, handle.run_id)
        assert task.suggestion == {"intent": "lost_or_stolen_card"}
        app.tasks.submit(task.task_id, {"intent": "lost_or_stolen_card"}, actor=BOB)
        assert handle.result(timeout=15)["changed"] is False
    finally:
        worker.stop()
    (record,) = app.tasks.feedback()
    assert not record.overridden and record.reviewer == BOB


def test_submitting_twice_or_after_cancellation_is_a_conflict_and_changes_nothing(
    triage_app: Aevos,
) -> None:
    app = triage_app
    first = app.start("triage", "What is the exchange rate for euros?")
    second = app.start("triage", "My PIN is blocked after three tries")
    worker = app.worker().start()
    try:
        task = _open_task(app, first.run_id)
        app.tasks.submit(task.task_id, {"intent": "exchange_rate"}, actor=ALICE)
        with pytest.raises(TaskConflictError, match="already submitted") as err:
            app.tasks.submit(task.task_id, {"intent": "pin_blocked"}, actor=ALICE)
        assert err.value.code == "task_conflict" and err.value.status == "SUBMITTED"
        first.result(timeout=15)

        other = _open_task(app, second.run_id)
        app.tasks.claim(other.task_id, actor=BOB)
        assert app.cancel(second.run_id) is RunStatus.CANCELLED
        assert app.tasks.get(other.task_id).status is TaskStatus.CANCELLED
        with pytest.raises(TaskConflictError, match="cancelled"):
            app.tasks.submit(other.task_id, {"intent": "pin_blocked"}, actor=BOB)
        with pytest.raises(TaskConflictError):
            app.tasks.claim(other.task_id, actor=ALICE)
    finally:
        worker.stop()
    assert [f.task_id for f in app.tasks.feedback()] == [task.task_id]
    # Resuming the cancelled run reopens its task; deciding it now completes the run.
    worker = app.worker().start()
    try:
        app.resume(second.run_id)
        assert app.tasks.get(other.task_id).status is TaskStatus.OPEN
        app.tasks.submit(other.task_id, {"intent": "pin_blocked"}, actor=BOB)
        assert second.result(timeout=15)["intent"] == "pin_blocked"
    finally:
        worker.stop()
    assert app.tasks.get(task.task_id).result == {
        "intent": "exchange_rate",
        "refund": None,
        "note": None,
    }


def test_claim_release_reassign_and_someone_elses_claim(triage_app: Aevos) -> None:
    app = triage_app
    handle = app.start("triage", "Card not delivered yet")
    worker = app.worker().start()
    try:
        task = _open_task(app, handle.run_id)
        app.tasks.claim(task.task_id, actor=ALICE)
        assert app.tasks.claim(task.task_id, actor=ALICE).assignee == ALICE  # idempotent
        with pytest.raises(TaskConflictError, match="another person claimed it"):
            app.tasks.claim(task.task_id, actor=BOB)
        with pytest.raises(TaskConflictError, match="another person claimed it"):
            app.tasks.submit(task.task_id, {"intent": "card_arrival"}, actor=BOB)
        with pytest.raises(TaskConflictError, match="another person claimed it"):
            app.tasks.release(task.task_id, actor=BOB)
        released = app.tasks.release(task.task_id, actor=ALICE)
        assert released.status is TaskStatus.OPEN and released.assignee is None
        moved = app.tasks.reassign(task.task_id, by="operator:olga#t3", assignee=BOB, queue="vip")
        assert (moved.status, moved.assignee, moved.queue) == (TaskStatus.CLAIMED, BOB, "vip")
        app.tasks.submit(task.task_id, {"intent": "card_arrival", "refund": "12.5"}, actor=BOB)
        assert handle.result(timeout=15)["by"] == BOB
    finally:
        worker.stop()
    assert app.tasks.feedback()[0].decision["refund"] == 12.5
    reassigned = app.audit.query("default", action="task.reassigned")[0]
    assert reassigned.actor == "operator:olga#t3" and reassigned.data["assignee"] == BOB
    with pytest.raises(TaskNotFoundError):
        app.tasks.get("no-such-task")
    with pytest.raises(TaskNotFoundError):
        app.tasks.get(task.task_id, tenant="other")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"intent": "pizza"}, "intent"),
        ({}, "intent"),
        ({"intent": "card_arrival", "refund": 501}, "refund"),
        ({"intent": "card_arrival", "refund": "nan"}, "refund"),
        ({"intent": "card_arrival", "note": "x" * 201}, "note"),
        ({"intent": "card_arrival", "approved": True}, "approved"),
    ],
)
def test_a_value_that_does_not_fit_the_form_names_the_field(
    triage_app: Aevos, values: dict[str, Any], field: str
) -> None:
    app = triage_app
    handle = app.start("triage", "card arrival?")
    worker = app.worker().start()
    try:
        task = _open_task(app, handle.run_id)
        with pytest.raises(TaskInputError) as err:
            app.tasks.submit(task.task_id, values, actor=ALICE)
        assert err.value.field == field and err.value.code == "invalid_task_input"
        assert app.tasks.get(task.task_id).status is TaskStatus.OPEN
        assert app.tasks.feedback() == []
    finally:
        app.cancel(handle.run_id)
        worker.stop()


def test_a_task_past_its_sla_escalates_once_ahead_of_the_queue(triage_app: Aevos) -> None:
    app = triage_app
    handle = app.start("triage", "exchange rate please")
    worker = app.worker().start()
    try:
        task = _open_task(app, handle.run_id)
        app.tasks.claim(task.task_id, actor=ALICE)
        assert app.tasks.escalate_overdue(now=time.time()) == []  # not due for an hour
        (escalated,) = app.tasks.escalate_overdue(now=time.time() + 3601)
        assert escalated.queue == "senior" and escalated.status is TaskStatus.OPEN
        assert escalated.assignee is None and escalated.escalated
        assert escalated.priority > task.priority
        assert app.tasks.escalate_overdue(now=time.time() + 7200) == []  # once
        (event,) = app.audit.query("default", action="task.escalated")
        assert event.run_id == handle.run_id and event.actor.startswith("system:")
    finally:
        app.cancel(handle.run_id)
        worker.stop()


def test_an_escalation_chain_moves_a_task_up_one_level_per_sla(app: Aevos) -> None:
    @app.workflow(name="claim.review")
    def review(ctx: WorkflowContext) -> str:
        decision = ctx.ask_human(
            "Approve this claim?",
            form=[Field.boolean("approve")],
            queue="adjusters",
            sla=60,
            escalate_to=["senior-adjusters", "claims-managers"],
        )
        return str(decision["approve"])

    handle = review.start()
    worker = app.worker()
    worker.escalation_interval = 3600.0  # these escalations are driven by the test's clock
    worker.start()
    try:
        task = _open_task(app, handle.run_id)
        assert (task.escalations, task.escalation_level) == (2, 0)
        assert task.escalation_chain == ("senior-adjusters", "claims-managers")
        assert app.tasks.escalate_overdue(now=task.created_at + 30) == []
        (first,) = app.tasks.escalate_overdue(now=task.created_at + 61)
        assert (first.queue, first.escalation_level) == ("senior-adjusters", 1)
        assert first.due_at is not None and first.due_at >= task.created_at + 121  # a new SLA
        # The same sweep on another host, a moment later, finds nothing left to do.
        assert app.tasks.escalate_overdue(now=task.created_at + 62) == []
        app.tasks.claim(task.task_id, actor=ALICE)
        (second,) = app.tasks.escalate_overdue(now=task.created_at + 200)
        assert (second.queue, second.escalation_level, second.assignee) == (
            "claims-managers",
            2,
            None,
        )
        assert second.priority > first.priority > task.priority  # each level ranks higher
        assert app.tasks.escalate_overdue(now=task.created_at + 10_000) == []  # chain done
        events = app.audit.query("default", action="task.escalated")
        assert [(e.data["queue"], e.data["escalation_level"]) for e in events] == [
            ("senior-adjusters", 1),
            ("claims-managers", 2),
        ]
        app.tasks.submit(task.task_id, {"approve": True}, actor=ALICE)
        assert handle.result(timeout=15) == "True"
    finally:
        worker.stop()


def test_escalation_during_a_rolling_upgrade_neither_skips_nor_repeats(app: Aevos) -> None:
    """Processes older than revision 0006 keep running while newer ones migrate: tasks they
    ask have no escalation count, and tasks they escalate keep level 0. Both are swept as
    the older code would have: one escalation, made once."""
    import sqlalchemy as sa

    from aevos.storage.schema import tasks as tasks_table

    @app.workflow(name="old.style")
    def ask(ctx: WorkflowContext, chain: list[str]) -> str:
        decision = ctx.ask_human("?", form=[Field.text("x")], sla=60, escalate_to=chain)
        return str(decision["x"])

    @app.workflow(name="no.sla")
    def unlimited(ctx: WorkflowContext) -> str:
        # Before chains, escalate_to without an sla was accepted and did nothing: still so,
        # so that runs parked on such a task replay after the upgrade.
        return str(ctx.ask_human("?", form=[Field.text("x")], escalate_to="leads")["x"])

    asked_by_old = ask.start(["leads"])
    escalated_by_old = ask.start(["leads", "managers"])
    never = unlimited.start()
    worker = app.worker()
    worker.escalation_interval = 3600.0
    worker.start()
    try:
        old = _open_task(app, asked_by_old.run_id)
        chained = _open_task(app, escalated_by_old.run_id)
        _open_task(app, never.run_id)
        c = tasks_table.c
        with app.store._tx() as conn:
            conn.execute(
                sa.update(tasks_table).where(c.task_id == old.task_id).values(escalations=0)
            )
            conn.execute(  # an old sweep moved it to its escalate_to queue, level left at 0
                sa.update(tasks_table)
                .where(c.task_id == chained.task_id)
                .values(queue="leads", escalated_at=time.time(), due_at=0.0)
            )
        now = time.time() + 61
        swept = {t.task_id: t for t in app.tasks.escalate_overdue(now=now)}
        assert set(swept) == {old.task_id, chained.task_id}
        assert (swept[old.task_id].queue, swept[old.task_id].escalation_level) == ("leads", 1)
        assert swept[chained.task_id].queue == "managers"  # the next level, not "leads" again
        assert swept[chained.task_id].escalation_level == 2
        assert app.tasks.escalate_overdue(now=now + 10_000) == []
    finally:
        for handle in (asked_by_old, escalated_by_old, never):
            app.cancel(handle.run_id)
        worker.stop()


@pytest.mark.parametrize(
    ("escalate_to", "sla", "problem"),
    [
        (["a"] * 11, 60, "at most 10 queues"),
        (["ok", ""], 60, "1 to 100 characters"),
    ],
)
def test_escalation_chains_are_checked_before_anything_is_recorded(
    app: Aevos, escalate_to: Any, sla: float | None, problem: str
) -> None:
    @app.workflow(name="bad.chain")
    def bad(ctx: WorkflowContext) -> None:
        ctx.ask_human("?", form=[Field.text("x")], sla=sla, escalate_to=escalate_to)

    with pytest.raises(DefinitionError, match=problem):
        bad.run()
    assert app.tasks.list() == []


def test_workers_escalate_overdue_tasks_on_their_own(app: Aevos) -> None:
    @app.workflow(name="urgent")
    def urgent(ctx: WorkflowContext) -> str:
        return str(
            ctx.ask_human("Urgent", form=[Field.text("answer")], sla=0.2, escalate_to="leads")[
                "answer"
            ]
        )

    handle = urgent.start()
    worker = app.worker()
    worker.escalation_interval = 0.05
    worker.start()
    try:
        wait_for(lambda: any(t.queue == "leads" for t in app.tasks.list(run_id=handle.run_id)))
        (task,) = app.tasks.list(run_id=handle.run_id)
        app.tasks.submit(task.task_id, {"answer": "done"}, actor=ALICE)
        assert handle.result(timeout=15) == "done"
    finally:
        worker.stop()


def test_nobody_deciding_in_time_raises_task_expired_in_the_workflow(app: Aevos) -> None:
    @app.workflow(name="patient")
    def patient(ctx: WorkflowContext) -> str:
        try:
            return str(ctx.ask_human("Quick", form=[Field.text("answer")], timeout=0.5)["answer"])
        except TaskExpiredError:
            return "default path"

    assert patient.run() == "default path"  # inline: waits in this thread
    (task,) = app.tasks.list(status=[TaskStatus.EXPIRED])
    with pytest.raises(TaskConflictError, match="in time"):
        app.tasks.submit(task.task_id, {"answer": "late"}, actor=ALICE)
    assert [r.action for r in app.audit.query("default", action="task.expired")] == ["task.expired"]


def test_an_inline_run_waits_in_its_thread_and_resumes_on_submission(app: Aevos) -> None:
    @app.workflow(name="inline")
    def inline(ctx: WorkflowContext, n: int) -> int:
        decision = ctx.ask_human("Approve?", form=[Field.boolean("ok")], case={"n": n})
        return n if decision["ok"] else -n

    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(inline.run(7)))
    thread.start()
    wait_for(lambda: bool(app.tasks.list()))
    (task,) = app.tasks.list()
    app.tasks.submit(task.task_id, {"ok": "false"}, actor=ALICE)
    thread.join(15)
    assert results == [-7]


def test_async_workflows_ask_too(app: Aevos) -> None:
    @app.workflow(name="asyncask")
    async def asyncask(ctx: WorkflowContext) -> str:
        decision = await ctx.ask_human_async("Name?", form=[Field.text("name")])
        return f"hello {decision['name']}"

    handle = app.start("asyncask")
    worker = app.worker().start()
    try:
        task = _open_task(app, handle.run_id)
        app.tasks.submit(task.task_id, {"name": "ada"}, actor=ALICE)
        assert handle.result(timeout=15) == "hello ada"
    finally:
        worker.stop()


def test_the_wait_survives_a_restart_of_every_process(make_app: Callable[..., Aevos]) -> None:
    def build(app: Aevos) -> None:
        @app.workflow(name="slow-review")
        def slow(ctx: WorkflowContext, amount: int) -> dict[str, Any]:
            decision: HumanDecision = ctx.ask_human(
                "Approve the refund?",
                form=[Field.choice("verdict", ["approve", "deny"])],
                suggestion={"verdict": "approve"},
                case={"amount": amount},
                role="admin",
            )
            return {"verdict": decision["verdict"], "amount": amount}

    first = make_app(code_version="v1")
    build(first)
    handle = first.start("slow-review", 120)
    worker = first.worker().start()
    wait_for(lambda: handle.status() is RunStatus.WAITING)
    worker.stop()
    first.close()

    second = make_app(code_version="v1")  # a new process, days later
    build(second)
    (task,) = second.tasks.list(roles=["admin"])
    assert task.role == "admin" and task.case == {"amount": 120}
    second.tasks.submit(task.task_id, {"verdict": "deny"}, actor="admin:ada#t3")
    worker = second.worker().start()
    try:
        assert second.handle(handle.run_id).result(timeout=15) == {"verdict": "deny", "amount": 120}
    finally:
        worker.stop()


def test_many_reviewers_pressing_next_each_get_a_different_task(app: Aevos) -> None:
    @app.workflow(name="bulk")
    def bulk(ctx: WorkflowContext, n: int) -> int:
        return int(
            ctx.ask_human(f"case {n}", form=[Field.number("score")], priority=n % 3)["score"]
        )

    handles = [app.start("bulk", n) for n in range(12)]
    worker = app.worker(concurrency=4).start()
    try:
        wait_for(lambda: len(app.tasks.list(status=[TaskStatus.OPEN])) == 12)
        claimed: list[str] = []
        lock = threading.Lock()

        def reviewer(name: str) -> None:
            while (task := app.tasks.claim_next(actor=name, roles=["reviewer"])) is not None:
                with lock:
                    claimed.append(task.task_id)
                app.tasks.submit(task.task_id, {"score": 1}, actor=name)

        threads = [threading.Thread(target=reviewer, args=(f"reviewer:r{i}#x",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(claimed) == sorted({t.task_id for t in app.tasks.list(limit=100)})
        assert len(claimed) == 12
        assert [h.result(timeout=15) for h in handles] == [1] * 12
    finally:
        worker.stop()


def test_inbox_order_is_priority_then_age(app: Aevos) -> None:
    @app.workflow(name="ordered")
    def ordered(ctx: WorkflowContext, n: int, priority: int) -> None:
        ctx.ask_human(f"case {n}", form=[Field.text("x")], priority=priority)

    for n, priority in enumerate([0, 5, 0, 5]):
        app.start("ordered", n, priority)
    worker = app.worker(concurrency=1).start()  # tasks are created in run order
    try:
        wait_for(lambda: len(app.tasks.list()) == 4)
        assert [t.title for t in app.tasks.list()] == ["case 1", "case 3", "case 0", "case 2"]
    finally:
        for run in app.list_runs():
            app.cancel(run.run_id)
        worker.stop()


def test_a_bad_request_in_the_workflow_is_a_definition_error_before_anything_is_recorded(
    app: Aevos,
) -> None:
    @app.workflow(name="bad")
    def bad(ctx: WorkflowContext, which: str) -> None:
        if which == "role":
            ctx.ask_human("x", form=[Field.text("a")], role="janitor")
        elif which == "suggestion":
            ctx.ask_human("x", form=[Field.text("a")], suggestion={"b": 1})
        elif which == "sla":
            ctx.ask_human("x", form=[Field.text("a")], sla=-1)
        elif which == "priority":
            ctx.ask_human("x", form=[Field.text("a")], priority=2**31)
        else:
            ctx.ask_human("x", form=[])

    for which in ("role", "suggestion", "sla", "priority", "form"):
        with pytest.raises(DefinitionError):
            bad.run(which)
    assert app.tasks.list() == []
    with pytest.raises(DefinitionError):
        Field.choice("c", [])
    with pytest.raises(DefinitionError):
        Field("bad name!")


def test_the_cli_lists_shows_and_escalates_tasks(app: Aevos, database_url: str) -> None:
    import json

    from typer.testing import CliRunner

    from aevos.cli import cli

    @app.workflow(name="clitask")
    def clitask(ctx: WorkflowContext) -> None:
        ctx.ask_human("Check this", form=[Field.text("x")], case={"n": 1}, sla=0.05)

    handle = app.start("clitask")
    worker = app.worker()
    worker.escalation_interval = 3600.0  # the CLI escalates, not the worker
    worker.start()
    try:
        task = _open_task(app, handle.run_id)
        runner = CliRunner()
        base = ["--database-url", database_url, "tasks"]
        listed = runner.invoke(cli, [*base, "list", "--status", "open", "--json"])
        assert listed.exit_code == 0, listed.output
        (row,) = [json.loads(line) for line in listed.output.splitlines()]
        assert row["task_id"] == task.task_id and row["case"] == {"n": 1}
        shown = runner.invoke(cli, [*base, "show", task.task_id])
        assert json.loads(shown.output)["title"] == "Check this"
        time.sleep(0.1)  # past the SLA
        escalated = runner.invoke(cli, [*base, "escalate"])
        assert "1 task(s) escalated" in escalated.output
        assert app.tasks.get(task.task_id).escalated
        missing = runner.invoke(cli, [*base, "show", "nope"])
        assert missing.exit_code != 0 and "task_not_found" in missing.output
        bad = runner.invoke(cli, [*base, "list", "--status", "bogus"])
        assert bad.exit_code != 0 and "--status 'bogus'" in bad.output
        table = runner.invoke(cli, [*base, "list"])
        assert table.exit_code == 0 and task.task_id in table.output
    finally:
        app.cancel(handle.run_id)
        worker.stop()


def test_a_suggested_label_is_compared_as_the_form_would_take_it(app: Aevos) -> None:
    @app.workflow(name="labels")
    def labels(ctx: WorkflowContext) -> bool:
        decision = ctx.ask_human(
            "Fraud?",
            form=[Field.choice("fraud", ["0", "1"]), Field.number("score", required=False)],
            suggestion={"fraud": 1, "score": "0.5"},  # a model's int label, a numeric string
        )
        return decision.overridden

    handle = app.start("labels")
    worker = app.worker().start()
    try:
        task = _open_task(app, handle.run_id)
        assert task.suggestion == {"fraud": "1", "score": 0.5}
        app.tasks.submit(task.task_id, {"fraud": "1", "score": 0.5}, actor=ALICE)
        assert handle.result(timeout=15) is False
    finally:
        worker.stop()
    assert app.tasks.feedback()[0].overridden is False


def test_forking_between_a_question_and_its_answer_asks_again(app: Aevos) -> None:
    @app.workflow(name="ask-once")
    def ask_once(ctx: WorkflowContext) -> str:
        return str(ctx.ask_human("Verdict?", form=[Field.text("v")])["v"])

    decided = app.start("ask-once")
    cancelled = app.start("ask-once")
    worker = app.worker().start()
    try:
        first = _open_task(app, decided.run_id)
        app.tasks.submit(first.task_id, {"v": "original"}, actor=ALICE)
        assert decided.result(timeout=15) == "original"
        _open_task(app, cancelled.run_id)
        app.cancel(cancelled.run_id)
        for source in (decided, cancelled):
            # Position 1 is the answer: "redo the decision" on the current code.
            fork = app.fork(source.run_id, from_step=1)
            task = _open_task(app, fork.run_id)
            assert task.task_id == f"{fork.run_id}.0" and task.status is TaskStatus.OPEN
            app.tasks.submit(task.task_id, {"v": "again"}, actor=BOB)
            assert fork.result(timeout=15) == "again"
    finally:
        worker.stop()


def test_a_task_cancelled_under_a_live_run_fails_the_wait_instead_of_hanging(app: Aevos) -> None:
    import sqlalchemy as sa

    from aevos.storage.schema import tasks

    @app.workflow(name="orphan")
    def orphan(ctx: WorkflowContext) -> str:
        try:
            return str(ctx.ask_human("?", form=[Field.text("v")])["v"])
        except TaskConflictError as exc:
            return f"gave up: {exc.status}"

    handle = app.start("orphan")
    worker = app.worker().start()
    try:
        task = _open_task(app, handle.run_id)
        with app.store._tx() as conn:  # closed by an operator's hand, the run left running
            conn.execute(sa.update(tasks).values(status="CANCELLED"))
        # The run is WAITING: wake it as a submission would.
        with app.store._tx() as conn:
            app.store._wake(conn, handle.run_id, time.time())
        assert handle.result(timeout=15) == "gave up: CANCELLED"
        assert app.tasks.get(task.task_id).status is TaskStatus.CANCELLED
    finally:
        worker.stop()


def test_moving_a_task_to_another_queue_in_the_code_keeps_waiting_runs_replayable(
    make_app: Callable[..., Aevos],
) -> None:
    def build(app: Aevos, queue: str) -> None:
        @app.workflow(name="routed")
        def routed(ctx: WorkflowContext) -> str:
            return str(ctx.ask_human("?", form=[Field.text("v")], queue=queue)["v"])

    before = make_app(code_version="v1")
    build(before, "old-queue")
    handle = before.start("routed")
    worker = before.worker().start()
    wait_for(lambda: handle.status() is RunStatus.WAITING)
    worker.stop()
    before.close()

    after = make_app(code_version="v1")
    build(after, "new-queue")  # a deploy renamed the inbox; the waiting run keeps its task
    (task,) = after.tasks.list()
    assert task.queue == "old-queue"
    after.tasks.submit(task.task_id, {"v": "fine"}, actor=ALICE)
    worker = after.worker().start()
    try:
        assert after.handle(handle.run_id).result(timeout=15) == "fine"
    finally:
        worker.stop()
