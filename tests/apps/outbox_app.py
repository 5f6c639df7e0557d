"""A workflow whose step publishes, run in a subprocess that the test kills mid-step.

``python -m tests.apps.outbox_app URL RUN_ID HOLD_FILE``: starts ``order`` under
``RUN_ID``; its step publishes, then (while ``HOLD_FILE`` exists) touches ``HOLD_FILE +
'.reached'`` and waits to be killed before the step's result (and its message) commit.

``python -m tests.apps.outbox_app relay URL NATS_URL``: a relay that takes the due
messages, publishes them to NATS and is SIGKILLed (by itself, at exactly that point)
before it marks any of them sent.
"""

from __future__ import annotations

import os
import signal
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


def relay_and_die(url: str, nats_url: str) -> None:
    from aevos.connectors import NatsDestination, OutboxRelay
    from aevos.storage import open_store

    destination = NatsDestination(nats_url, subjects="orders.>")
    relay = OutboxRelay(open_store(url), [destination], lease=0.5)
    for row in relay.claim():
        destination.send(row)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "relay":
        relay_and_die(sys.argv[2], sys.argv[3])
    url, run_id, hold = sys.argv[1:4]
    build(url, hold).workflow_named("order").options(run_id=run_id).run(7)
