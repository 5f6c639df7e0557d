"""The outbox: ``publish`` commits with the work that published, the relay sends it after.

On both backends, with a private nats-server (JetStream, a temporary store, a free port)
and a real HTTP receiver on loopback that checks signatures with aevos's own webhook
verifier.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.apps import outbox_app
from tests.apps.faults import PrivatePostgres, free_port, postgres_bin
from tests.apps.natsd import PrivateNats

from aevos import Aevos
from aevos.connectors import NatsDestination, OutboxRelay, WebhookDestination
from aevos.errors import DefinitionError, StepFailedError
from aevos.events.webhook import WebhookSource
from aevos.kernel.retry import RetryPolicy
from aevos.kernel.step import StepContext
from aevos.storage.outbox import OutboxRow

ROOT = Path(__file__).resolve().parent.parent
QUICK = RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=0.0)


@pytest.fixture
def natsd(tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path / "jetstream").start()
    try:
        server.add_stream("ORDERS", ["orders.>"])
        yield server
    finally:
        server.stop()


def outbox(app: Aevos, **filters: Any) -> list[OutboxRow]:
    with app.store.reading() as uow:
        return uow.outbox.find(**filters)


def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# -- writing ----------------------------------------------------------------------------------


def test_publish_commits_with_its_position_and_a_replay_adds_nothing(app: Aevos) -> None:
    @app.workflow()
    def notify(ctx: Any, n: int) -> str:
        message_id = ctx.publish("orders.created", {"order": n})
        ctx.sleep(0.5)  # parks (park_after 0.3): the worker executes the run again
        return str(message_id)

    handle = notify.start(1)
    worker = app.worker().start()
    try:
        message_id = handle.result(timeout=60)
    finally:
        worker.stop()
    assert message_id == f"{handle.run_id}/0"
    rows = outbox(app)
    assert [(r.message_id, r.subject, json.loads(r.payload), r.status) for r in rows] == [
        (message_id, "orders.created", {"order": 1}, "PENDING")
    ]
    assert rows[0].run_id == handle.run_id and rows[0].tenant == "default"


def test_only_the_successful_attempt_of_a_step_publishes(app: Aevos) -> None:
    attempts: list[int] = []

    @app.step(retries=QUICK)
    def charge(sctx: StepContext, n: int) -> str:
        attempts.append(sctx.attempt)
        sctx.publish("orders.attempted", {"attempt": sctx.attempt})
        if sctx.attempt < 2:
            raise ConnectionError("the payment service dropped the connection")
        return sctx.publish("orders.charged", {"order": n})

    @app.step()
    def refuse(sctx: StepContext) -> None:
        sctx.publish("orders.refused", {})
        raise ValueError("refused")

    @app.workflow()
    def order(ctx: Any, n: int) -> str:
        charged = charge(ctx, n)
        with contextlib.suppress(StepFailedError):
            refuse(ctx)
        return charged

    handle = order.options(run_id="order-1").run(5)
    assert attempts == [1, 2]
    assert handle == "order-1/0/1"
    rows = outbox(app)
    assert [(r.message_id, r.subject, json.loads(r.payload)) for r in rows] == [
        ("order-1/0/0", "orders.attempted", {"attempt": 2}),
        ("order-1/0/1", "orders.charged", {"order": 5}),
    ]


def test_an_async_step_publishes_with_its_result(app: Aevos) -> None:
    @app.step()
    async def fetch(sctx: StepContext, n: int) -> int:
        sctx.publish("orders.fetched", {"n": n})
        return n * 2

    @app.workflow()
    async def flow(ctx: Any, n: int) -> int:
        return await fetch(ctx, n)

    assert flow.options(run_id="async-1").run(21) == 42
    assert [(r.message_id, json.loads(r.payload)) for r in outbox(app)] == [
        ("async-1/0/0", {"n": 21})
    ]


def test_bad_subjects_and_payloads_are_refused_before_anything_is_recorded(app: Aevos) -> None:
    @app.workflow()
    def bad(ctx: Any, subject: str) -> None:
        ctx.publish(subject, {"x": 1})

    for subject in ("", "orders.*", "orders.>", "has space", "a..b", "x" * 301):
        with pytest.raises(Exception) as caught:
            bad.run(subject)
        assert isinstance(caught.value.__cause__ or caught.value, DefinitionError) or (
            "publish subject" in str(caught.value)
        ), subject

    @app.workflow()
    def unencodable(ctx: Any) -> None:
        ctx.publish("orders.bad", {"x": object()})

    with pytest.raises(Exception, match=r"payload published on 'orders\.bad'"):
        unencodable.run()
    assert outbox(app) == []


# -- NATS JetStream ---------------------------------------------------------------------------


def test_a_run_killed_before_its_step_commits_publishes_nothing_then_exactly_once(
    database_url: str, tmp_path: Path, natsd: PrivateNats
) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.outbox_app", database_url, "run-k", str(hold)],
        cwd=ROOT,
        env=env,
    )
    try:
        reached = Path(str(hold) + ".reached")
        wait_for(lambda: reached.exists() or child.poll() is not None, "the step to publish")
        assert child.poll() is None, "the child process ended before the step published"
        assert reached.read_text() == "run-k/0/0"  # published inside the step, not committed
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)

    app = outbox_app.build(database_url)
    try:
        relay = app.outbox_relay([NatsDestination(natsd.url, subjects="orders.>")])
        assert outbox(app) == []
        assert relay.run_once().sent == 0
        assert natsd.messages("ORDERS", ">") == []

        worker = app.worker().start()  # takes the dead process's run over once its lease lapses
        try:
            assert app.handle("run-k").result(timeout=90) == "run-k/0/0"
        finally:
            worker.stop()
        assert relay.run_once().sent == 2
        assert relay.run_once().sent == 0
        assert [m.status for m in outbox(app)] == ["SENT", "SENT"]
        got = natsd.messages("ORDERS", ">")
        assert sorted((msg_id, json.loads(data)) for msg_id, data in got) == [
            ("run-k/0/0", {"order": 7}),
            ("run-k/1", {"order": 7}),
        ]
    finally:
        app.close()


def test_a_relay_killed_after_sending_is_deduplicated_downstream(
    app: Aevos, natsd: PrivateNats
) -> None:
    @app.workflow()
    def announce(ctx: Any, n: int) -> None:
        for i in range(n):
            ctx.publish("orders.announced", {"i": i})

    announce.run(3)
    # A relay process takes the three, publishes them and is SIGKILLed before marking them.
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    died = subprocess.run(
        [sys.executable, "-m", "tests.apps.outbox_app", "relay", app.database_url, natsd.url],
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert died.returncode == -signal.SIGKILL
    assert len(natsd.messages("ORDERS", "orders.announced")) == 3
    assert {(m.status, m.attempts) for m in outbox(app)} == {("PENDING", 1)}

    second = OutboxRelay(app.store, [NatsDestination(natsd.url, subjects="orders.>")])
    try:
        wait_for(lambda: second.run_once().sent == 3, "the lease to lapse and the resend")
    finally:
        second.close()
    rows = outbox(app)
    assert [r.status for r in rows] == ["SENT"] * 3
    assert [r.attempts for r in rows] == [2, 2, 2]
    got = natsd.messages("ORDERS", "orders.announced")
    assert sorted(json.loads(data)["i"] for _, data in got) == [0, 1, 2]  # once each
    assert {msg_id for msg_id, _ in got} == {r.message_id for r in rows}


def test_nats_unreachable_is_retried_then_marked_dead_with_its_reason(app: Aevos) -> None:
    @app.workflow()
    def announce(ctx: Any) -> None:
        ctx.publish("orders.lost", {"x": 1})
        ctx.publish("billing.unrouted", {"x": 2})

    announce.options(run_id="r-dead").run()
    port = free_port()  # nothing listens here
    relay = app.outbox_relay(
        [NatsDestination(f"nats://127.0.0.1:{port}", subjects="orders.>", timeout=1.0)],
        retry=RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=0.0),
    )
    first = relay.run_once()
    assert (first.sent, first.retried, first.dead) == (0, 1, 1)
    pending = outbox(app, status="PENDING")
    assert len(pending) == 1 and pending[0].last_error is not None
    assert f"127.0.0.1:{port}" in pending[0].last_error
    second = relay.run_once()
    assert (second.sent, second.retried, second.dead) == (0, 0, 1)
    dead = {r.subject: r.last_error for r in relay.messages(status="DEAD")}
    assert dead["billing.unrouted"] == "no destination takes subject 'billing.unrouted'"
    assert dead["orders.lost"] is not None
    assert dead["orders.lost"].startswith(
        f"gave up after 2 attempts: NATS at nats://127.0.0.1:{port}: "
    )
    # Once the cause is fixed, an operator sends them again.
    assert relay.requeue("default", ["r-dead/0"]) == 1
    assert [r.message_id for r in outbox(app, status="PENDING")] == ["r-dead/0"]


# -- signed webhooks --------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server that checks each delivery's signature with aevos's own
    incoming-webhook verifier and answers with the next scripted status."""

    def __init__(self, secret: str, statuses: list[int]) -> None:
        self.source = WebhookSource.declare("partner", workflow="unused", secret=secret)
        self.statuses = statuses
        self.deliveries: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = self.headers["X-Aevos-Event-Id"]
                try:
                    receiver.source.verify(
                        self.headers["X-Aevos-Signature"], body, event_id=event_id
                    )
                    verified = True
                except Exception:
                    verified = False
                receiver.deliveries.append(
                    {
                        "id": event_id,
                        "subject": self.headers["X-Aevos-Subject"],
                        "body": json.loads(body),
                        "verified": verified,
                    }
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status if verified else 401)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/aevos"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_relay_signs_retries_and_marks_refusals_dead(app: Aevos) -> None:
    secret = "whsec-outbox-test-0123456789"
    receiver = Receiver(secret, statuses=[503, 200, 400])
    try:

        @app.workflow()
        def settle(ctx: Any) -> None:
            ctx.publish("invoices.settled", {"invoice": 1})
            ctx.publish("invoices.disputed", {"invoice": 2})

        settle.options(run_id="inv").run()
        relay = app.outbox_relay(
            [WebhookDestination(receiver.url, secret=secret, subjects="invoices.>")],
            retry=QUICK,
        )
        first = relay.run_once()  # 503 (retried), then 200
        assert (first.sent, first.retried, first.dead) == (1, 1, 0)
        second = relay.run_once()  # the retry: 400, a refusal
        assert (second.sent, second.retried, second.dead) == (0, 0, 1)
        assert all(d["verified"] for d in receiver.deliveries)
        assert [(d["id"], d["subject"], d["body"]) for d in receiver.deliveries] == [
            ("inv/0", "invoices.settled", {"invoice": 1}),
            ("inv/1", "invoices.disputed", {"invoice": 2}),
            ("inv/0", "invoices.settled", {"invoice": 1}),
        ]
        by_id = {r.message_id: r for r in outbox(app)}
        assert by_id["inv/1"].status == "SENT"
        assert by_id["inv/0"].status == "DEAD"
        reason = by_id["inv/0"].last_error or ""
        assert "HTTP 400" in reason and "/hooks/aevos" in reason
        assert secret not in reason
    finally:
        receiver.close()


def test_a_wrong_secret_is_refused_by_the_receiver(app: Aevos) -> None:
    receiver = Receiver("the-receivers-secret", statuses=[])
    try:

        @app.workflow()
        def settle(ctx: Any) -> None:
            ctx.publish("invoices.settled", {"invoice": 1})

        settle.run()
        relay = app.outbox_relay([WebhookDestination(receiver.url, secret="not-the-secret")])
        assert relay.run_once().dead == 1
        assert receiver.deliveries[0]["verified"] is False
        assert "HTTP 401" in (relay.messages(status="DEAD")[0].last_error or "")
    finally:
        receiver.close()


def test_operators_see_dead_messages_with_their_reason_and_requeue_them(
    database_url: str,
) -> None:
    from typer.testing import CliRunner

    from aevos.cli.main import cli

    app = Aevos(database_url)
    try:

        @app.workflow()
        def announce(ctx: Any) -> None:
            ctx.publish("billing.unrouted", {"x": 1})

        announce.options(run_id="op", tenant="acme").run()
        relay = app.outbox_relay(
            [WebhookDestination("http://127.0.0.1:9/x", secret="s", subjects="orders.>")]
        )
        assert relay.run_once().dead == 1
    finally:
        app.close()

    runner = CliRunner()

    def aevos(*args: str) -> Any:
        return runner.invoke(cli, ["--database-url", database_url, *args])

    listed = aevos("outbox", "list", "--tenant", "acme", "--status", "dead", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["message_id"], r["status"], r["last_error"]) for r in rows] == [
        ("op/0", "DEAD", "no destination takes subject 'billing.unrouted'")
    ]
    other = aevos("outbox", "list", "--tenant", "other", "--json")
    assert other.exit_code == 0 and other.stdout == ""  # another tenant sees none of it
    bad = aevos("outbox", "list", "--tenant", "acme", "--status", "LOST")
    assert bad.exit_code == 2 and "must be PENDING, SENT or DEAD" in bad.output
    requeued = aevos("outbox", "requeue", "op/0", "--tenant", "acme")
    assert requeued.exit_code == 0 and "1 message(s) requeued" in requeued.stdout
    app = Aevos(database_url)
    try:
        assert [r.status for r in app.outbox.messages("acme")] == ["PENDING"]
        trail = app.audit.query("acme", action="outbox.requeued")
        assert [(r.data["message_ids"], r.data["requeued"]) for r in trail] == [(["op/0"], 1)]
    finally:
        app.close()


def test_concurrent_relays_send_each_message_once(app: Aevos, natsd: PrivateNats) -> None:
    @app.workflow()
    def announce(ctx: Any, n: int) -> None:
        for i in range(n):
            ctx.publish("orders.bulk", {"i": i})

    announce.run(60)
    relays = [
        OutboxRelay(app.store, [NatsDestination(natsd.url, subjects="orders.>")], batch=7)
        for _ in range(3)
    ]
    reports: list[int] = []
    lock = threading.Lock()

    def relay_all(relay: OutboxRelay) -> None:
        report = relay.run_once(rounds=100)
        with lock:
            reports.append(report.sent)

    threads = [threading.Thread(target=relay_all, args=(r,)) for r in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for relay in relays:
        relay.close()
    # Each message was taken by one relay only (the lease; SKIP LOCKED on PostgreSQL).
    assert sum(reports) == 60
    assert {(r.status, r.attempts) for r in outbox(app)} == {("SENT", 1)}
    got = natsd.messages("ORDERS", "orders.bulk")
    assert sorted(json.loads(data)["i"] for _, data in got) == list(range(60))


def test_a_nats_server_restart_is_retried_through(app: Aevos, natsd: PrivateNats) -> None:
    @app.workflow()
    def announce(ctx: Any) -> None:
        ctx.publish("orders.restart", {"x": 1})

    announce.options(run_id="rs").run()
    relay = app.outbox_relay(
        [NatsDestination(natsd.url, subjects="orders.>", timeout=1.0)],
        retry=RetryPolicy(max_attempts=50, initial_interval=0.0, jitter=0.0),
    )
    natsd.stop()
    down = relay.run_once()
    assert (down.sent, down.retried) == (0, 1)
    [row] = outbox(app)
    assert row.status == "PENDING" and row.last_error is not None
    assert row.last_error.startswith(f"NATS at {natsd.url}: ")
    natsd.start()  # the same port and store: the stream is still there
    wait_for(lambda: relay.run_once().sent == 1, "the relay to send after the restart")
    assert [r.status for r in outbox(app)] == ["SENT"]
    got = natsd.messages("ORDERS", "orders.restart")
    assert [msg_id for msg_id, _ in got] == ["rs/0"]


def test_credentials_stay_out_of_dead_reasons_audit_records_and_logs(
    app: Aevos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "nats-Token-Not-To-Leak-31337"
    query_key = "hook-Key-Not-To-Leak-4242"
    server = PrivateNats(tmp_path / "js", "--auth", "the-servers-own-token").start()

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = f"unknown hook {self.path}".encode()  # quotes the query back
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    try:

        @app.workflow()
        def announce(ctx: Any) -> None:
            ctx.publish("orders.secret", {"x": 1})
            ctx.publish("hooks.secret", {"x": 2})

        announce.options(run_id="cred").run()
        monkeypatch.setenv("NATS_TOKEN", token)
        caplog.set_level(logging.DEBUG)
        relay = app.outbox_relay(
            [
                NatsDestination(server.url, subjects="orders.>", token_env="NATS_TOKEN", timeout=1),
                WebhookDestination(
                    f"http://127.0.0.1:{echo.server_address[1]}/in?key={query_key}",
                    secret_env="NATS_TOKEN",
                    subjects="hooks.>",
                ),
            ],
            retry=RetryPolicy(max_attempts=1),
        )
        assert relay.run_once().dead == 2
        dead = {r.subject: r.last_error or "" for r in relay.messages(status="DEAD")}
        assert dead["orders.secret"].startswith(f"gave up after 1 attempts: NATS at {server.url}")
        assert "HTTP 403" in dead["hooks.secret"] and "key=***" in dead["hooks.secret"]
        trail = app.audit.query("default", action="outbox.dead")
        assert sorted(r.data["reason"] for r in trail) == sorted(dead.values())
        stored = json.dumps([[r.data for r in trail], dead, [str(r) for r in outbox(app)]])
        # aevos's own log lines (httpx's INFO "HTTP Request" line quotes the URL it was given:
        # docs/integrations.md says to authenticate webhooks by their secret, not a query).
        ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("aevos"))
        assert "is DEAD" in ours
        for secret in (token, query_key):
            assert secret not in stored
            assert secret not in ours
            assert token not in caplog.text
    finally:
        echo.shutdown()
        echo.server_close()
        server.stop()


@pytest.mark.slow
def test_a_postgres_restart_under_a_busy_relay_loses_and_doubles_nothing(
    natsd: PrivateNats,
) -> None:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    server = PrivatePostgres()
    try:
        app = Aevos(server.url, lease_seconds=5.0, park_after=0.3, poll_interval=0.02)

        @app.workflow(name="announce")
        def announce(ctx: Any, n: int) -> None:
            ctx.publish("orders.pg", {"n": n})
            ctx.sleep(0.4)  # parks: the run is executed again, its publish replayed
            ctx.publish("orders.pg", {"n": n, "after": True})

        app.outbox_relay([NatsDestination(natsd.url, subjects="orders.>")])
        worker = app.worker(concurrency=4)
        worker.escalation_interval = 0.1  # the relay chore's interval
        worker.start()
        try:
            handles = [announce.start(n) for n in range(20)]
            wait_for(lambda: len(outbox(app)) >= 10, "some messages to be written")
            server.restart("fast")  # runs, parks and the relay are busy meanwhile

            def all_sent() -> bool:
                try:
                    rows = outbox(app)
                except Exception:  # the store reconnects on the next call
                    return False
                return len(rows) == 40 and {r.status for r in rows} == {"SENT"}

            wait_for(all_sent, "every message to be sent", timeout=180)
            assert all(h.result(timeout=60) is None for h in handles)
        finally:
            worker.stop()
            app.close()
        got = natsd.messages("ORDERS", "orders.pg")
        assert len(got) == 40  # none lost, none twice
        assert len({msg_id for msg_id, _ in got}) == 40
        assert sorted(
            (json.loads(data)["n"], "after" in json.loads(data)) for _, data in got
        ) == sorted((n, after) for n in range(20) for after in (False, True))
    finally:
        server.close()
