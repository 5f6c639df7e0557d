"""What the kernel needs from the services around it, as interfaces the kernel declares.

The kernel records through storage and audits through the audit log; a workflow context
evaluates policies, redacts and tokenizes personal data, calls models through the gateway
and asks people. All of those are built once, bottom-up and on first use, by whoever
composes the kernel (the app object, :class:`aevos.Aevos`), and handed to it as one
:class:`Services`. The kernel never imports the app object; the human tasks, which live
above the kernel (:mod:`aevos.people`), reach it only through :class:`HumanTasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..models.gateway import CallResult, Gateway
    from ..pii import Redactor, Vault
    from ..policy import PolicySet
    from ..records.task import Field, Form, HumanDecision
    from ..storage import Store
    from .context import WorkflowContext

# The two positions of ctx.ask_human: the task's creation, and the person's decision. The
# kernel knows the first: forking a run between a question and its answer asks again.
TASK_STEP = "aevos.task"
DECISION_STEP = "aevos.decision"


@dataclass(frozen=True)
class AskHuman:
    """One ``ctx.ask_human`` call, as the workflow made it (new fields come with defaults)."""

    title: str
    form: Form | Sequence[Field]
    case: Any = None
    suggestion: Mapping[str, Any] | None = None
    prediction: CallResult | None = None
    queue: str = "review"
    role: str = "reviewer"
    priority: int = 0
    sla: float | timedelta | None = None
    escalate_to: str | Sequence[str] | None = None
    timeout: float | timedelta | None = None


class HumanTasks(Protocol):
    """Asks a person as two positions of the run (see :mod:`aevos.people.asking`)."""

    def ask(self, ctx: WorkflowContext, call: AskHuman) -> HumanDecision: ...

    async def ask_async(self, ctx: WorkflowContext, call: AskHuman) -> HumanDecision: ...


class Services(Protocol):
    """The services a kernel runtime uses, each built on first use."""

    @property
    def store(self) -> Store: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def policies(self) -> PolicySet: ...

    @property
    def redactor(self) -> Redactor: ...

    @property
    def vault(self) -> Vault: ...

    @property
    def gateway(self) -> Gateway: ...

    @property
    def human_tasks(self) -> HumanTasks: ...
