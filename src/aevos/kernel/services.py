"""What the kernel needs from the services around it, as interfaces the kernel declares.

The kernel records through storage and audits through the audit log; a workflow context
evaluates policies, redacts and tokenizes personal data, calls models through the gateway
and asks people. All of those are built once, bottom-up and on first use, by whoever
composes the kernel (the app object, :class:`aevos.Aevos`), and handed to it as one
:class:`Services`. The kernel never imports the app object; the human tasks, which live
above the kernel (:mod:`aevos.people`), reach it only through
:class:`~aevos.kernel.context.HumanTasks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..models.gateway import Gateway
    from ..pii import Redactor, Vault
    from ..policy import PolicySet
    from ..storage import Store
    from .context import HumanTasks

# The two positions of ctx.ask_human: the task's creation, and the person's decision. The
# kernel knows the first: forking a run between a question and its answer asks again.
TASK_STEP = "aevos.task"
DECISION_STEP = "aevos.decision"
# ctx.qa_sample's one position: whether this decision was sampled (and its task, if so).
QA_STEP = "aevos.qa"


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

    def configured_vault(self) -> Vault | None:
        """The vault, or None when no key is configured (a malformed key still raises)."""
        ...

    @property
    def gateway(self) -> Gateway: ...

    @property
    def human_tasks(self) -> HumanTasks: ...
