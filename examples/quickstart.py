"""The README's example, runnable: ``python examples/quickstart.py``."""

from __future__ import annotations

from aevos import Aevos, StepContext, WorkflowContext

app = Aevos()  # AEVOS_DATABASE_URL, default sqlite:///./aevos.db


@app.step(retries=3, timeout=10)
def open_ticket(ctx: StepContext, queue: str, ticket: dict[str, str]) -> str:
    # A real connector forwards ctx.idempotency_key (an Idempotency-Key header, a unique
    # column): it is the same on every retry and replay of this step of this run.
    return f"{queue}/{ctx.idempotency_key}"


@app.workflow()
def triage(ctx: WorkflowContext, ticket: dict[str, str]) -> dict[str, str]:
    queue = "billing" if "invoice" in ticket["text"] else "general"
    return {"queue": queue, "ticket": open_ticket(ctx, queue, ticket)}


def main() -> list[dict[str, str]]:
    first = triage.options(idempotency_key="ticket-4711").run({"text": "invoice missing"})
    handle = triage.start({"text": "card blocked"})  # enqueued for a worker
    worker = app.worker().start()  # or, in its own process: aevos worker --app ...
    try:
        second = handle.result(timeout=30)
    finally:
        worker.stop()
    return [first, second]


if __name__ == "__main__":
    for result in main():
        print(result)
