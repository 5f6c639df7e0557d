"""The metrics of queues, schedules and the integrations, on both backends: queue depth and
the age of the oldest queued run per queue, schedule ticks and lateness, and that they add
up across processes (every process's ``/metrics`` reads the shared database, so two worker
processes that each queued runs both report the total).

Runs are real (enqueued through the kernel); their timestamps are then set to known values
so that ages are exact at a fixed scrape time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aevos import Aevos, WorkflowContext
from aevos.server import create_app
from aevos.storage.schema import runs
from aevos.telemetry.metrics import Snapshot, exposition, render

ROOT = Path(__file__).resolve().parents[1]
T0 = 2_000_000_000.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str | bytes) -> Samples:
    body = text.decode() if isinstance(text, bytes) else text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
def app(database_url: str) -> Iterator[Aevos]:
    application = Aevos(database_url)
    application.queue("bulk")
    application.queue("idle")

    @application.workflow(name="job")
    def job(ctx: WorkflowContext, n: int) -> int:
        return n

    yield application
    application.close()


def set_run(app: Aevos, run_id: str, **values: object) -> None:
    with app.store.transaction() as uow:
        uow.conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))


def test_queue_depth_and_oldest_age_per_queue(app: Aevos) -> None:
    job = app.workflow_named("job")
    queued = [job.options(queue="bulk").start(n).run_id for n in range(3)]
    for run_id, ago in zip(queued, (100.0, 50.0, 10.0), strict=True):
        set_run(app, run_id, updated_at=T0 - ago)
    # A run whose timer fell due counts from then; one still sleeping, another tenant's
    # run, and a finished run do not count.
    due = job.start(1).run_id
    set_run(app, due, status="WAITING", wake_at=T0 - 5.0, updated_at=T0 - 500.0)
    sleeping = job.start(2).run_id
    set_run(app, sleeping, status="WAITING", wake_at=T0 + 60.0)
    other = job.options(queue="bulk", tenant="acme").start(3).run_id
    set_run(app, other, updated_at=T0 - 9999.0)
    done = job.options(queue="bulk").start(4).run_id
    set_run(app, done, status="SUCCEEDED", finished_at=T0, updated_at=T0 - 7777.0)
    for name in ("bulk", "idle", "default"):
        app.store.upsert_queue(app.queues[name])

    found = samples(exposition(app.store, app.call_totals, "default", now=T0))
    assert value(found, "aevos_queue_depth", queue="bulk") == 3
    assert value(found, "aevos_queue_oldest_age_seconds", queue="bulk") == 100.0
    assert value(found, "aevos_queue_depth", queue="default") == 1
    assert value(found, "aevos_queue_oldest_age_seconds", queue="default") == 5.0
    assert value(found, "aevos_queue_depth", queue="idle") == 0  # declared, empty: still shown
    assert value(found, "aevos_queue_oldest_age_seconds", queue="idle") == 0.0
    acme = samples(exposition(app.store, app.call_totals, "acme", now=T0))
    assert value(acme, "aevos_queue_depth", queue="bulk") == 1
    assert value(acme, "aevos_queue_oldest_age_seconds", queue="bulk") == 9999.0


def test_schedule_ticks_and_lateness_over_http(app: Aevos) -> None:
    app.schedule("five", "job", cron="*/5 * * * *", args=[1], catch_up=3)
    start = datetime(2026, 6, 1, 10, 0, tzinfo=UTC).timestamp()
    app.schedules.sync(now=start)
    app.schedules.tick(now=start + 3600 + 42)  # 12 ticks due: 9 skipped, 3 started
    app.schedules.trigger("five", actor="test:ops", now=start + 3700)
    token = app.identity.create_token(tenant="default", role="service", name="s", created_by="t")
    with TestClient(create_app(app)) as client:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token.token}"})
    assert response.status_code == 200
    found = samples(response.text)
    ticks = "aevos_schedule_ticks_total"
    assert value(found, ticks, schedule="five", status="started") == 3
    assert value(found, ticks, schedule="five", status="skipped") == 9
    assert value(found, ticks, schedule="five", status="triggered") == 1
    # The newest started tick is 11:00, started at 11:00:42.
    assert value(found, "aevos_schedule_lateness_seconds", schedule="five") == 42.0
    # Nothing was published or dead-lettered.
    assert value(found, "aevos_outbox_lag_seconds") == 0.0
    assert value(found, "aevos_dead_letters") == 0


def test_integration_families_render_when_their_stores_report() -> None:
    data = Snapshot(
        runs={}, durations={}, open_tasks={}, feedback={}, model_calls={}, dead_letters=2
    )
    found = samples(render(data))
    assert value(found, "aevos_dead_letters") == 2
    assert not any(name.startswith("aevos_outbox") for name, _ in found)
    lagging = replace(data, dead_letters=None, outbox_lag=12.5)
    found = samples(render(lagging))
    assert value(found, "aevos_outbox_lag_seconds") == 12.5
    assert not any(name.startswith("aevos_dead_letters") for name, _ in found)


ENQUEUE = textwrap.dedent(
    """
    import sys
    from aevos import Aevos, WorkflowContext

    app = Aevos(sys.argv[1])
    app.queue("bulk")

    @app.workflow(name="job")
    def job(ctx: WorkflowContext, n: int) -> int:
        return n

    for n in range(int(sys.argv[2])):
        job.options(queue="bulk").start(n)
    app.close()
    """
)

SCRAPE = textwrap.dedent(
    """
    import sys
    from aevos import Aevos
    from aevos.telemetry.metrics import exposition

    app = Aevos(sys.argv[1])
    sys.stdout.write(exposition(app.store, app.call_totals, "default").decode())
    app.close()
    """
)


def run_scripts(script: Path, args: list[list[str]]) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *a],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out)
    return outputs


def test_metrics_add_up_across_worker_processes(
    app: Aevos, database_url: str, tmp_path: Path
) -> None:
    enqueue, scrape = tmp_path / "enqueue.py", tmp_path / "scrape.py"
    enqueue.write_text(ENQUEUE)
    scrape.write_text(SCRAPE)
    # Two processes queue runs at once (3 and 4); then two other processes scrape.
    run_scripts(enqueue, [[database_url, "3"], [database_url, "4"]])
    before = datetime.now(UTC).timestamp()
    pages = run_scripts(scrape, [[database_url], [database_url]])
    after = datetime.now(UTC).timestamp()
    oldest = min(r.updated_at for r in app.list_runs(queue="bulk", limit=100))
    for page in pages:
        found = samples(page)
        assert value(found, "aevos_queue_depth", queue="bulk") == 7
        age = value(found, "aevos_queue_oldest_age_seconds", queue="bulk")
        assert age is not None and before - oldest <= age <= after - oldest
        assert value(found, "aevos_runs", workflow="job", status="ENQUEUED") == 7
