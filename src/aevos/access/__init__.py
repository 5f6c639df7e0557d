"""Governed entry points: every request that carries a token goes through here.

Each operation authenticates nothing itself (callers pass the :class:`Principal` that
``Access.authenticate`` returned) and passes the one :class:`~aevos.access.guard.Guard`:
it checks the role's permission, scopes every read and write to the principal's tenant
(objects of another tenant are refused, 403, like any operation a token may not perform,
and the attempt is audited; nothing about the other tenant's object is returned or named),
and records what it did in the audit log. The HTTP API and the console are thin layers
over it. The operations are grouped by area, one module each:

=================  =========================================================================
``access.runs``    read, start, cancel, resume, fork runs; lineage (:mod:`.runs`)
``access.models``  calls, versions, aliases, registration, promotions (:mod:`.models`)
``access.certifications``  versions' certified automation thresholds (:mod:`.certifications`)
``access.approvals``  promotions waiting for a second person (:mod:`.approvals`)
``access.tasks``   the inbox of human tasks and their feedback (:mod:`.tasks`)
``access.policies``  the loaded policies, explained (:mod:`.policies`)
``access.retraining``  start a model's retraining, read its retrainings (:mod:`.retraining`)
``access.replays``  replay kept cases with a candidate version, read replays (:mod:`.replays`)
``access.events``  dead letters: list, inspect, replay; signals to runs (:mod:`.events`)
``access.rollouts``  read rollouts; start, pause, resume, abort, promote them (:mod:`.rollouts`)
``access.monitors``    configure, check and read a model's monitors; alerts (:mod:`.monitors`)
``access.schedules``  list, read, pause, resume and trigger schedules (:mod:`.schedules`)
``access.metrics``  Prometheus exposition, dashboards (:mod:`.metrics`)
``access.pii``     revealing tokenized personal data (:mod:`.pii`)
``access.cases``   kept cases: list, read, forget by run or data subject (:mod:`.cases`)
``access.outbox``  messages runs published; requeue DEAD ones (:mod:`.outbox`)
``access.audit``   the audit log: query, verify, export (:mod:`.audit`)
``access.labels``, ``access.datasets``  late ground truth, conflicts; dataset versions
                   (:mod:`.labels`)
=================  =========================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .approvals import Approvals
from .audit import AuditTrail
from .cases import Cases
from .certifications import Certifications
from .events import Events, SignalReceipt
from .guard import Guard
from .labels import Datasets, Labels
from .metrics import Metrics
from .models import API_FLAVORS, ModelOverview, Models, Promotion, Registration
from .monitors import Monitors
from .outbox import OutboxMessages
from .pii import Pii
from .policies import Policies
from .replays import Replays
from .retraining import Retraining
from .rollouts import Rollouts
from .runs import Runs
from .schedules import Schedules
from .tasks import Tasks

if TYPE_CHECKING:
    from ..identity import Principal
    from .approvals import Services as ApprovalServices
    from .audit import Services as AuditServices
    from .cases import Services as CaseServices
    from .certifications import Services as CertificationServices
    from .events import Services as EventServices
    from .guard import Services as GuardServices
    from .labels import Services as LabelServices
    from .metrics import Services as MetricServices
    from .models import Services as ModelServices
    from .monitors import Services as MonitorServices
    from .outbox import Services as OutboxServices
    from .pii import Services as PiiServices
    from .policies import Services as PolicyServices
    from .replays import Services as ReplayServices
    from .retraining import Services as RetrainingServices
    from .rollouts import Services as RolloutServices
    from .runs import Services as RunServices
    from .schedules import Services as ScheduleServices
    from .tasks import Services as TaskServices

    class Services(
        GuardServices,
        RunServices,
        ModelServices,
        ApprovalServices,
        TaskServices,
        PolicyServices,
        RetrainingServices,
        ReplayServices,
        RolloutServices,
        MonitorServices,
        MetricServices,
        PiiServices,
        AuditServices,
        LabelServices,
        CaseServices,
        CertificationServices,
        OutboxServices,
        ScheduleServices,
        EventServices,
        Protocol,
    ):
        """Everything behind the guard: the services of one app (:class:`aevos.Aevos`)."""


__all__ = [
    "API_FLAVORS",
    "Access",
    "Approvals",
    "AuditTrail",
    "Cases",
    "Certifications",
    "Datasets",
    "Events",
    "Guard",
    "Labels",
    "Metrics",
    "ModelOverview",
    "Models",
    "Monitors",
    "OutboxMessages",
    "Pii",
    "Policies",
    "Promotion",
    "Registration",
    "Replays",
    "Retraining",
    "Rollouts",
    "Runs",
    "Schedules",
    "SignalReceipt",
    "Tasks",
]


class Access:
    """The governed entry point: :meth:`authenticate`, then one area per concept, each
    behind the same :class:`Guard`."""

    def __init__(self, services: Services) -> None:
        self.guard = Guard(services)
        self.runs = Runs(self.guard, services)
        self.approvals = Approvals(self.guard, services)
        self.models = Models(self.guard, services, self.approvals)
        self.certifications = Certifications(self.guard, services)
        self.tasks = Tasks(self.guard, services)
        self.policies = Policies(self.guard, services)
        self.retraining = Retraining(self.guard, services)
        self.replays = Replays(self.guard, services)
        self.rollouts = Rollouts(self.guard, services)
        self.monitors = Monitors(self.guard, services)
        self.metrics = Metrics(self.guard, services)
        self.pii = Pii(self.guard, services)
        self.audit = AuditTrail(self.guard, services)
        self.labels = Labels(self.guard, services)
        self.datasets = Datasets(self.guard, services)
        self.cases = Cases(self.guard, services)
        self.outbox = OutboxMessages(self.guard, services)
        self.schedules = Schedules(self.guard, services)
        self.events = Events(self.guard, services)

    def authenticate(self, token: str | None, *, tenant_hint: str = "default") -> Principal:
        """The principal behind a bearer token; AuthenticationError (401) otherwise."""
        return self.guard.authenticate(token, tenant_hint=tenant_hint)
