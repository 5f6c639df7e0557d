"""Kept cases: what a model (or a person) saw, kept so that it can be learned from and replayed.

For every governed model call that answered, and every human task, the input *after* the
workflow's data policy (tokenised, or redacted) is kept as a case, encrypted with a key of
its tenant derived from the vault's master key (``AEVOS_VAULT_KEY``), for as long as the
``model_call`` policy governing the model says (``cases: {keep, retention_days}``; 90 days
by default). A model call's case has the call's ``call_id`` as its id, a task's
``"task:" + task_id``; the case's digest is the ``input_sha256`` of the call's
``model.called`` audit record. Cases are read, listed and forgotten (by run, or by data
subject: a vault token) through :class:`KeptCases` (``app.cases``). See
``docs/evolution.md``.
"""

from __future__ import annotations

from .keeping import DEFAULT_LIMIT, MAX_LIMIT, KeptCase, KeptCases, NewCase

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "KeptCase", "KeptCases", "NewCase"]
