"""Shared by the rollout tests: real banking77 models and a gateway-driven traffic loop."""

from __future__ import annotations

import csv
import functools
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aevos import Aevos
from aevos.public_data import data_file

MODEL = "intent"
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked", "top_up_failed"]
GATE = (
    "policy: promotion-gate\nversion: 1\nkind: promotion\n"
    "input:\n  model.name: string\n  candidate.accuracy: number\n  champion.accuracy: number\n"
    "rules:\n  - name: worse\n    when: candidate.accuracy < champion.accuracy - 0.1\n"
    "    decision: deny\n    reason: worse than the champion\n"
    "default:\n  decision: {decision}\n  reason: the rollout's evidence holds\n"
)
#: Thresholds for small test windows; latency and cost are not what these tests judge.
CRITERIA = {
    "min_calls": 10,
    "min_agreement": 0.7,
    "max_latency_p95_ratio": 1e6,
    "max_cost_ratio": 1e6,
}


def texts(split: str = "train", per: int = 40) -> tuple[list[str], list[str]]:
    seen: dict[str, int] = {}
    xs, ys = [], []
    with (data_file("banking77") / f"{split}.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in INTENTS and seen.get(row["category"], 0) < per:
                seen[row["category"]] = seen.get(row["category"], 0) + 1
                xs.append(row["text"])
                ys.append(row["category"])
    return xs, ys


@functools.cache  # the same bytes every time: test_rollouts and test_rollouts_replay share them
def trained(*, shuffled: bool = False, c: float = 20.0) -> bytes:
    from aevos.models.adapters.sklearn import train_text_classifier
    from aevos.models.artifact import dump_sklearn

    xs, ys = texts()
    if shuffled:  # a deliberately worse candidate: labels that mean nothing
        ys = ys[:]
        random.Random(7).shuffle(ys)
    return dump_sklearn(train_text_classifier(xs, ys, C=c))


def policies(directory: Path, decision: str = "allow") -> Path:
    (directory / "promotion-gate.yaml").write_text(GATE.replace("{decision}", decision))
    return directory


def register(app: Aevos, artifacts: dict[str, bytes]) -> None:
    """v1 champion, v2 a good candidate, v3 a worse one, v4 never in any rollout."""
    app.models.register(
        MODEL,
        artifacts["good"],
        flavor="sklearn",
        signature={"type": "string"},
        aliases=["champion"],
    )
    app.models.register(MODEL, artifacts["good2"], flavor="sklearn", signature={"type": "string"})
    app.models.register(MODEL, artifacts["bad"], flavor="sklearn", signature={"type": "string"})
    app.models.register(MODEL, artifacts["good3"], flavor="sklearn", signature={"type": "string"})


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def calls(app: Aevos, version: int | None = None, route: str | None = None) -> list[Any]:
    out = []
    for record in app.audit.query("default", action="model.called", limit=100000):
        if record.data.get("model") != MODEL:
            continue
        if version is not None and record.data.get("version") != version:
            continue
        if route is not None and record.data.get("route") != route:
            continue
        out.append(record)
    return out


class Traffic:
    """Calls through the real gateway with fresh routing keys, and their records flushed."""

    def __init__(self, app: Aevos) -> None:
        self.app = app
        self.sent = 0
        self.inputs, _ = texts("test", per=200)

    def send(self, n: int) -> list[Any]:
        results = []
        for _ in range(n):
            text = self.inputs[self.sent % len(self.inputs)]
            results.append(self.app.gateway.predict(MODEL, text, key=f"user-{self.sent}"))
            self.sent += 1
        return results

    def until(self, version: int, count: int, route: str, limit: int = 3000) -> None:
        """Send until ``version`` has ``count`` more recorded calls of ``route``."""
        before = len(calls(self.app, version, route))
        sent = 0
        while True:
            self.settle()
            if len(calls(self.app, version, route)) - before >= count:
                return
            assert sent < limit, f"{version} got too little traffic"
            self.send(50)
            sent += 50

    def settle(self) -> None:
        """The buffered call records written (shadow calls still running land later)."""
        self.app.gateway.flush()
