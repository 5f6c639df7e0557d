"""The e-mail connector: send a message over SMTP from a step.

The message's ``Message-ID`` derives from the step's idempotency key, so a retry after a
lost reply (the server took the message but the connection dropped before it said so)
carries the same id and mail systems that de-duplicate by it (most archives, many
gateways) keep one. The server unreachable, a timeout or a 4xx reply is
:class:`~aevos.errors.ConnectorUnavailableError` (retried); refused credentials,
recipients or sender are :class:`~aevos.errors.ConnectorRejectedError`. The password comes
from configuration or the environment and is scrubbed from every error.
"""

from __future__ import annotations

import hashlib
import smtplib
import socket
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING

from ..errors import ConnectorConfigError, ConnectorRejectedError, ConnectorUnavailableError
from .credentials import Secret, resolve, scrub
from .spans import call_span

if TYPE_CHECKING:
    from ..kernel.step import StepContext

MAX_RECIPIENTS = 100


class SmtpConnector:
    """An SMTP server (``host``:``port``), sending as ``sender``.

    ``starttls`` upgrades a plain connection; ``use_ssl`` connects over TLS from the start
    (port 465). ``username`` with ``password``/``password_env`` log in.
    """

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        username: str | None = None,
        password: Secret | str | None = None,
        password_env: str | None = None,
        starttls: bool = False,
        use_ssl: bool = False,
        timeout: float = 10.0,
        domain: str = "aevos.local",
    ) -> None:
        if not host or not 0 < port < 65536:
            raise ConnectorConfigError(f"SMTP connector needs a host and a port, got {port}")
        if "@" not in sender:
            raise ConnectorConfigError(f"SMTP sender must be an address, got {sender!r}")
        if starttls and use_ssl:
            raise ConnectorConfigError("SMTP: starttls and use_ssl exclude each other")
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = resolve(password, password_env)
        if (self._password is None) != (username is None):
            raise ConnectorConfigError("SMTP: give a username and a password, or neither")
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.timeout = timeout
        self.domain = domain

    def __repr__(self) -> str:
        return f"SmtpConnector({self.host!r}, {self.port})"

    def message_id(self, sctx: StepContext) -> str:
        """The ``Message-ID`` a step's message carries (the same on every attempt)."""
        digest = hashlib.sha256(sctx.idempotency_key.encode()).hexdigest()[:32]
        return f"<{digest}@{self.domain}>"

    def send(
        self,
        sctx: StepContext,
        to: str | Sequence[str],
        subject: str,
        body: str,
        *,
        html: str | None = None,
    ) -> str:
        """Send one message to ``to``; returns its ``Message-ID``."""
        recipients = [to] if isinstance(to, str) else list(to)
        if not recipients or len(recipients) > MAX_RECIPIENTS:
            raise ConnectorRejectedError(
                f"an e-mail needs 1 to {MAX_RECIPIENTS} recipients, got {len(recipients)}"
            )
        bad = [r for r in recipients if "@" not in r or any(c in r for c in "\r\n")]
        if bad or any(c in subject for c in "\r\n"):
            raise ConnectorRejectedError(
                "e-mail recipients must be addresses and the subject one line"
            )
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = self.message_id(sctx)
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
        where = f"SMTP server {self.host}:{self.port}"
        with call_span(
            sctx,
            "smtp",
            "send",
            {
                "server.address": self.host,
                "server.port": self.port,
                "aevos.email.recipients": len(recipients),
            },
        ):
            self._deliver(message, recipients, where)
        return str(message["Message-ID"])

    def _deliver(self, message: EmailMessage, recipients: list[str], where: str) -> None:
        try:
            with self._connect() as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None and self._password is not None:
                    smtp.login(self.username, self._password.reveal())
                refused = smtp.send_message(message, self.sender, recipients)
        except smtplib.SMTPAuthenticationError as exc:
            raise ConnectorRejectedError(
                f"{where} refused the login of {self.username!r}: {exc.smtp_code}"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise ConnectorRejectedError(
                f"{where} refused every recipient: {self._codes(exc.recipients)}"
            ) from None
        except smtplib.SMTPSenderRefused as exc:
            raise self._by_code(
                where, "refused the sender", exc.smtp_code, exc.smtp_error
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise self._by_code(where, "answered", exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, OSError) as exc:
            # Refused, unreachable, timed out, dropped: the server may be back shortly.
            reason = (
                "timed out"
                if isinstance(exc, socket.timeout | TimeoutError)
                else (f"{type(exc).__name__}: {self._clean(str(exc))}")
            )
            raise ConnectorUnavailableError(f"{where} cannot be reached: {reason}") from None
        if refused:
            raise ConnectorRejectedError(f"{where} refused some recipients: {self._codes(refused)}")

    def _connect(self) -> smtplib.SMTP:
        if self.use_ssl:
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def _by_code(
        self, where: str, what: str, code: int, reply: bytes | str
    ) -> ConnectorRejectedError | ConnectorUnavailableError:
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        message = f"{where} {what}: {code} {self._clean(text)[:200]}"
        # 4xx is SMTP's "try again later"; 5xx is permanent.
        if 400 <= code < 500:
            return ConnectorUnavailableError(message)
        return ConnectorRejectedError(message)

    @staticmethod
    def _codes(refused: dict[str, tuple[int, bytes]]) -> str:
        return ", ".join(f"{addr} ({code})" for addr, (code, _) in sorted(refused.items()))

    def _clean(self, text: str) -> str:
        return scrub(text, [self._password])
