"""Connectors as durable steps, against real servers on loopback, on both backends.

HTTP against a local server that answers, fails, times out or returns garbage; SQL against
a real database (SQLite file or the PostgreSQL test database) by SQLAlchemy URL; SMTP
against a local aiosmtpd server and an unreachable port. Credentials must never reach an
error, a log line or a recorded step (connectors write no audit records of their own; the
relay's ``outbox.dead`` records are checked in test_outbox.py).
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from tests.apps.faults import free_port

from aevos import Aevos
from aevos.connectors import CONNECTOR_RETRY, HttpConnector, Secret, SmtpConnector, SqlConnector
from aevos.errors import (
    ConnectorConfigError,
    ConnectorRejectedError,
    ConnectorUnavailableError,
    StepFailedError,
)
from aevos.kernel.retry import RetryPolicy
from aevos.kernel.step import StepContext
from aevos.models.breaker import BreakerConfig
from aevos.storage.schema import audit, steps

QUICK = RetryPolicy(
    max_attempts=3,
    initial_interval=0.0,
    jitter=0.0,
    non_retryable=CONNECTOR_RETRY.non_retryable,
)
TOKEN = "tok-Very-Secret-4711"


def sctx(run_id: str = "r1", seq: int = 0) -> StepContext:
    return StepContext(run_id, "wf", "step", seq, 1)


def stored_text(app: Aevos) -> str:
    """Every recorded step error and audit record, as text (to search for secrets)."""
    with app.store.engine.connect() as conn:
        errors = [row.error for row in conn.execute(sa.select(steps.c.error))]
        records = [dict(row._mapping) for row in conn.execute(sa.select(audit))]
    return json.dumps([errors, records], default=str)


# -- HTTP -------------------------------------------------------------------------------------


class Api:
    """A loopback HTTP API with scripted routes; records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.flaky_failures = 2
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                api.requests.append((self.command, self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                key = self.headers.get("Idempotency-Key", "")
                if path == "/tickets":
                    self._answer(201, json.dumps({"id": "T-1", "key": key}).encode())
                elif path == "/flaky":
                    if api.flaky_failures > 0:
                        api.flaky_failures -= 1
                        self._answer(503, b"busy", "text/plain")
                    else:
                        self._answer(200, json.dumps({"ok": True}).encode())
                elif path == "/slow":
                    time.sleep(3)
                    self._answer(200, b"{}")
                elif path == "/garbage":
                    self._answer(200, b"<html><body>502 Bad Gateway</body></html>")
                elif path == "/invalid":
                    self._answer(422, b'{"error": "missing field: queue"}')
                elif path == "/down":
                    self._answer(500, b"internal error", "text/plain")
                elif path == "/echo-auth":
                    # A badly behaved server that quotes the credential back in its error.
                    auth = self.headers.get("Authorization", "")
                    self._answer(401, f"bad credentials: {auth}".encode(), "text/plain")
                else:
                    self._answer(404, b"{}")

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hits(self, path: str) -> list[dict[str, str]]:
        return [headers for _, p, headers in self.requests if p.split("?")[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    yield server
    server.close()


def test_http_step_forwards_its_idempotency_key_and_is_not_repeated(app: Aevos, api: Api) -> None:
    crm = HttpConnector(api.url, timeout=5.0)

    @app.step(retries=QUICK)
    def open_ticket(sctx: StepContext, text: str) -> Any:
        crm.post(sctx, "/flaky", json={"text": text})  # 503, 503, then 200: retried
        return crm.post(sctx, "/tickets", json={"text": text})

    @app.workflow()
    def triage(ctx: Any, text: str) -> Any:
        return open_ticket(ctx, text)

    result = triage.options(run_id="t-1").run("printer on fire")
    assert result == {"id": "T-1", "key": "t-1/0"}
    keys = [h["Idempotency-Key"] for h in api.hits("/flaky")] + [
        h["Idempotency-Key"] for h in api.hits("/tickets")
    ]
    assert keys == ["t-1/0"] * 4  # three attempts of /flaky, one /tickets
    assert app.list_steps("t-1")[0].attempts == 3
    # Starting the same run again returns its result: nothing is sent again.
    assert triage.options(run_id="t-1").run("printer on fire") == result
    assert len(api.requests) == 4
    crm.close()


def test_http_timeouts_and_garbage_are_clear_retried_errors(app: Aevos, api: Api) -> None:
    # A breaker that does not open here: each path is a separate case.
    crm = HttpConnector(
        api.url, timeout=0.5, breaker=BreakerConfig(consecutive_failures=100, min_calls=100)
    )

    @app.step(retries=QUICK)
    def call(sctx: StepContext, path: str) -> Any:
        return crm.get(sctx, path)

    @app.workflow()
    def fetch(ctx: Any, path: str) -> Any:
        return call(ctx, path)

    with pytest.raises(StepFailedError):
        fetch.options(run_id="slow").run("/slow")
    slow = app.list_steps("slow")[0]
    assert slow.attempts == 3 and slow.error is not None
    assert slow.error["type"] == "aevos.errors.ConnectorUnavailableError"
    assert slow.error["message"] == f"GET {api.url}/slow: timed out (ReadTimeout)"

    with pytest.raises(StepFailedError):
        fetch.options(run_id="garbage").run("/garbage")
    garbage = app.list_steps("garbage")[0]
    assert garbage.attempts == 3 and garbage.error is not None
    assert "claims application/json but the body is not JSON" in garbage.error["message"]
    assert "<html><body>502 Bad Gateway" in garbage.error["message"]

    with pytest.raises(StepFailedError):
        fetch.options(run_id="invalid").run("/invalid")
    invalid = app.list_steps("invalid")[0]
    assert invalid.attempts == 1  # a refusal is not retried
    assert invalid.error is not None
    assert invalid.error["type"] == "aevos.errors.ConnectorRejectedError"
    assert (
        "HTTP 422" in invalid.error["message"]
        and "missing field: queue" in invalid.error["message"]
    )
    assert len(api.hits("/slow")) == 3 and len(api.hits("/invalid")) == 1
    crm.close()


def test_http_circuit_breaker_stops_calling_a_failing_server(api: Api) -> None:
    crm = HttpConnector(api.url, breaker=BreakerConfig(consecutive_failures=2, cooldown=600))
    for _ in range(2):
        with pytest.raises(ConnectorUnavailableError, match="HTTP 500"):
            crm.get(sctx(), "/down")
    with pytest.raises(ConnectorUnavailableError, match="circuit breaker open"):
        crm.get(sctx(), "/down")
    assert len(api.hits("/down")) == 2
    # A refusal (4xx) is the server working: it does not open a fresh breaker.
    other = HttpConnector(api.url, breaker=BreakerConfig(consecutive_failures=1))
    for _ in range(2):
        with pytest.raises(ConnectorRejectedError):
            other.get(sctx(), "/invalid")
    crm.close()
    other.close()


def test_http_credentials_never_reach_errors_logs_or_records(
    app: Aevos, api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CRM_TOKEN", TOKEN)
    crm = HttpConnector(api.url, bearer_env="CRM_TOKEN")

    @app.step(retries=QUICK)
    def call(sctx: StepContext) -> Any:
        return crm.get(sctx, "/echo-auth")

    @app.workflow()
    def fetch(ctx: Any) -> Any:
        return call(ctx)

    caplog.set_level(logging.DEBUG)
    with pytest.raises(StepFailedError) as failed:
        fetch.options(run_id="auth").run()
    assert api.hits("/echo-auth")[0]["Authorization"] == f"Bearer {TOKEN}"  # it was sent
    error = app.list_steps("auth")[0].error or {}
    assert "HTTP 401" in error["message"] and "Bearer ***" in error["message"]
    assert TOKEN not in str(failed.value)
    assert TOKEN not in caplog.text
    assert TOKEN not in stored_text(app)
    assert TOKEN not in repr(crm)
    monkeypatch.delenv("CRM_TOKEN")
    with pytest.raises(ConnectorConfigError, match="environment variable CRM_TOKEN is not set"):
        HttpConnector(api.url, bearer_env="CRM_TOKEN")
    with pytest.raises(ConnectorConfigError, match="must not carry credentials"):
        HttpConnector(f"http://user:{TOKEN}@127.0.0.1:1/")
    assert TOKEN not in repr(Secret(TOKEN)) and TOKEN not in str(Secret(TOKEN))
    crm.close()


# -- SQL --------------------------------------------------------------------------------------


@pytest.fixture
def user_db(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The user's own database: a SQLite file, or a table in the PostgreSQL test database."""
    url = f"sqlite:///{tmp_path / 'crm.db'}" if database_url.startswith("sqlite") else database_url
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS crm_results"))
        conn.execute(
            sa.text(
                "CREATE TABLE crm_results (aevos_key VARCHAR(200) PRIMARY KEY, "
                "queue VARCHAR(50) NOT NULL, score INTEGER)"
            )
        )
    yield url
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS crm_results"))
    engine.dispose()


def rows(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(sa.text("SELECT * FROM crm_results ORDER BY aevos_key"))
            ]
    finally:
        engine.dispose()


def test_sql_upsert_is_keyed_by_the_step_across_retries(app: Aevos, user_db: str) -> None:
    db = SqlConnector(user_db)

    @app.step(retries=QUICK)
    def record(sctx: StepContext, queue: str) -> str:
        key = db.upsert(sctx, "crm_results", {"queue": queue, "score": sctx.attempt})
        if sctx.attempt == 1:
            raise ConnectionError("lost the connection after the write")
        return key

    @app.step(retries=QUICK)
    def record_once(sctx: StepContext) -> bool:
        inserted = db.insert(sctx, "crm_results", {"queue": "once", "score": 0})
        if sctx.attempt == 1:
            raise ConnectionError("lost the connection after the write")
        return inserted

    @app.workflow()
    def route(ctx: Any, queue: str) -> list[Any]:
        return [record(ctx, queue), record_once(ctx)]

    assert route.options(run_id="s-1").run("billing") == ["s-1/0", False]
    assert route.options(run_id="s-2").run("printers") == ["s-2/0", False]
    assert rows(user_db) == [
        ("s-1/0", "billing", 2),
        ("s-1/1", "once", 0),
        ("s-2/0", "printers", 2),
        ("s-2/1", "once", 0),
    ]
    assert db.query(
        sctx(), "SELECT queue FROM crm_results WHERE score = :s ORDER BY queue", {"s": 2}
    ) == [
        {"queue": "billing"},
        {"queue": "printers"},
    ]
    with pytest.raises(ConnectorRejectedError, match="no table 'nowhere'"):
        db.upsert(sctx(), "nowhere", {"queue": "x"})
    with pytest.raises(ConnectorRejectedError, match="has no column"):
        db.upsert(sctx(), "crm_results", {"colour": "red"})
    db.close()


def test_sql_unreachable_database_is_retryable_and_hides_the_password() -> None:
    url = f"postgresql://scott:{TOKEN}@127.0.0.1:{free_port()}/crm"
    db = SqlConnector(url, connect_timeout=2)
    assert TOKEN not in repr(db) and "***" in db.safe_url
    with pytest.raises(ConnectorUnavailableError, match="cannot be reached") as caught:
        db.query(sctx(), "SELECT 1")
    assert TOKEN not in str(caught.value) and "127.0.0.1" in str(caught.value)
    with pytest.raises(ConnectorConfigError, match="cannot be parsed"):
        SqlConnector(f"not a url {TOKEN}:/")
    db.close()


# -- SMTP -------------------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtpd() -> Iterator[tuple[Controller, Mailbox]]:
    mailbox = Mailbox()

    def refuse(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=refuse,
        auth_require_tls=False,
    )
    controller.start()
    yield controller, mailbox
    controller.stop()


def test_smtp_step_sends_once_with_a_stable_message_id(
    app: Aevos, smtpd: tuple[Controller, Mailbox]
) -> None:
    controller, mailbox = smtpd
    mail = SmtpConnector("127.0.0.1", controller.port, sender="aevos@example.com")

    @app.step(retries=QUICK)
    def notify(sctx: StepContext, user: str) -> str:
        # An address in the run's input would be tokenised by the default data policy.
        return mail.send(sctx, f"{user}@example.com", "Your ticket", "We are on it.")

    @app.workflow()
    def ticket(ctx: Any, user: str) -> str:
        return notify(ctx, user)

    message_id = ticket.options(run_id="m-1").run("ada")
    assert message_id == mail.message_id(sctx("m-1", 0))
    assert ticket.options(run_id="m-1").run("ada") == message_id
    assert len(mailbox.messages) == 1
    rcpt, message = mailbox.messages[0]
    assert rcpt == ["ada@example.com"]
    assert message["Message-ID"] == message_id and message["Subject"] == "Your ticket"
    assert message.get_payload().strip() == "We are on it."
    with pytest.raises(ConnectorRejectedError, match="recipients must be addresses"):
        mail.send(sctx(), "not-an-address", "x", "y")


def test_smtp_unreachable_and_refused_login_are_clear_and_secret_free(
    app: Aevos,
    smtpd: tuple[Controller, Mailbox],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller, _ = smtpd
    port = free_port()  # nothing listens here
    unreachable = SmtpConnector("127.0.0.1", port, sender="aevos@example.com", timeout=2)

    @app.step(retries=QUICK)
    def notify(sctx: StepContext) -> str:
        return unreachable.send(sctx, "ada@example.com", "hello", "body")

    @app.workflow()
    def ticket(ctx: Any) -> str:
        return notify(ctx)

    caplog.set_level(logging.DEBUG)
    with pytest.raises(StepFailedError):
        ticket.options(run_id="m-down").run()
    step = app.list_steps("m-down")[0]
    assert step.attempts == 3 and step.error is not None
    assert step.error["type"] == "aevos.errors.ConnectorUnavailableError"
    assert step.error["message"].startswith(f"SMTP server 127.0.0.1:{port} cannot be reached: ")

    monkeypatch.setenv("SMTP_PASSWORD", TOKEN)
    login = SmtpConnector(
        "127.0.0.1",
        controller.port,
        sender="aevos@example.com",
        username="aevos",
        password_env="SMTP_PASSWORD",
    )

    @app.step(retries=QUICK)
    def notify_auth(sctx: StepContext) -> str:
        return login.send(sctx, "ada@example.com", "hello", "body")

    @app.workflow()
    def ticket_auth(ctx: Any) -> str:
        return notify_auth(ctx)

    with pytest.raises(StepFailedError):
        ticket_auth.options(run_id="m-auth").run()
    step = app.list_steps("m-auth")[0]
    assert step.attempts == 1  # refused credentials are not retried
    assert step.error is not None
    assert (
        step.error["message"]
        == f"SMTP server 127.0.0.1:{controller.port} refused the login of 'aevos': 535"
    )
    assert TOKEN not in caplog.text and TOKEN not in stored_text(app)
