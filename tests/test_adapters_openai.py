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
    events: list[str] | None = None  # server-sent events: each a data line's payload


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
                if reply.events is not None:
                    # As OpenAI streams: text/event-stream, one "data: ..." line and a blank
                    # line per event, the connection closed after the last.
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    for event in reply.events:
                        self.wfile.write(f"data: {event}\n\n".encode())
                        self.wfile.flush()
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


# -- tool calls and streaming ------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "block_card",
            "description": "Block a customer's card.",
            "parameters": {
                "type": "object",
                "properties": {"card_last4": {"type": "string"}, "reason": {"type": "string"}},
                "required": ["card_last4"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "open_ticket",
            "parameters": {"type": "object", "properties": {"queue": {"type": "string"}}},
        },
    },
]


def tool_completion(*calls: tuple[str, str, str]) -> dict[str, Any]:
    """A chat.completion whose message asks for tools, exactly as OpenAI sends it."""
    body = completion(None, finish_reason="tool_calls")
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ],
        "refusal": None,
    }
    return body


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **more: Any) -> str:
    """One chat.completion.chunk event, as OpenAI streams it."""
    body: dict[str, Any] = {
        "id": "chatcmpl-7",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "served-model",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        **more,
    }
    return json.dumps(body)


USAGE = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}


def streamed_text(*pieces: str) -> list[str]:
    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *(chunk({"content": p}) for p in pieces),
        chunk({}, "stop"),
        chunk(None, usage=USAGE),
        "[DONE]",
    ]


def streamed_tool_calls() -> list[str]:
    """Two parallel tool calls, their arguments split across chunks as OpenAI does."""
    start = {"index": 0, "id": "call_A1", "type": "function"}
    return [
        chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{**start, "function": {"name": "block_card", "arguments": ""}}],
                "refusal": None,
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"card_'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'last4": "4242"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_B2",
                        "type": "function",
                        "function": {"name": "open_ticket", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"queue":"fraud"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(None, usage=USAGE),
        "[DONE]",
    ]


def test_tool_calls_are_returned_as_structured_data(llm: FakeLLM) -> None:
    adapter = OpenAIAdapter(
        {"base_url": llm.url, "model": "m", "tools": TOOLS, "tool_choice": "auto"}
    )
    llm.reply = lambda req: Reply(
        body=tool_completion(
            ("call_1", "block_card", '{"card_last4": "4242", "reason": "stolen"}'),
            ("call_2", "open_ticket", '{"queue": "fraud"}'),
        )
    )
    prediction = adapter.predict("My card was stolen, block it")
    body = llm.requests[-1]["body"]
    assert body["tools"] == TOOLS and body["tool_choice"] == "auto"
    assert prediction.output == {
        "content": None,
        "finish_reason": "tool_calls",
        "tool_calls": [
            {
                "id": "call_1",
                "name": "block_card",
                "arguments": {"card_last4": "4242", "reason": "stolen"},
            },
            {"id": "call_2", "name": "open_ticket", "arguments": {"queue": "fraud"}},
        ],
    }
    recorded = prediction.extra["tool_calls"]
    assert [(c["id"], c["name"]) for c in recorded] == [
        ("call_1", "block_card"),
        ("call_2", "open_ticket"),
    ]
    assert all(len(c["arguments_sha256"]) == 64 and "4242" not in str(c) for c in recorded)

    # The conversation goes on with the tool's result: the returned calls are accepted as
    # they are and sent back in the wire format.
    llm.reply = lambda req: Reply(body=completion("Your card is blocked."))
    follow = adapter.predict(
        {
            "messages": [
                {"role": "user", "content": "My card was stolen, block it"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": prediction.output["tool_calls"],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"blocked": true}'},
                {"role": "tool", "tool_call_id": "call_2", "content": '{"ticket": 9}'},
            ]
        }
    )
    assert follow.output["content"] == "Your card is blocked."
    sent = llm.requests[-1]["body"]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "block_card",
                    "arguments": '{"card_last4": "4242", "reason": "stolen"}',
                },
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "open_ticket", "arguments": '{"queue": "fraud"}'},
            },
        ],
    }
    assert sent[2] == {"role": "tool", "content": '{"blocked": true}', "tool_call_id": "call_1"}
    with pytest.raises(ModelInputError, match=r"'messages\[0\]' \(a tool result\) needs"):
        adapter.predict({"messages": [{"role": "tool", "content": "x"}]})
    adapter.close()


def test_bad_tool_calls_are_call_errors_that_quote_nothing(llm: FakeLLM) -> None:
    adapter = OpenAIAdapter({"base_url": llm.url, "model": "m", "tools": TOOLS})
    llm.reply = lambda req: Reply(body=tool_completion(("c", "block_card", '{"card_last4": 42')))
    with pytest.raises(
        ModelCallError,
        match=r"'block_card' with arguments that are not JSON "
        r"\(17 characters\)",
    ) as info:
        adapter.predict("x")
    assert "42" not in info.value.message.replace("(17", "")
    llm.reply = lambda req: Reply(body=tool_completion(("c", "wire_money", "{}")))
    with pytest.raises(ModelCallError, match="called the tool 'wire_money', which it was not"):
        adapter.predict("x")
    llm.reply = lambda req: Reply(body=tool_completion(("c", "block_card", "[1]")))
    with pytest.raises(ModelCallError, match="not a JSON object"):
        adapter.predict("x")
    with pytest.raises(DefinitionError, match="'tools' must be a list"):
        load_adapter("openai", b"", {**BASE, "tools": [{"type": "function", "function": {}}]})
    with pytest.raises(DefinitionError, match="'stream' must be true or false"):
        load_adapter("openai", b"", {**BASE, "stream": "yes"})
    adapter.close()


def test_a_streamed_answer_is_assembled_with_its_final_usage(llm: FakeLLM) -> None:
    adapter = OpenAIAdapter(
        {"base_url": llm.url, "model": "m", "stream": True, "price_per_1k_output": 2.0}
    )
    llm.reply = lambda req: Reply(events=streamed_text("Your card ", "is on ", "its way."))
    prediction = adapter.predict("Where is my card?")
    request = llm.requests[-1]
    assert request["body"]["stream"] is True
    assert request["body"]["stream_options"] == {"include_usage": True}
    assert request["headers"]["accept"] == "text/event-stream"
    assert prediction.output == {"content": "Your card is on its way.", "finish_reason": "stop"}
    assert (prediction.tokens_in, prediction.tokens_out) == (20, 30)
    assert prediction.cost == pytest.approx(30 / 1000 * 2.0)
    assert prediction.extra == {
        "id": "chatcmpl-7",
        "model": "served-model",
        "streamed": True,
        "chunks": 6,
    }

    llm.reply = lambda req: Reply(events=streamed_tool_calls())
    tools = OpenAIAdapter({"base_url": llm.url, "model": "m", "stream": True, "tools": TOOLS})
    called = tools.predict("block 4242 and open a fraud ticket")
    assert called.output["finish_reason"] == "tool_calls"
    assert called.output["tool_calls"] == [
        {"id": "call_A1", "name": "block_card", "arguments": {"card_last4": "4242"}},
        {"id": "call_B2", "name": "open_ticket", "arguments": {"queue": "fraud"}},
    ]
    adapter.close()
    tools.close()


@pytest.mark.parametrize(
    ("events", "message", "retryable"),
    [
        (streamed_text("half an ans")[:3], r"ended its stream before \[DONE\] \(3 chunks\)", True),
        (
            [
                chunk({"content": "x"}),
                json.dumps({"error": {"message": "4242", "code": "overloaded"}}),
            ],
            r"reported an error in its stream \(overloaded\)",
            True,
        ),
        (["{not json", "[DONE]"], "streamed a chunk that is not a chat.completion.chunk", False),
    ],
)
def test_broken_streams_are_call_errors(
    llm: FakeLLM, events: list[str], message: str, retryable: bool
) -> None:
    adapter = OpenAIAdapter({"base_url": llm.url, "model": "m", "stream": True})
    llm.reply = lambda req: Reply(events=events)
    with pytest.raises(ModelCallError, match=message) as info:
        adapter.predict("x")
    assert info.value.retryable is retryable and "4242" not in info.value.message
    llm.reply = lambda req: Reply(429, {"error": {"code": "rate_limit_exceeded"}})
    with pytest.raises(ModelCallError, match=r"rate limited \(HTTP 429\) \(rate_limit_exceeded\)"):
        adapter.predict("x")
    adapter.close()


def test_streamed_tool_calls_through_the_gateway_budget_and_records(llm: FakeLLM, app: Any) -> None:
    from aevos.errors import BudgetExceededError
    from aevos.models.gateway import Gateway
    from aevos.models.registry import ModelRegistry

    registry = ModelRegistry(app.store, app.audit)
    gateway = Gateway(app.store, registry, app.audit, flush_interval=0.05)
    artifact = json.dumps({"system": "You help bank customers.", "tools": TOOLS}).encode()
    registry.register(
        "assistant",
        artifact,
        flavor="openai",
        config={"base_url": llm.url, "model": "served-model", "stream": True},
        aliases=("champion",),
    )
    # Each call reserves an estimate of 10 tokens and settles at the 50 its final chunk
    # reports: the third call finds the 60 spent.
    gateway.set_budget(model="assistant", tokens=60, tokens_estimate=10)
    llm.reply = lambda req: Reply(events=streamed_tool_calls())
    first = gateway.predict("assistant", "block 4242")
    assert first.output["tool_calls"][0]["arguments"] == {"card_last4": "4242"}
    assert (first.prediction.tokens_in, first.prediction.tokens_out) == (20, 30)
    gateway.predict("assistant", "block 4242")
    with pytest.raises(BudgetExceededError):
        gateway.predict("assistant", "block 4242")
    assert len(llm.requests) == 2
    gateway.flush()
    records = app.audit.query("default", action="model.called", limit=100)
    ok = [r.data for r in records if r.data["outcome"] == "ok"]
    assert len(ok) == 2 and [r.data["outcome"] for r in records[2:]] == ["budget_exceeded"]
    for data in ok:
        assert (data["tokens_in"], data["tokens_out"], data["streamed"]) == (20, 30, True)
        assert [c["name"] for c in data["tool_calls"]] == ["block_card", "open_ticket"]
        assert "4242" not in json.dumps(data)
    gateway.close()
    registry.close()
