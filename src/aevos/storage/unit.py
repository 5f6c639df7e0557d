"""The unit of work: one transaction that several repositories share.

A domain service never writes SQL: it opens a unit of work on the store (``store.transaction()``
to write, ``store.reading()`` to read) and calls the repositories of the domains it touches
through it. Everything done in one unit commits together when its ``with`` block ends, or
nothing does if the block raises, so a change and the audit record of that change are never
apart::

    with store.transaction() as uow:
        approval = uow.approvals.insert(asked)
        audit.append(event, uow=uow)  # the record commits with the change, or neither does

A write unit takes SQLite's write lock up front (``BEGIN IMMEDIATE``); a reading unit is one
consistent snapshot that, on SQLite, takes no lock at all, so it must never write. Driver
errors leave it as the aevos errors they mean (``StorageUnavailableError``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TypeVar

from sqlalchemy.engine import Connection

from .analysis import AnalysisRepository
from .approvals import ApprovalRepository
from .audit import AuditRepository
from .budgets import BudgetRepository
from .cases import CaseRepository
from .certifications import CertificationRepository
from .datasets import DatasetRepository
from .dead_letters import DeadLetterRepository
from .events import EventRepository
from .identity import TokenRepository
from .labels import LabelRepository
from .metrics import MetricsRepository
from .models import ModelRepository
from .monitors import MonitorRepository
from .outbox import OutboxRepository
from .replays import ReplayRepository
from .report import ReportRepository
from .repository import StoreHandle
from .retraining import RetrainingRepository
from .rollouts import RolloutRepository
from .runs import RunRepository
from .schedules import ScheduleRepository
from .tasks import TaskRepository
from .traces import TraceRepository
from .vault import VaultRepository

T = TypeVar("T")


class UnitOfWork:
    """One open transaction and the repositories bound to it, each made on first use."""

    def __init__(self, store: StoreHandle, conn: Connection, *, read_only: bool = False) -> None:
        self.store = store
        #: The transaction's connection: for repositories, never for domain code.
        self.conn = conn
        self.read_only = read_only

    def prepared(self, build: Callable[[StoreHandle], T]) -> T:
        """What ``build`` makes of this store, made once per store (prepared statements)."""
        return self.store.prepared(build)

    @cached_property
    def runs(self) -> RunRepository:
        """A run's position in its history, fenced on its lease (the slow path)."""
        return RunRepository(self)

    @cached_property
    def audit(self) -> AuditRepository:
        return AuditRepository(self)

    @cached_property
    def tasks(self) -> TaskRepository:
        return TaskRepository(self)

    @cached_property
    def approvals(self) -> ApprovalRepository:
        return ApprovalRepository(self)

    @cached_property
    def models(self) -> ModelRepository:
        return ModelRepository(self)

    @cached_property
    def tokens(self) -> TokenRepository:
        return TokenRepository(self)

    @cached_property
    def vault(self) -> VaultRepository:
        return VaultRepository(self)

    @cached_property
    def budgets(self) -> BudgetRepository:
        return BudgetRepository(self)

    @cached_property
    def events(self) -> EventRepository:
        return EventRepository(self)

    @cached_property
    def dead_letters(self) -> DeadLetterRepository:
        return DeadLetterRepository(self)

    @cached_property
    def metrics(self) -> MetricsRepository:
        return MetricsRepository(self)

    @cached_property
    def report(self) -> ReportRepository:
        """The evolution report's figures (read only)."""
        return ReportRepository(self)

    @cached_property
    def labels(self) -> LabelRepository:
        """Labels of cases and their conflicts (never updated, only added)."""
        return LabelRepository(self)

    @cached_property
    def datasets(self) -> DatasetRepository:
        """Content-addressed dataset versions."""
        return DatasetRepository(self)

    @cached_property
    def cases(self) -> CaseRepository:
        """Kept cases (encrypted model and task inputs) and the data subjects they name."""
        return CaseRepository(self)

    @cached_property
    def certifications(self) -> CertificationRepository:
        """Certified automation thresholds of model versions (revision 0009)."""
        return CertificationRepository(self)

    @cached_property
    def retraining(self) -> RetrainingRepository:
        """Models' retraining configurations and their retrainings (revision 0010)."""
        return RetrainingRepository(self)

    @cached_property
    def replays(self) -> ReplayRepository:
        """Replays of candidate versions over kept cases (revision 0012)."""
        return ReplayRepository(self)

    @cached_property
    def analysis(self) -> AnalysisRepository:
        """A model's calls, labels and reviews over a window: a rollout step's evidence."""
        return AnalysisRepository(self)

    @cached_property
    def rollouts(self) -> RolloutRepository:
        """Rollouts of candidate versions and what the gateway routes by (revision 0011)."""
        return RolloutRepository(self)

    @cached_property
    def monitors(self) -> MonitorRepository:
        """Models' monitor configurations, check results and alerts (revision 0013)."""
        return MonitorRepository(self)

    @cached_property
    def outbox(self) -> OutboxRepository:
        """Messages runs published, until the relay sent them (revision 0017)."""
        return OutboxRepository(self)

    @cached_property
    def schedules(self) -> ScheduleRepository:
        """Schedules (cron-started workflows), their state and ticks (revision 0018)."""
        return ScheduleRepository(self)

    @cached_property
    def traces(self) -> TraceRepository:
        """Traced runs' trace contexts (revision 0014)."""
        return TraceRepository(self)
