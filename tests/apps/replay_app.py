"""A replay app for the crash test: a model flavor that records each decision and can be
held mid-replay, and a worker entry point (``python -m tests.apps.replay_app``).

``gated-sklearn`` is the sklearn flavor whose every prediction first writes a file into
``REPLAY_DECIDED`` (named by the input's digest, one per decision); once
``REPLAY_HOLD_AFTER`` decisions are on file it waits for the file ``REPLAY_GATE``, so the
test kills the worker while a batch is half decided, by construction rather than timing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.apps.crash_app import _exit_with_parent

from aevos import Aevos
from aevos.models import flavors
from aevos.models.types import ModelAdapter, Prediction

FLAVOR = "gated-sklearn"


class Gated:
    flavor = FLAVOR

    def __init__(self, inner: ModelAdapter) -> None:
        self.inner = inner

    def predict(self, input: Any) -> Prediction:
        decided = os.environ.get("REPLAY_DECIDED")
        if decided is not None:
            digest = hashlib.sha256(str(input).encode()).hexdigest()[:16]
            Path(decided, f"{digest}-{os.getpid()}-{time.time_ns()}").touch()
            hold = int(os.environ.get("REPLAY_HOLD_AFTER", "0"))
            gate = os.environ.get("REPLAY_GATE")
            if gate is not None and hold and len(os.listdir(decided)) >= hold:
                deadline = time.monotonic() + 120
                while not Path(gate).exists():
                    if time.monotonic() > deadline:
                        raise TimeoutError("the test never opened the gate")
                    time.sleep(0.05)
        return self.inner.predict(input)


def _load(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> ModelAdapter:
    return Gated(flavors.load_adapter("sklearn", artifact, config, trusted=trusted))


flavors.register_flavor(FLAVOR, _load)


def build(url: str) -> Aevos:
    app = Aevos(url, lease_seconds=2.0, park_after=0.3, poll_interval=0.02)
    app.replays  # noqa: B018 -- registers the replay workflow and its queue
    return app


def main() -> None:
    _exit_with_parent()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s pid=%(process)d %(name)s %(levelname)s %(message)s",
    )
    app = build(os.environ["AEVOS_DATABASE_URL"])
    try:
        app.worker(concurrency=2).run()
    finally:
        app.close()


if __name__ == "__main__":
    main()
