"""Shared by the tests that need people: a reviewer working the inbox through the public
task API (``app.tasks``) in a thread, answering what ``answer`` says of each task."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from aevos import Aevos


class Reviewer:
    """A person working the inbox: claims the next task, submits ``answer(task)``."""

    def __init__(
        self,
        app: Aevos,
        answer: Callable[[Any], Mapping[str, Any]],
        *,
        actor: str = "reviewer:ann",
    ) -> None:
        self.app, self.answer, self.actor = app, answer, actor
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        while not self._stop.is_set():
            task = self.app.tasks.claim_next(actor=self.actor, roles=["reviewer"])
            if task is None:
                self._stop.wait(0.02)
                continue
            self.app.tasks.submit(task.task_id, dict(self.answer(task)), actor=self.actor)
            self.answered.append(task.purpose)

    def __enter__(self) -> Reviewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
