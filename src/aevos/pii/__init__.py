"""PII detection, redaction and reversible tokenisation.

::

    from aevos.pii import Redactor, Vault

    redactor = Redactor()
    redactor.redact("mail jane(at)example(dot)com").text      # 'mail <EMAIL>'
    vault = Vault.from_env(app.store)                          # AEVOS_VAULT_KEY
    t = redactor.tokenize(text, tenant="acme", vault=vault)    # '<EMAIL:tok_...>'
    redactor.detokenize(t.text, tenant="acme", vault=vault, allowed=decision.allowed)

The default engine has no dependencies (regular expressions plus checksums); Presidio is
an optional backend (:class:`PresidioEngine`, extra ``pii``) imported only when built.
Nothing here logs or stores a detected value except the vault, which encrypts it.

Applied by default: run inputs are stored under a :class:`DataPolicy` (tokenised, or
redacted without a vault key), and ``Aevos()`` installs the log filter on aevos's loggers
(:func:`redact_aevos_logs`).
"""

from __future__ import annotations

from .base import PatternRecognizer, Recognizer, national_id
from .datapolicy import DataPolicy, ProtectedInput
from .engine import CombinedEngine, Engine, RecognizerEngine
from .finding import Finding, Redaction
from .logs import PiiLogFilter, SecretLogFilter, SecretRegistry, install, redact_aevos_logs
from .normalize import Normalized, normalize
from .presidio import PresidioEngine
from .recognizers import default_recognizers
from .redactor import Redactor
from .vault import Vault

KINDS = (
    "CREDIT_CARD",
    "EMAIL",
    "IBAN",
    "IP_ADDRESS",
    "PHONE",
    "UK_NINO",
    "US_SSN",
)
"""Kinds the default engine finds; ``NATIONAL_ID`` is added by :func:`national_id`."""

__all__ = [
    "KINDS",
    "CombinedEngine",
    "DataPolicy",
    "Engine",
    "Finding",
    "Normalized",
    "PatternRecognizer",
    "PiiLogFilter",
    "PresidioEngine",
    "ProtectedInput",
    "Recognizer",
    "RecognizerEngine",
    "Redaction",
    "Redactor",
    "SecretLogFilter",
    "SecretRegistry",
    "Vault",
    "default_recognizers",
    "install",
    "national_id",
    "normalize",
    "redact_aevos_logs",
]
