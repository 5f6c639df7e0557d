"""NATS JetStream triggers against a private nats-server, on SQLite and PostgreSQL: events
start runs exactly once (through redeliveries and a server killed mid-stream), signal runs by
correlation key, stop pulling when their queue is full, and malformed events are
dead-lettered and replayed after a fix."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.conftest import IN_CI
from tests.nats_support import (
    NATS_SERVER,
    NatsServer,
    add_stream,
    consumer_state,
    publish,
    publish_json,
    wait_for,
)

from aevos import Aevos
from aevos.events.intake import Arrival, Channel
from aevos.storage.schema import events, runs


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if not os.access(NATS_SERVER, os.X_OK):
        problem = f"nats-server not found at {NATS_SERVER} (Debian: apt-get install nats-server)"
        if IN_CI:
            pytest.fail(problem + " (CI must run the NATS tests)")
        pytest.skip(problem)
    server = NatsServer(tmp_path / "jetstream").start()
    yield server
    server.stop()


def _runs(app: Aevos, prefix: str) -> list[Any]:
    with app.store._tx() as conn:
        return list(
            conn.execute(
                sa.select(runs.c.run_id, runs.c.idempotency_key, runs.c.status).where(
                    runs.c.idempotency_key.like(f"{prefix}%")
                )
            ).all()
        )


def _events(app: Aevos, status: str) -> int:
    with app.store._tx() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    events.c.channel == "nats", events.c.status == status
                )
            ).scalar_one()
        )


def test_events_start_runs_exactly_once(app: Aevos, nats_server: NatsServer) -> None:
    add_stream(nats_server.url, "ORDERS", ["orders.>"])

    @app.workflow(name="fulfil")
    def fulfil(ctx: Any, order: str) -> str:
        return order

    app.nats_trigger(
        "orders",
        stream="ORDERS",
        subject="orders.created",
        workflow="fulfil",
        key="order",
        map=lambda e: {"order": e["order"]},
        servers=[nats_server.url],
    )
    # o-3 twice: two messages, one declared key, so one run.
    sent = [{"order": f"o-{i}"} for i in range(20)] + [{"order": "o-3"}]
    publish_json(nats_server.url, "orders.created", sent)
    worker = app.worker(concurrency=4).start()
    try:
        wait_for(lambda: _events(app, "ACCEPTED") + _events(app, "DUPLICATE") == 21, what="events")
        wait_for(lambda: consumer_state(nats_server.url, "ORDERS", "aevos-orders") == (0, 0))
        found = _runs(app, "nats:orders:")
        assert sorted(r.idempotency_key for r in found) == sorted(
            f"nats:orders:o-{i}" for i in range(20)
        )
        assert _events(app, "ACCEPTED") == 20 and _events(app, "DUPLICATE") == 1
        wait_for(lambda: all(r.status == "SUCCEEDED" for r in _runs(app, "nats:orders:")))
    finally:
        worker.stop()


def test_kill_and_restart_nats_mid_stream_every_event_once(
    app: Aevos, nats_server: NatsServer
) -> None:
    add_stream(nats_server.url, "JOBS", ["jobs.>"])

    @app.workflow(name="job")
    def job(ctx: Any, event: dict[str, Any]) -> int:
        return int(event["n"])

    app.nats_trigger(
        "jobs", stream="JOBS", subject="jobs.new", workflow="job", servers=[nats_server.url]
    )
    total = 150
    published = threading.Event()

    async def publish_through_outage() -> None:
        import nats

        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        for n in range(total):
            # Nats-Msg-Id: a publish retried after the outage is stored once by the stream.
            while True:
                try:
                    await js.publish(
                        "jobs.new",
                        json.dumps({"n": n}).encode(),
                        headers={"Nats-Msg-Id": f"job-{n}"},
                        timeout=1,
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.1)
        await nc.close()
        published.set()

    publisher = threading.Thread(target=lambda: asyncio.run(publish_through_outage()))
    worker = app.worker(concurrency=4).start()
    publisher.start()
    try:
        wait_for(lambda: len(_runs(app, "nats:jobs:")) >= total // 3, what="a third handled")
        nats_server.kill()
        nats_server.start()
        publisher.join(120)
        assert published.is_set()
        wait_for(lambda: len(_runs(app, "nats:jobs:")) >= total, timeout=120, what="all runs")
        wait_for(lambda: consumer_state(nats_server.url, "JOBS", "aevos-jobs") == (0, 0))
        found = _runs(app, "nats:jobs:")
        assert len(found) == total
        assert sorted(r.idempotency_key for r in found) == sorted(
            f"nats:jobs:job-{n}" for n in range(total)
        )
        assert _events(app, "ACCEPTED") == total  # each started once; redeliveries DUPLICATE
    finally:
        worker.stop()


def test_malformed_events_are_dead_lettered_and_replayed_after_a_fix(
    app: Aevos, nats_server: NatsServer
) -> None:
    add_stream(nats_server.url, "CLAIMS", ["claims.>"])

    @app.workflow(name="assess")
    def assess(ctx: Any, claim: str) -> str:
        return claim

    trigger = app.nats_trigger(
        "claims",
        stream="CLAIMS",
        subject="claims.new",
        workflow="assess",
        map=lambda e: {"claim": e["claim"]},
        servers=[nats_server.url],
    )
    publish(
        nats_server.url,
        "claims.new",
        [
            (None, b"{not json"),
            (None, json.dumps({"id": "c-1"}).encode()),  # the mapping expects "claim"
            (None, json.dumps({"claim": "c-2"}).encode()),
        ],
    )
    worker = app.worker(concurrency=2).start()
    try:
        wait_for(lambda: app.intake.count("default") == 2, what="two dead letters")
        # Dead-lettered events are acknowledged: nothing is left to redeliver.
        wait_for(lambda: consumer_state(nats_server.url, "CLAIMS", "aevos-claims") == (0, 0))
    finally:
        worker.stop()
    letters = sorted(app.intake.list("default"), key=lambda letter: letter.id)
    assert [letter.code for letter in letters] == ["invalid_event", "event_mapping_failed"]
    assert all(letter.channel is Channel.NATS for letter in letters)
    assert "raised KeyError" in letters[1].reason and "c-1" not in letters[1].reason
    assert letters[1].meta["stream"] == "CLAIMS"

    # Before the fix, a replay fails again and the letter stays DEAD with its reason.
    outcome = app.intake.replay("default", [letters[1].id], actor="test")
    assert not outcome[0].replayed and outcome[0].code == "event_mapping_failed"
    # The fix: the mapping learns the sender's field.
    app.nats_triggers["claims"] = replace(
        trigger, map=lambda e: {"claim": e.get("claim") or e["id"]}
    )
    first = app.intake.replay("default", [letters[0].id, letters[1].id], actor="test")
    assert [o.replayed for o in first] == [False, True]
    assert first[0].code == "invalid_event"  # not JSON stays not JSON
    again = app.intake.replay("default", [letters[1].id], actor="test")
    assert again[0].run_id == first[1].run_id  # replaying twice starts one run
    assert app.get_run(first[1].run_id or "").tenant == "default"
    assert len(_runs(app, "nats:claims:")) == 2  # c-2 and the replayed c-1
    actions = [r.action for r in app.audit.query("default", limit=1000)]
    assert actions.count("event.dead_lettered") == 2
    assert "event.replayed" in actions and "event.replay_failed" in actions


def test_events_signal_a_running_workflow_by_correlation_key(
    app: Aevos, nats_server: NatsServer
) -> None:
    add_stream(nats_server.url, "PAY", ["pay.>"])

    @app.workflow(name="order")
    def order(ctx: Any) -> Any:
        return ctx.wait_signal("paid", timeout=60)

    trigger = app.nats_trigger(
        "payments",
        stream="PAY",
        subject="pay.done",
        signal="paid",
        correlate="order",
        map=lambda e: {"amount": e["amount"]},
        servers=[nats_server.url],
    )
    handle = order.options(idempotency_key="order-7").start()
    publish_json(nats_server.url, "pay.done", [{"order": "order-7", "amount": 12}])
    publish_json(nats_server.url, "pay.done", [{"order": "order-404", "amount": 1}])
    worker = app.worker(concurrency=2).start()
    try:
        assert handle.result(timeout=60) == {"amount": 12}
        wait_for(lambda: app.intake.count("default") == 1, what="the uncorrelated event")
    finally:
        worker.stop()
    (letter,) = app.intake.list("default")
    assert letter.code == "no_correlated_run"
    # A redelivery of the delivered signal is a duplicate and queues nothing.
    arrival = Arrival(
        Channel.NATS,
        "payments",
        "default",
        "PAY:1",
        json.dumps({"order": "order-7", "amount": 12}).encode(),
    )
    assert app.triggers.handle(trigger, arrival) == "DUPLICATE"


def test_a_full_queue_stops_pulling(app: Aevos, nats_server: NatsServer) -> None:
    add_stream(nats_server.url, "SLOW", ["slow.>"])
    release = threading.Event()

    @app.workflow(name="slow")
    def slow(ctx: Any, n: int) -> int:
        return n

    def blocking(event: dict[str, Any]) -> dict[str, Any]:
        release.wait(60)
        return {"n": event["n"]}

    app.nats_trigger(
        "slow",
        stream="SLOW",
        subject="slow.in",
        workflow="slow",
        map=blocking,
        max_pending=3,
        batch=2,
        concurrency=5,
        servers=[nats_server.url],
    )
    publish_json(nats_server.url, "slow.in", [{"n": n} for n in range(10)])
    worker = app.worker(concurrency=2).start()
    try:
        (runner,) = worker.companions
        wait_for(lambda: runner.in_hand["slow"] == 3, what="a full queue")  # type: ignore[attr-defined]
        # Three in hand (five handler threads could take more), the rest left in the stream.
        assert consumer_state(nats_server.url, "SLOW", "aevos-slow") == (7, 3)
        assert runner.in_hand["slow"] == 3  # type: ignore[attr-defined]
        release.set()
        wait_for(lambda: len(_runs(app, "nats:slow:")) == 10, what="all ten")
    finally:
        release.set()
        worker.stop()
