"""Errors of identity and access, policy as code, PII, kept cases and the audit log."""

from __future__ import annotations

from .base import AevosError

# -- identity and access (HTTP 401 / 403) --------------------------------------------------


class AuthenticationError(AevosError):
    """No valid credentials: missing, malformed, unknown, expired or revoked token (401)."""

    code = "unauthenticated"


class AuthorizationError(AevosError):
    """Valid credentials whose role does not grant the operation (403)."""

    code = "forbidden"


class TokenNotFoundError(AevosError, LookupError):
    code = "token_not_found"


# -- policy as code ------------------------------------------------------------------------
#     PolicyError
#     ├── PolicyLoadError        a policy or policy test file is invalid (every problem, FILE:LINE)
#     ├── PolicyNotFoundError    no loaded policy has that name (or version)
#     ├── PolicyInputError       a decision's input misses a declared field or has the wrong type
#     └── PolicyEvaluationError  a condition cannot be evaluated on this input (e.g. str < int)


class PolicyError(AevosError):
    code = "policy_error"


class PolicyLoadError(PolicyError):
    """A policy or policy test file is invalid; found when loading, never when deciding.

    ``problems`` lists every ``(file, line, message)`` found (``line`` is None when the
    problem has no position); the message reads like a compiler's, one
    ``FILE:LINE: message`` per problem.
    """

    code = "policy_invalid"

    def __init__(self, problems: list[tuple[str, int | None, str]]) -> None:
        self.problems = list(problems)
        super().__init__(
            "\n".join(
                f"{file}:{line}: {message}" if line is not None else f"{file}: {message}"
                for file, line, message in self.problems
            )
        )


class PolicyNotFoundError(PolicyError, LookupError):
    code = "policy_not_found"


class PolicyInputError(PolicyError, ValueError):
    """The input does not match the policy's declaration; ``field`` names the field.

    The message names the field and the type received, never the value: inputs carry PII.
    """

    code = "policy_input_invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PolicyEvaluationError(PolicyError):
    code = "policy_evaluation_failed"


# -- PII detection, redaction and the token vault --------------------------------------------
#     PiiError
#     ├── PiiConfigError             a redactor, recogniser, field path or secret is misconfigured
#     ├── PiiBackendUnavailableError an optional detection backend (Presidio) is not installed
#     ├── VaultKeyError              the vault key is missing or malformed (names the variable)
#     ├── PiiAccessDeniedError       detokenisation without an explicit authorisation decision
#     └── PiiTokenNotFoundError      strict detokenisation met tokens this tenant does not own


class PiiError(AevosError):
    code = "pii_error"


class PiiConfigError(PiiError, ValueError):
    code = "pii_config_invalid"


class PiiBackendUnavailableError(PiiError, ImportError):
    code = "pii_backend_unavailable"


class VaultKeyError(PiiError):
    """The vault key is missing or malformed. The message names the variable, never the value."""

    code = "vault_key_invalid"


class PiiAccessDeniedError(PiiError, PermissionError):
    code = "pii_access_denied"


class PiiTokenNotFoundError(PiiError, LookupError):
    """Strict detokenisation met tokens unknown to this tenant (another tenant's, or erased)."""

    code = "pii_token_not_found"

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


# -- kept cases -----------------------------------------------------------------------------
#     CaseError
#     ├── CaseNotFoundError   no kept case has that id in the tenant (or it was forgotten) (404)
#     └── CaseInputError      a bad filter, limit or identifier (422)


class CaseError(AevosError):
    code = "case_error"


class CaseNotFoundError(CaseError, LookupError):
    code = "case_not_found"


class CaseInputError(CaseError, ValueError):
    code = "case_input_invalid"


# -- audit log ------------------------------------------------------------------------------
#     AuditError
#     ├── InvalidAuditEventError  an event that cannot be recorded (bad field, non-JSON data)
#     ├── AuditChainError         a chain that cannot be appended to (its head row is gone)
#     ├── AuditKeyError           the audit key is malformed (names the variable, never the value)
#     ├── AuditSigningKeyError    an anchor signing or public key is malformed
#     │   └── AuditSigningKeyMissingError  ... or not configured where one is needed
#     └── AuditAnchorError        anchors cannot be written or read (no directory, an OS error)
#         └── AuditAnchorRefusedError  a head not signed: its chain no longer extends the
#                                      newest anchor, or does not verify
# A tampered chain is not an error: AuditLog.verify returns a report naming each record (and
# each anchor file that is not a valid anchor).


class AuditError(AevosError):
    code = "audit_error"


class InvalidAuditEventError(AuditError, ValueError):
    code = "invalid_audit_event"


class AuditChainError(AuditError):
    code = "audit_chain_broken"


class AuditKeyError(AuditError):
    code = "audit_key_invalid"


class AuditSigningKeyError(AuditError):
    code = "audit_signing_key_invalid"


class AuditSigningKeyMissingError(AuditSigningKeyError):
    code = "audit_signing_key_missing"


class AuditAnchorError(AuditError):
    code = "audit_anchor_failed"


class AuditAnchorRefusedError(AuditAnchorError):
    code = "audit_anchor_refused"
