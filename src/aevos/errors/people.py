"""Errors of human tasks and approvals."""

from __future__ import annotations

from typing import Any

from .base import AevosError

# -- human tasks ----------------------------------------------------------------------------
#     TaskNotFoundError   no task has that id (in the caller's tenant)
#     TaskConflictError   the task's state does not allow it: claimed by someone else, already
#                         submitted, cancelled with its run, or expired
#     TaskInputError      a submitted value does not fit the task's form (names the field)
#     TaskExpiredError    raised in a workflow when nobody decided before ask_human's timeout


class TaskNotFoundError(AevosError, LookupError):
    code = "task_not_found"


class TaskConflictError(AevosError):
    code = "task_conflict"

    def __init__(self, task_id: str, status: str, reason: str) -> None:
        super().__init__(f"task {task_id} is {status}: {reason}")
        self.task_id = task_id
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "task_id": self.task_id, "status": self.status}


class TaskInputError(AevosError, ValueError):
    """A submitted value does not fit the form; ``field`` names it (never the value)."""

    code = "invalid_task_input"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")
        self.field = field
        self.problem = problem

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field}


class TaskExpiredError(AevosError, TimeoutError):
    code = "task_expired"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"nobody decided task {task_id} before its timeout")
        self.task_id = task_id


# -- approvals --------------------------------------------------------------------------------
#     ApprovalNotFoundError   no approval has that id (in the caller's tenant)
#     ApprovalConflictError   it is no longer pending: decided, expired, superseded by a move of
#                             its alias, or rejected because the policy now denies it


class ApprovalNotFoundError(AevosError, LookupError):
    code = "approval_not_found"


class ApprovalConflictError(AevosError):
    code = "approval_conflict"

    def __init__(self, approval_id: str, status: str, reason: str) -> None:
        super().__init__(f"approval {approval_id} is {status}: {reason}")
        self.approval_id = approval_id
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "approval_id": self.approval_id, "status": self.status}
