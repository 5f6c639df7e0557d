"""PII and secrets stay out of log output (real logging, written to a StringIO handler)."""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aevos import Aevos
from aevos.errors import PiiConfigError
from aevos.pii import PiiLogFilter, SecretLogFilter, SecretRegistry, install, redact_aevos_logs
from aevos.pii.logs import AEVOS_LOGGERS, active_log_filter

API_KEY = "sk-live-4f9a1c2e8b7d6a5f"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logger = logging.getLogger(f"test.pii.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(customer)s"))
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_pii_in_message_and_args_is_redacted(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    install(logger)
    logger.info(
        "refund for %s, card %s, iban %s",
        "jane(at)example(dot)com",
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        extra={"customer": "call +44 20 7946 0958"},
    )
    logger.warning("user %(email)s", {"email": "jane@example.com"}, extra={"customer": "-"})
    out = stream.getvalue()
    assert out.splitlines() == [
        "INFO refund for <EMAIL>, card <CREDIT_CARD>, iban <IBAN> call <PHONE>",
        "WARNING user <EMAIL> -",
    ]


def test_tracebacks_are_redacted(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    install(logger)
    try:
        raise ValueError("no account for jane@example.com / 078-05-1120")
    except ValueError:
        logger.exception("lookup failed", extra={"customer": ""})
    out = stream.getvalue()
    assert "Traceback" in out
    assert "ValueError: no account for <EMAIL> / <US_SSN>" in out
    assert "jane@" not in out
    assert "078-05" not in out


def test_registered_secrets_are_masked_everywhere(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    secrets = SecretRegistry([API_KEY])
    install(logger, secrets=secrets)
    secrets.register("hunter2/p@ss+word")  # registered after install: still masked
    logger.info("calling model with key=%s", API_KEY, extra={"customer": f"Bearer {API_KEY}"})
    logger.info(
        "db password %s, in a URL %s",
        "hunter2/p@ss+word",
        "postgresql://app:hunter2%2Fp%40ss%2Bword@db/x",
        extra={"customer": ""},
    )
    try:
        raise RuntimeError(f"401 for token {API_KEY}")
    except RuntimeError:
        logger.error("upstream", exc_info=True, extra={"customer": ""})
    out = stream.getvalue()
    assert API_KEY not in out
    assert "hunter2" not in out
    assert "p%40ss" not in out
    assert out.count("<SECRET>") == 5


def test_secret_filter_alone_leaves_pii(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.handlers[0].addFilter(SecretLogFilter(SecretRegistry([API_KEY])))
    logger.info("key %s for jane@example.com", API_KEY, extra={"customer": ""})
    assert stream.getvalue() == "INFO key <SECRET> for jane@example.com \n"


def test_child_loggers_are_covered_through_the_handler() -> None:
    parent = logging.getLogger(f"test.pii.{uuid.uuid4().hex}")
    parent.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    parent.addHandler(handler)
    try:
        log_filter = install(parent)
        assert isinstance(log_filter, PiiLogFilter)
        parent.getChild("worker").warning("mail %s", "jane@example.com")
        assert stream.getvalue() == "mail <EMAIL>\n"
    finally:
        parent.removeHandler(handler)


def test_a_record_is_cleaned_once_and_never_dropped(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    log_filter = install(logger)  # on the logger and on its handler
    record = logger.makeRecord(logger.name, logging.INFO, "f", 1, "x %s", ("a@b.co",), None)
    assert log_filter.filter(record)
    assert record.getMessage() == "x <EMAIL>"
    assert log_filter.filter(record)
    # A format/argument mismatch is still logged (unformatted, arguments dropped).
    logger.info("%s and %s for a@b.co", "only one arg", extra={"customer": ""})
    assert stream.getvalue() == "INFO %s and %s for <EMAIL> \n"


def test_short_secrets_are_refused() -> None:
    with pytest.raises(PiiConfigError):
        SecretRegistry(["abc"])
    registry = SecretRegistry()
    assert registry.mask("nothing registered") == "nothing registered"
    assert len(registry) == 0


# -- on by default for aevos's own loggers ----------------------------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What aevos's worker and gateway loggers write, through a handler of their parent."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    parent = logging.getLogger("aevos")
    old_level = parent.level
    parent.setLevel(logging.INFO)
    parent.addHandler(handler)
    yield stream
    parent.removeHandler(handler)
    parent.setLevel(old_level)
    redact_aevos_logs()  # as every other test's apps leave it


def test_an_app_redacts_aevos_logs_by_default(
    captured: io.StringIO, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AEVOS_LOG_REDACTION", raising=False)
    redact_aevos_logs(False)
    logging.getLogger("aevos.worker").warning("run for %s", "jane@example.com")
    assert captured.getvalue() == "run for jane@example.com\n"  # off: the record as logged
    app = Aevos(sqlite_url)
    try:
        logging.getLogger("aevos.worker").warning("run for %s", "jane@example.com")
        # A logger aevos gets only later (the gateway's) is covered too.
        logging.getLogger("aevos.gateway").info("card 4111 1111 1111 1111")
        try:
            raise ValueError("no account for 078-05-1120")
        except ValueError:
            logging.getLogger("aevos").exception("lookup failed")
    finally:
        app.close()
    out = captured.getvalue().splitlines()
    assert out[1:4] == ["run for <EMAIL>", "card <CREDIT_CARD>", "lookup failed"]
    assert "ValueError: no account for <US_SSN>" in captured.getvalue()
    assert "078-05" not in captured.getvalue()


def test_the_default_filter_can_be_turned_off(
    captured: io.StringIO, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    redact_aevos_logs(False)
    Aevos(sqlite_url, redact_logs=False).close()
    assert active_log_filter() is None
    monkeypatch.setenv("AEVOS_LOG_REDACTION", "off")
    Aevos(sqlite_url).close()  # the environment keeps it off for the process
    assert active_log_filter() is None
    logging.getLogger("aevos.worker").warning("run for %s", "jane@example.com")
    assert captured.getvalue() == "run for jane@example.com\n"
    monkeypatch.delenv("AEVOS_LOG_REDACTION")
    log_filter = redact_aevos_logs()
    assert log_filter is not None and redact_aevos_logs() is log_filter  # installed once
    assert logging.getLogger("aevos.worker").filters.count(log_filter) == 1


def test_every_logger_aevos_uses_is_covered() -> None:
    source = Path(__file__).resolve().parents[1] / "src" / "aevos"
    used = {
        name
        for path in source.rglob("*.py")
        for name in re.findall(r"getLogger\(\s*[\"']([^\"']+)[\"']", path.read_text())
    }
    assert used and used <= set(AEVOS_LOGGERS), sorted(used - set(AEVOS_LOGGERS))
