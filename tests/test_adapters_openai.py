"""The ``openai`` flavor against a real HTTP server on 127.0.0.1.

No LLM can run here, so the model is a small ``http.server`` that speaks the OpenAI
chat/completions wire format (request: model, messages, temperature, max_tokens; response:
id, object "chat.completion", choices[{index, message{role, content}, finish_reason}],
usage{prompt_tokens, completion_tokens, total_tokens}). The adapter's real httpx client
talks to it over TCP, so headers, bodies, status codes and timeouts are the real thing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aevos.errors import DefinitionError, ModelCallError, ModelInputError, ModelTimeoutError
from aevos.models.adapters.openai import OpenAIAdapter
from aevos.models.flavors import load_adapter

KEY_ENV = "AEVOS_TEST_LLM_KEY"
KEY = "sk-test-8f3a1c9e2b7d4a60b1e5"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(
    content: str | None, *, finish_reason: str = "stop", usage: bool = True
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    return body


class FakeLLM:
    """A chat/completions server: records every request, answers with ``reply(request)``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply: Callable[[dict[str, Any]], Reply] = lambda req: Reply(body=completion("ok"))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                request = {
                    "method": "POST",
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw) if raw else None,
                }
                with server._lock:
                    server.requests.append(request)
                reply = server.reply(request)
                if reply.delay and server._stop.wait(reply.delay):
                    return
                data = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (the timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture
def adapter(llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIAdapter]:
    monkeypatch.setenv(KEY_ENV, KEY)
    made = OpenAIAdapter(
        {
            "base_url": llm.url,
            "model": "served-model",
            "system": "You route bank support tickets.",
            "temperature": 0.2,
            "max_tokens": 16,
            "api_key_env": KEY_ENV,
            "timeout": 2,
            "price_per_1k_input": 0.5,
            "price_per_1k_output": 1.5,
        }
    )
    yield made
    made.close()


def test_a_call_speaks_the_openai_wire_format(llm: FakeLLM, adapter: OpenAIAdapter) -> None:
    llm.reply = lambda req: Reply(body=completion("Your card is on its way."))
    prediction = adapter.predict("Where is my card?")
    (request,) = llm.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert request["headers"]["content-type"] == "application/json"
    assert request["body"] == {
        "model": "served-model",
        "messages": [
            {"role": "system", "content": "You route bank support tickets."},
            {"role": "user", "content": "Where is my card?"},
        ],
        "temperature": 0.2,
        "max_tokens": 16,
    }
    assert prediction.label is None and prediction.confidence is None
    assert prediction.output == {"content": "Your card is on its way.", "finish_reason": "stop"}
    assert (prediction.tokens_in, prediction.tokens_out) == (12, 3)
    assert prediction.cost == pytest.approx(12 / 1000 * 0.5 + 3 / 1000 * 1.5)
    assert prediction.extra == {"id": "chatcmpl-123", "model": "served-model"}


def test_labels_constrain_the_answer(llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    adapter = load_adapter(
        "openai",
        b"system: Classify the claim.\nlabels: [fraud, legit]\n",
        {"base_url": llm.url, "model": "m", "api_key_env": KEY_ENV},
    )
    llm.reply = lambda req: Reply(body=completion(' "Fraud." '))
    assert adapter.predict("claim text").label == "fraud"
    system = llm.requests[0]["body"]["messages"][0]
    assert system == {
        "role": "system",
        "content": "Classify the claim.\n\nAnswer with exactly one of: fraud, legit.",
    }
    llm.reply = lambda req: Reply(body=completion("I think it is probably fraud, 4111 1111"))
    with pytest.raises(ModelCallError, match="outside its 2 labels") as info:
        adapter.predict("claim text")
    assert "4111" not in info.value.message and not info.value.retryable
    adapter.close()  # type: ignore[attr-defined]


def test_prompt_templates_and_message_lists(llm: FakeLLM) -> None:
    adapter = OpenAIAdapter(
        {"base_url": llm.url, "model": "m", "prompt": "Claim of {amount} EUR: {summary}"}
    )
    adapter.predict({"amount": 1200, "summary": "rear-ended at a light"})
    assert llm.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "Claim of 1200 EUR: rear-ended at a light"}
    ]
    assert "authorization" not in llm.requests[-1]["headers"]  # no key configured, none sent
    with pytest.raises(ModelInputError, match="'summary' is missing") as info:
        adapter.predict({"amount": 1})
    assert info.value.field == "summary"
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "help"},
    ]
    adapter.predict({"messages": conversation})
    assert llm.requests[-1]["body"]["messages"] == conversation
    with pytest.raises(ModelInputError, match=r"'messages\[0\]' must be"):
        adapter.predict({"messages": [{"role": "wizard", "content": "x"}]})
    with pytest.raises(ModelInputError, match="got int"):
        adapter.predict(7)
    plain = OpenAIAdapter({"base_url": llm.url, "model": "m"})
    with pytest.raises(ModelInputError, match="needs a 'prompt' template"):
        plain.predict({"amount": 1})
    adapter.close()
    plain.close()


def _failure(adapter: OpenAIAdapter) -> ModelCallError:
    with pytest.raises(ModelCallError) as info:
        adapter.predict("hello")
    assert KEY not in str(info.value) and KEY not in json.dumps(info.value.to_dict())
    return info.value


def test_rate_limits_are_retryable_and_never_echo_the_key(
    llm: FakeLLM, adapter: OpenAIAdapter
) -> None:
    llm.reply = lambda req: Reply(
        429,
        {
            "error": {
                "message": f"Rate limit for key {KEY}",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
        {"Retry-After": "7"},
    )
    error = _failure(adapter)
    assert (error.status, error.retryable, error.code) == (429, True, "model_call_failed")
    assert "rate limited (HTTP 429) (rate_limit_exceeded); retry after 7s" in error.message
    assert "served-model at http://127.0.0.1:" in error.message
    # A server that puts the key in the error's code gets it dropped, not echoed.
    llm.reply = lambda req: Reply(429, {"error": {"code": KEY}})
    assert _failure(adapter).message.endswith("is rate limited (HTTP 429)")


@pytest.mark.parametrize(
    ("status", "retryable", "text"),
    [
        (500, True, "failed with HTTP 500 (server_error)"),
        (503, True, "failed with HTTP 503 (server_error)"),
        (400, False, "refused the call with HTTP 400 (server_error)"),
        (401, False, f"HTTP 401 (server_error); check the key in ${KEY_ENV}"),
    ],
)
def test_http_errors_carry_their_status(
    llm: FakeLLM, adapter: OpenAIAdapter, status: int, retryable: bool, text: str
) -> None:
    llm.reply = lambda req: Reply(status, {"error": {"message": "boom", "type": "server_error"}})
    error = _failure(adapter)
    assert (error.status, error.retryable) == (status, retryable)
    assert text in error.message and "boom" not in error.message


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": 42}}]}',
        b'{"object": "chat.completion"}',
        b"[1, 2]",
    ],
)
def test_malformed_answers_are_call_errors(
    llm: FakeLLM, adapter: OpenAIAdapter, body: bytes
) -> None:
    llm.reply = lambda req: Reply(200, body)
    error = _failure(adapter)
    assert error.status == 200 and "not a chat completion" in error.message


def test_a_slow_server_is_a_timeout(llm: FakeLLM, adapter: OpenAIAdapter) -> None:
    slow = OpenAIAdapter({"base_url": llm.url, "model": "m", "timeout": 0.3})
    llm.reply = lambda req: Reply(body=completion("late"), delay=5)
    with pytest.raises(ModelTimeoutError, match=r"did not answer within 0\.3s") as info:
        slow.predict("hello")
    assert isinstance(info.value, ModelCallError) and isinstance(info.value, TimeoutError)
    assert info.value.code == "model_timeout" and info.value.retryable
    slow.close()


def test_an_unreachable_server_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    closed = FakeLLM()
    url = closed.url
    closed.close()
    adapter = OpenAIAdapter({"base_url": url, "model": "m", "api_key_env": KEY_ENV})
    error = _failure(adapter)
    assert error.retryable and error.status is None and "cannot reach m at" in error.message
    adapter.close()


def test_a_missing_key_variable_is_named(llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    adapter = OpenAIAdapter({"base_url": llm.url, "model": "m", "api_key_env": KEY_ENV})
    with pytest.raises(ModelCallError, match=f"environment variable {KEY_ENV} .* is not set"):
        adapter.predict("hi")
    assert llm.requests == []  # nothing was sent without the key
    adapter.close()


def test_the_key_is_never_stored_nor_logged(
    llm: FakeLLM, adapter: OpenAIAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        adapter.predict("hello")
        llm.reply = lambda req: Reply(500, {"error": {"message": KEY}})
        _failure(adapter)
    assert KEY not in caplog.text
    assert KEY not in repr(vars(adapter))
    with pytest.raises(DefinitionError, match="must not be stored with a model"):
        load_adapter("openai", b"", {"base_url": llm.url, "model": "m", "api_key": KEY})
    with pytest.raises(DefinitionError, match="must not be stored with a model"):
        load_adapter("openai", f"api_key: {KEY}".encode(), {"base_url": llm.url, "model": "m"})


def test_concurrent_calls_share_one_client(llm: FakeLLM, adapter: OpenAIAdapter) -> None:
    llm.reply = lambda req: Reply(body=completion(req["body"]["messages"][-1]["content"].upper()))
    answers: dict[str, str] = {}

    def work(n: int) -> None:
        for i in range(5):
            text = f"ticket {n}-{i}"
            answers[text] = adapter.predict(text).output["content"]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(llm.requests) == 40
    assert answers == {text: text.upper() for text in answers} and len(answers) == 40


def test_missing_usage_means_unknown_tokens_and_cost(llm: FakeLLM, adapter: OpenAIAdapter) -> None:
    llm.reply = lambda req: Reply(body=completion(None, finish_reason="length", usage=False))
    prediction = adapter.predict("hello")
    assert prediction.output == {"content": None, "finish_reason": "length"}
    assert (prediction.tokens_in, prediction.tokens_out, prediction.cost) == (None, None, None)


BASE = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "m"}, "'base_url' must be an http"),
        ({"base_url": "ftp://x", "model": "m"}, "'base_url' must be an http"),
        ({"base_url": "http://x"}, "'model' must name"),
        ({**BASE, "temperature": 3}, r"'temperature' must be a number in \[0, 2\]"),
        ({**BASE, "max_tokens": 0}, "'max_tokens' must be a positive integer"),
        ({**BASE, "timeout": -1}, "'timeout' must be a positive number"),
        ({**BASE, "labels": ["a", "A"]}, "distinct non-empty strings"),
        ({**BASE, "labels": []}, "distinct non-empty strings"),
        ({**BASE, "api_key_env": "NOT A NAME"}, "environment variable name"),
        ({**BASE, "price_per_1k_input": -1}, "non-negative"),
        ({**BASE, "prompt": "{unclosed"}, "not a valid"),
        ({**BASE, "extra_body": [1]}, "'extra_body' must be a mapping"),
    ],
)
def test_settings_are_checked_at_load(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        load_adapter("openai", b"", settings)


def test_the_artifact_versions_the_prompt_and_the_config_wins(llm: FakeLLM) -> None:
    artifact = json.dumps({"model": "small", "system": "Be brief.", "extra_body": {"seed": 7}})
    adapter = load_adapter(
        "openai", artifact.encode(), {"base_url": llm.url, "model": "large", "routing": "x"}
    )
    adapter.predict("hi")
    body = llm.requests[-1]["body"]
    assert body["model"] == "large" and body["seed"] == 7
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    with pytest.raises(DefinitionError, match="unknown openai setting"):
        load_adapter("openai", b'{"modle": "x"}', {"base_url": llm.url, "model": "m"})
    adapter.close()  # type: ignore[attr-defined]
