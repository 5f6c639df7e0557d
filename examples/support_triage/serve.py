"""The support-triage app configured from the environment, for ``aevos worker`` and
``aevos serve``: ``aevos worker --app examples.support_triage.serve:app --queue support``.

``AEVOS_DATABASE_URL`` (aevos's database), ``AEVOS_VAULT_KEY`` (the PII vault: without it
nothing is kept to learn from), ``SUPPORT_TICKETS_URL`` (the ticket table's database),
``SUPPORT_AUDIT_SHARE_UNCERTIFIED`` / ``SUPPORT_AUDIT_SHARE`` (the audit coin).
"""

from __future__ import annotations

from .app import make_app

app = make_app()
