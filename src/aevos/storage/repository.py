"""The base of every repository, and what a repository may use of its unit of work.

A repository is typed against the two small protocols here, not against
:class:`~aevos.storage.unit.UnitOfWork` and :class:`~aevos.storage.store.Store`: the unit
of work makes the repositories and the store opens units of work, so a repository module
that named either would close an import cycle. These protocols list only what the
repositories use; ``Store`` and ``UnitOfWork`` satisfy them structurally.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine

from .dialect import Dialect
from .step_record import StepRecord

T = TypeVar("T")


class StoreHandle(Protocol):
    """The store as its repositories see it: its dialect, its engine (for a scan outside
    the unit of work) and the statements prepared once per store."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def backend(self) -> str: ...

    @property
    def safe_url(self) -> str: ...

    def prepared(self, build: Callable[[StoreHandle], T]) -> T:
        """``build(store)``, made once per store."""
        ...

    def _guard(self) -> AbstractContextManager[None]: ...

    # The kernel's slow path of recording a step (the run repository): the same fencing,
    # blob spilling and row values as the store's own writes, so the two cannot drift.
    def _fence(self, conn: Connection, run_id: str, owner: str, now: float) -> bool: ...

    def _wake(self, conn: Connection, run_id: str, now: float) -> None: ...

    def _value(self, conn: Connection, text: str | None) -> tuple[str | None, str | None]: ...

    def _step_values(
        self, run_id: str, step: StepRecord, text: str | None, ref: str | None
    ) -> dict[str, Any]: ...


class Unit(Protocol):
    """A unit of work as its repositories see it: its transaction and its store."""

    @property
    def store(self) -> StoreHandle: ...

    @property
    def conn(self) -> Connection: ...

    def prepared(self, build: Callable[[StoreHandle], T]) -> T:
        """What ``build`` makes of the store, made once per store."""
        ...


class Repository:
    """A domain's queries, run in the unit of work it is bound to."""

    def __init__(self, uow: Unit) -> None:
        self.uow = uow
        self.conn = uow.conn
