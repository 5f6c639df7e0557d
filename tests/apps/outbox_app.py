"""A workflow whose step publishes, run in a subprocess that the test kills mid-step.

``python -m tests.apps.outbox_app URL RUN_ID HOLD_FILE``: starts ``order`` under
``RUN_ID``; its step publishes, then (while ``HOLD_FILE`` exists) touches ``HOLD_FILE +
'.reached'`` and waits to be killed before the step's result (and its message) commit.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from aevos import Aevos
from aevos.kernel.step import StepContext


def build(url: str, hold: str | None = None) -> Aevos:
    app = Aevos(url, lease_seconds=1.0, park_after=0.3, poll_interval=0.02)

    @app.step(name="charge")
    def charge(sctx: StepContext, order: int) -> str:
        message_id = sctx.publish("orders.charged", {"order": order})
        if hold is not None and os.path.exists(hold):
            with open(hold + ".reached", "w") as f:
                f.write(message_id)
            while True:  # the test kills this process here, before the step commits
                time.sleep(0.1)
        return message_id

    @app.workflow(name="order")
    def order(ctx: Any, n: int) -> str:
        charged = charge(ctx, n)
        ctx.publish("orders.done", {"order": n})
        return charged

    return app


if __name__ == "__main__":
    url, run_id, hold = sys.argv[1:4]
    build(url, hold).workflow_named("order").options(run_id=run_id).run(7)
