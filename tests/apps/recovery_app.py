"""The application of the fast-recovery tests and benchmark, run in worker subprocesses.

``python -m tests.apps.recovery_app`` runs a worker with the default settings (lease, poll
interval) unless ``RECOVERY_LEASE_SECONDS`` is set. Its workflow has three steps, each an
idempotent effect journalled as in :mod:`tests.apps.crash_app`; the middle one is held for
``RECOVERY_HOLD`` seconds in the process that sets it (the victim, killed or stopped inside
it), or for ``RECOVERY_HOLD_FIRST`` seconds in a run's first execution whichever process
claimed it (the benchmark's), and brief otherwise.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from tests.apps import crash_app

from aevos import Aevos, StepContext, Workflow, WorkflowContext

RECOVERY_WORKFLOW = "recovery.flow"
HELD_STEP = 1  # the step the victim is inside when it is killed or stopped
BRIEF = (0.001, 0.005)


@dataclass
class RecoveryApp:
    app: Aevos
    effects: crash_app.Effects
    flow: Workflow[[int], list[int]]

    def close(self) -> None:
        self.app.close()
        self.effects.close()


def build(
    url: str, *, lease_seconds: float | None = None, effects_url: str | None = None
) -> RecoveryApp:
    app = Aevos(url) if lease_seconds is None else Aevos(url, lease_seconds=lease_seconds)
    fx = crash_app.Effects(effects_url or url)
    hold = float(os.environ.get("RECOVERY_HOLD", "0"))
    hold_first = float(os.environ.get("RECOVERY_HOLD_FIRST", "0"))

    @app.step(name="recovery.before")
    def before(ctx: StepContext, value: int) -> int:
        return fx.perform(ctx, value, BRIEF)

    @app.step(name="recovery.held")
    def held(ctx: StepContext, value: int, execution: int) -> int:
        pause = hold or (hold_first if execution == 1 else 0)
        return fx.perform(ctx, value, (pause, pause) if pause else BRIEF)

    @app.step(name="recovery.after")
    def after(ctx: StepContext, value: int) -> int:
        return fx.perform(ctx, value, BRIEF)

    @app.workflow(name=RECOVERY_WORKFLOW)
    def flow(ctx: WorkflowContext, n: int) -> list[int]:
        return [
            before(ctx, n * 10),
            held(ctx, n * 10 + HELD_STEP, ctx.executions),
            after(ctx, n * 10 + 2),
        ]

    return RecoveryApp(app, fx, flow)


def main() -> None:
    crash_app._exit_with_parent()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s pid=%(process)d %(name)s %(levelname)s %(message)s",
    )
    lease = os.environ.get("RECOVERY_LEASE_SECONDS")
    bundle = build(
        os.environ["AEVOS_DATABASE_URL"],
        lease_seconds=float(lease) if lease else None,
        effects_url=os.environ.get("CRASH_EFFECTS_URL") or None,
    )
    try:
        bundle.app.worker(concurrency=2).run()
    finally:
        bundle.close()


if __name__ == "__main__":
    main()
