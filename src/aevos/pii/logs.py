"""Keep PII and secrets out of log output.

(Named ``logs`` rather than ``logging`` so the package directory can never shadow the
standard library module.)

A filter attached to a *logger* only sees records logged on that very logger, not those
propagated from its children; a filter on a *handler* sees everything the handler writes.
:func:`install` therefore attaches to the logger and to each handler it has at that
moment; handlers added later need ``handler.addFilter(filter)`` themselves.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Iterable

from ..errors import PiiConfigError
from .redactor import Redactor

SECRET_PLACEHOLDER = "<SECRET>"
# Attributes every LogRecord has; anything else came from `extra=` and is user content.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_DONE = "_aevos_pii_clean"


class SecretRegistry:
    """Secret strings (API keys, tokens, passwords) to mask wherever they appear.

    Registered values are held in memory only, to be found; they are never written out.
    Secrets shorter than ``min_length`` are refused: masking every "abc" in every log line
    would destroy the logs without protecting anything.
    """

    def __init__(
        self,
        secrets: Iterable[str] = (),
        *,
        placeholder: str = SECRET_PLACEHOLDER,
        min_length: int = 6,
    ) -> None:
        self.placeholder = placeholder
        self.min_length = min_length
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.register(secret)

    def register(self, secret: str) -> None:
        """Mask ``secret`` (and its URL-encoded spelling) from now on."""
        if not isinstance(secret, str) or len(secret) < self.min_length:
            raise PiiConfigError(
                f"a secret to mask must be a string of at least {self.min_length} characters"
            )
        forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
        with self._lock:
            self._secrets |= forms
            alternation = "|".join(
                re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)
            )
            self._pattern = re.compile(alternation)

    def register_env(self, *names: str) -> None:
        """Register the values of these environment variables, where set."""
        for name in names:
            value = os.environ.get(name)
            if value:
                self.register(value)

    def __len__(self) -> int:
        return len(self._secrets)

    def mask(self, text: str) -> str:
        """``text`` with every registered secret replaced by the placeholder."""
        pattern = self._pattern  # one read: register() swaps it atomically
        if pattern is None:
            return text
        return pattern.sub(self.placeholder, text)


class SecretLogFilter(logging.Filter):
    """Masks registered secrets in a record's message, arguments, traceback and extras."""

    def __init__(self, secrets: SecretRegistry) -> None:
        super().__init__()
        self.secrets = secrets

    def clean(self, text: str) -> str:
        return self.secrets.mask(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _DONE, None) is self:
            return True
        try:
            message = record.getMessage()
        except Exception:
            # A bad format/argument pair: keep what can be shown, never the raw arguments.
            message = str(record.msg)
        record.msg = self.clean(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and name != _DONE and isinstance(value, str):
                setattr(record, name, self.clean(value))
        setattr(record, _DONE, self)
        return True


class PiiLogFilter(SecretLogFilter):
    """Redacts PII (and masks registered secrets first) in log records.

    The message is formatted with its arguments and redacted, and the arguments dropped,
    so ``log.info("user %s", email)`` writes ``user <EMAIL>``. Tracebacks, stack info and
    string ``extra=`` fields are cleaned too. Records are never dropped.
    """

    def __init__(
        self,
        redactor: Redactor | None = None,
        *,
        secrets: SecretRegistry | None = None,
        numbered: bool = False,
    ) -> None:
        super().__init__(secrets if secrets is not None else SecretRegistry())
        self.redactor = redactor if redactor is not None else Redactor()
        self.numbered = numbered

    def clean(self, text: str) -> str:
        # Secrets first: a key that happens to contain digits must go whole, not in parts.
        return self.redactor.redact(self.secrets.mask(text), numbered=self.numbered).text


def install(
    target: logging.Logger | logging.Handler,
    *,
    redactor: Redactor | None = None,
    secrets: SecretRegistry | None = None,
) -> PiiLogFilter:
    """Attach a :class:`PiiLogFilter` to a handler, or to a logger and its handlers.

    Returns the filter (add it to handlers created later). Installing twice on the same
    target adds one more filter; a record is cleaned once per filter instance.
    """
    log_filter = PiiLogFilter(redactor, secrets=secrets)
    target.addFilter(log_filter)
    if isinstance(target, logging.Logger):
        for handler in target.handlers:
            handler.addFilter(log_filter)
    return log_filter


#: Every logger aevos logs on (a test checks that the source names no other): the filter is
#: attached to each, because a logger's filters never see its children's records.
AEVOS_LOGGERS = (
    "aevos",
    "aevos.approvals",
    "aevos.audit",
    "aevos.cases",
    "aevos.connectors",
    "aevos.events",
    "aevos.gateway",
    "aevos.identity",
    "aevos.liveness",
    "aevos.models",
    "aevos.monitoring",
    "aevos.outbox",
    "aevos.replay",
    "aevos.retraining",
    "aevos.rollouts",
    "aevos.schedules",
    "aevos.server",
    "aevos.server.console",
    "aevos.tasks",
    "aevos.webhook",
    "aevos.worker",
)
ENV_SWITCH = "AEVOS_LOG_REDACTION"
_OFF = frozenset({"0", "off", "false", "no"})
_default_lock = threading.Lock()
_default_filter: PiiLogFilter | None = None


def redact_aevos_logs(enabled: bool = True) -> PiiLogFilter | None:
    """Attach one shared :class:`PiiLogFilter` to aevos's loggers (``enabled=False``
    removes it); returns the filter, or None when it is off.

    ``Aevos()`` calls this unless built with ``redact_logs=False``; the environment variable
    ``AEVOS_LOG_REDACTION=off`` keeps it off for the whole process (say, to debug a
    recogniser locally). Logging is per process, so this is the one piece of process-wide
    state aevos keeps; calling it again changes nothing. Records of other libraries are
    not touched: attach the returned filter to your handlers to clean those too.
    """
    global _default_filter
    if enabled and os.environ.get(ENV_SWITCH, "").strip().lower() in _OFF:
        enabled = False
    with _default_lock:
        names = set(AEVOS_LOGGERS) | {
            name
            for name in logging.Logger.manager.loggerDict
            if name.startswith("aevos.")
            and isinstance(logging.Logger.manager.loggerDict[name], logging.Logger)
        }
        if not enabled:
            if _default_filter is not None:
                for name in names:
                    logging.getLogger(name).removeFilter(_default_filter)
                _default_filter = None
            return None
        if _default_filter is None:
            _default_filter = PiiLogFilter()
        for name in sorted(names):
            logger = logging.getLogger(name)
            if _default_filter not in logger.filters:
                logger.addFilter(_default_filter)
        return _default_filter


def active_log_filter() -> PiiLogFilter | None:
    """The filter :func:`redact_aevos_logs` installed, if it is on: the CLI attaches it to
    the handlers it configures, so other libraries' records are cleaned too."""
    return _default_filter
