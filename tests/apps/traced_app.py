"""The traced application the tracing crash test runs in worker subprocesses.

``python -m tests.apps.traced_app`` builds it on ``AEVOS_DATABASE_URL`` and runs a worker;
it traces because the test sets the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (to a receiver
on loopback). Its ``hold`` step marks ``TRACED_MARKS/held`` and, while ``TRACED_HOLD`` is
``1``, waits there until the process is killed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.apps.crash_app import _exit_with_parent

from aevos import Aevos, StepContext, WorkflowContext
from aevos.telemetry.tracing import TracingConfig

TRACED_WORKFLOW = "traced.flow"


def build(
    database_url: str, *, lease_seconds: float = 1.0, tracing: TracingConfig | None = None
) -> Aevos:
    app = Aevos(
        database_url,
        lease_seconds=lease_seconds,
        poll_interval=0.02,
        code_version="traced",
        tracing=tracing,
    )

    @app.step(name="first")
    def first(ctx: StepContext, value: int) -> int:
        return value + 1

    @app.step(name="hold")
    def hold(ctx: StepContext, value: int) -> int:
        marks = Path(os.environ["TRACED_MARKS"])
        (marks / "held").touch()
        while os.environ.get("TRACED_HOLD") == "1":
            time.sleep(0.05)  # until SIGKILL
        return value * 2

    @app.workflow(name=TRACED_WORKFLOW)
    def flow(ctx: WorkflowContext, value: int) -> int:
        return hold(ctx, first(ctx, value))

    return app


def main() -> None:
    _exit_with_parent()
    app = build(os.environ["AEVOS_DATABASE_URL"])
    try:
        app.worker(concurrency=2).run()
    finally:
        app.close()


if __name__ == "__main__":
    main()
