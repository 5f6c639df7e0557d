"""Connectors to the systems work goes to, each used from a step (so each call is durable:
recorded, retried with backoff, never repeated after success, keyed by the step's
idempotency key), and the outbox relay that sends what runs publish.

- :class:`HttpConnector`: HTTP/REST with an ``Idempotency-Key`` header and a breaker.
- :class:`SqlConnector`: a user's database by SQLAlchemy URL; upserts keyed by the step.
- :class:`SmtpConnector`: e-mail out over SMTP.
- NATS publish: ``ctx.publish``/``sctx.publish`` write to the outbox;
  :class:`OutboxRelay` sends to :class:`NatsDestination` (JetStream) or
  :class:`WebhookDestination` (signed HTTP POST).

:data:`CONNECTOR_RETRY` is a step retry policy that retries what may pass
(:class:`~aevos.errors.ConnectorUnavailableError`, :class:`~aevos.errors.ConnectorResponseError`)
and not what cannot (a refusal, a misconfiguration)::

    @app.step(retries=CONNECTOR_RETRY)
    def open_ticket(sctx, ticket):
        return crm.post(sctx, "/tickets", json=ticket)
"""

from __future__ import annotations

from ..errors import ConnectorConfigError, ConnectorRejectedError, SerializationError
from ..kernel.retry import RetryPolicy
from .credentials import Secret
from .email import SmtpConnector
from .http import HttpConnector
from .relay import NatsDestination, Outbox, OutboxRelay, RelayReport, WebhookDestination
from .sql import SqlConnector

#: Five attempts, 0.5 s to 8 s apart; refusals and misconfiguration are not retried.
CONNECTOR_RETRY = RetryPolicy(
    max_attempts=5,
    initial_interval=0.5,
    backoff=2.0,
    max_interval=30.0,
    non_retryable=(ConnectorConfigError, ConnectorRejectedError, SerializationError),
)

__all__ = [
    "CONNECTOR_RETRY",
    "HttpConnector",
    "NatsDestination",
    "Outbox",
    "OutboxRelay",
    "RelayReport",
    "Secret",
    "SmtpConnector",
    "SqlConnector",
    "WebhookDestination",
]
