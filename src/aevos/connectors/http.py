"""The HTTP/REST connector: one request per step attempt, keyed by the step.

Every request carries ``Idempotency-Key: <run id>/<seq>`` (the step's
:attr:`~aevos.kernel.step.StepContext.idempotency_key`, the same on every retry and replay),
so a server that honours the header (Stripe's convention, the IETF draft) applies a retried
request once. Failures become connector errors the step's retry policy tells apart: the
server unreachable, a timeout, a 5xx, 408, 429 or an open circuit breaker are
:class:`~aevos.errors.ConnectorUnavailableError` (retried); another 4xx is
:class:`~aevos.errors.ConnectorRejectedError` (not retried); a body that is not the JSON it
claims to be is :class:`~aevos.errors.ConnectorResponseError`. A circuit breaker per
connector (:mod:`aevos.models.breaker`, the gateway's) stops calling a server that keeps
failing, so retries of many runs do not pile onto it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import (
    ConnectorConfigError,
    ConnectorRejectedError,
    ConnectorResponseError,
    ConnectorUnavailableError,
)
from ..models.breaker import BreakerConfig, CircuitBreaker
from .credentials import Secret, resolve, scrub
from .spans import call_span

if TYPE_CHECKING:
    from ..kernel.step import StepContext

log = logging.getLogger("aevos.connectors")

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The largest response body read; a bigger one is refused rather than held in memory.
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
_RETRYABLE_STATUS = frozenset({408, 425, 429})


class HttpConnector:
    """Calls one HTTP API (``base_url``) from steps.

    ``bearer``/``bearer_env`` give an ``Authorization: Bearer`` token (directly or from an
    environment variable); ``headers`` are sent with every request. ``timeout`` bounds each
    attempt (connect and read). ``transport`` is httpx's, for a custom TLS set-up.
    """

    def __init__(
        self,
        base_url: str,
        *,
        bearer: Secret | str | None = None,
        bearer_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        breaker: BreakerConfig | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConnectorConfigError(
                f"HTTP connector base URL must be http(s)://host..., got scheme {url.scheme!r}"
            )
        if url.userinfo:
            raise ConnectorConfigError(
                "HTTP connector base URL must not carry credentials; use bearer= or bearer_env="
            )
        if timeout <= 0:
            raise ConnectorConfigError(f"HTTP connector timeout must be > 0, got {timeout}")
        self.base_url = str(url).rstrip("/")
        self._bearer = resolve(bearer, bearer_env)
        self._headers = dict(headers or {})
        self._breaker = CircuitBreaker(breaker or BreakerConfig())
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"HttpConnector({self.base_url!r})"

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    def close(self) -> None:
        self._client.close()

    # -- calls ------------------------------------------------------------------------------

    def get(self, sctx: StepContext, path: str, **options: Any) -> Any:
        return self.request(sctx, "GET", path, **options)

    def post(self, sctx: StepContext, path: str, **options: Any) -> Any:
        return self.request(sctx, "POST", path, **options)

    def put(self, sctx: StepContext, path: str, **options: Any) -> Any:
        return self.request(sctx, "PUT", path, **options)

    def patch(self, sctx: StepContext, path: str, **options: Any) -> Any:
        return self.request(sctx, "PATCH", path, **options)

    def delete(self, sctx: StepContext, path: str, **options: Any) -> Any:
        return self.request(sctx, "DELETE", path, **options)

    def request(
        self,
        sctx: StepContext,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request for this step attempt; the response's JSON body (text when it
        is not JSON, None when empty)."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        where = f"{method} {url}"
        target = httpx.URL(self.base_url)
        with call_span(
            sctx,
            "http",
            method,
            {
                "http.request.method": method,
                "server.address": target.host,
                "server.port": target.port or (443 if target.scheme == "https" else 80),
            },
        ) as span:
            seen: list[int] = []
            try:
                return self._call(sctx, method, url, where, json, params, headers, seen)
            finally:
                if span is not None and seen:
                    span.set_attribute("http.response.status_code", seen[0])

    def _call(
        self,
        sctx: StepContext,
        method: str,
        url: str,
        where: str,
        json: Any,
        params: Mapping[str, str | int | float] | None,
        headers: Mapping[str, str] | None,
        seen: list[int],
    ) -> Any:
        if not self._breaker.allow():
            raise ConnectorUnavailableError(
                f"{where}: circuit breaker open after repeated failures; retry in "
                f"{self._breaker.retry_after():.1f} s"
            )
        sent = {**self._headers, **(headers or {}), IDEMPOTENCY_HEADER: sctx.idempotency_key}
        if self._bearer is not None:
            sent["Authorization"] = f"Bearer {self._bearer.reveal()}"
        if sctx.tracing is not None:
            # The server's spans join the run's trace (W3C traceparent of this call's span).
            sctx.tracing.inject(sent)
        try:
            body = self._send(method, url, where, sent, json, params, seen)
        except (ConnectorUnavailableError, ConnectorResponseError):
            self._breaker.failure()
            raise
        except BaseException:
            # A refusal is the server working as designed: it does not trip the breaker.
            self._breaker.success()
            raise
        self._breaker.success()
        return body

    def _send(
        self,
        method: str,
        url: str,
        where: str,
        headers: dict[str, str],
        body: Any,
        params: Mapping[str, str | int | float] | None,
        seen: list[int],
    ) -> Any:
        try:
            with self._client.stream(
                method, url, headers=headers, json=body, params=params
            ) as response:
                content = self._read(response, where)
        except httpx.TimeoutException as exc:
            raise ConnectorUnavailableError(f"{where}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise ConnectorUnavailableError(
                f"{where}: {type(exc).__name__}: {self._clean(str(exc))}"
            ) from None
        status = response.status_code
        seen.append(status)
        if status >= 500 or status in _RETRYABLE_STATUS:
            raise ConnectorUnavailableError(f"{where}: HTTP {status}{self._excerpt(content)}")
        if status >= 400:
            raise ConnectorRejectedError(f"{where}: HTTP {status}{self._excerpt(content)}")
        if not content:
            return None
        kind = response.headers.get("content-type", "")
        if "json" in kind:
            try:
                return json.loads(content)
            except ValueError:
                raise ConnectorResponseError(
                    f"{where}: HTTP {status} claims {kind.split(';')[0]} but the body is not "
                    f"JSON{self._excerpt(content)}"
                ) from None
        try:
            return content.decode(response.encoding or "utf-8")
        except (UnicodeDecodeError, LookupError):
            raise ConnectorResponseError(
                f"{where}: HTTP {status} body is neither JSON nor text ({kind or 'no type'})"
            ) from None

    @staticmethod
    def _read(response: httpx.Response, where: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ConnectorResponseError(
                    f"{where}: response larger than {MAX_RESPONSE_BYTES} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _clean(self, text: str) -> str:
        return scrub(text, [self._bearer])

    def _excerpt(self, content: bytes) -> str:
        # A few printable characters of what came back help find the cause; never more.
        text = content[:120].decode("utf-8", "replace").replace("\n", " ").strip()
        return f": {self._clean(text)!r}" if text else ""
