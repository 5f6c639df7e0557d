"""Errors of what crosses aevos's edge: event ingress, connectors, schedules."""

from __future__ import annotations

from .base import AevosError

# -- event ingress (webhooks) ---------------------------------------------------------------
#     EventError
#     ├── UnknownSourceError        no webhook source has that name (404)
#     ├── SignatureError            a missing, malformed or wrong signature (401)
#     │   └── StaleSignatureError   a valid signature whose timestamp is outside the tolerance
#     ├── PayloadTooLargeError      the body is larger than the source accepts (413)
#     ├── InvalidEventError         the body is not JSON, or the event id is malformed (422)
#     ├── EventMappingError         the source's mapping raised or returned no dict (422)
#     ├── NoCorrelatedRunError      an event's correlation key names no run of its tenant (422)
#     ├── DeadLetterNotFoundError   no dead letter of the tenant has that id (404)
#     └── ReplayUnavailableError    a dead letter's source or trigger is not declared here (409)
# Every one is recorded as a REJECTED event with its code. Messages name the cause, never
# the body (it may hold personal data) nor a secret.


class EventError(AevosError):
    code = "event_error"


class UnknownSourceError(EventError, LookupError):
    code = "unknown_source"


class SignatureError(EventError):
    code = "invalid_signature"


class StaleSignatureError(SignatureError):
    """The signature is right but old (or from the future): a replay, or a skewed clock."""

    code = "signature_expired"


class PayloadTooLargeError(EventError):
    code = "payload_too_large"


class InvalidEventError(EventError, ValueError):
    code = "invalid_event"


class EventMappingError(EventError):
    code = "event_mapping_failed"


class NoCorrelatedRunError(EventError, LookupError):
    code = "no_correlated_run"


class DeadLetterNotFoundError(EventError, LookupError):
    code = "dead_letter_not_found"


class ReplayUnavailableError(EventError):
    code = "replay_unavailable"


# -- connectors ---------------------------------------------------------------------------
#
#     AevosError
#     └── ConnectorError                 a connector call to another system failed
#         ├── ConnectorConfigError       a connector is misconfigured (a credential not set)
#         ├── ConnectorUnavailableError  the system cannot be reached, timed out, answered 5xx
#         │                              or its circuit breaker is open: retried
#         ├── ConnectorRejectedError     the system refused the request (4xx, a recipient
#         │                              refused, a constraint): not retried
#         └── ConnectorResponseError     the system answered something unreadable: retried
#
# Messages name the system (its URL without credentials), never a credential.


class ConnectorError(AevosError):
    code = "connector_error"


class ConnectorConfigError(ConnectorError, ValueError):
    code = "connector_config_error"


class ConnectorUnavailableError(ConnectorError, ConnectionError):
    code = "connector_unavailable"


class ConnectorRejectedError(ConnectorError):
    code = "connector_rejected"


class ConnectorResponseError(ConnectorError, ValueError):
    code = "connector_bad_response"


# -- schedules -----------------------------------------------------------------------------


class ScheduleError(AevosError):
    code = "schedule_error"


class ScheduleNotFoundError(ScheduleError, LookupError):
    """No schedule of that name is declared (in code) or stored (in the caller's tenant)."""

    code = "schedule_not_found"
