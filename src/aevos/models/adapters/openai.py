"""The ``openai`` flavor: a chat model behind any OpenAI-compatible HTTP server.

vLLM, Ollama, llama.cpp's server, LiteLLM's proxy and the hosted APIs all speak the
``POST {base_url}/chat/completions`` wire format; this adapter is a plain, synchronous
``httpx`` client of it. No retries here: the gateway owns retries, fallbacks and breakers,
and needs each failure reported as it happened.

Settings come from the version's artifact (a JSON/YAML document, may be empty: it versions
a prompt) overridden by its config:

- ``base_url`` (required, e.g. ``http://127.0.0.1:8000/v1``), ``model`` (required);
- ``system``: the system prompt; ``prompt``: a template for the user message, filled from a
  mapping input (``{field}``) or from a string input as ``{input}``;
- ``labels``: the answers allowed; the content must be one of them (case and surrounding
  punctuation aside) and becomes the label, else :class:`ModelCallError`. The system prompt
  is extended to say so unless ``label_instruction`` is false;
- ``temperature``, ``max_tokens``, ``extra_body`` (more request fields, e.g. ``seed``);
- ``timeout`` in seconds (default 30);
- ``api_key_env``: the NAME of the environment variable holding the API key. The key is
  read at each call, sent as ``Authorization: Bearer``, and never stored, logged or put in
  an error; a setting named ``api_key`` is refused;
- ``price_per_1k_input`` / ``price_per_1k_output``: to fill ``Prediction.cost``.

Input: a string (the user message), a mapping filled into ``prompt``, or
``{"messages": [{"role", "content"}, ...]}``. The answer is ``Prediction(label, output=
{"content", "finish_reason"}, tokens_in, tokens_out, cost, extra={"id", "model"})``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ...errors import DefinitionError, ModelCallError, ModelInputError, ModelTimeoutError
from .. import flavors
from ..types import ModelAdapter, Prediction
from . import signature as sig
from .document import parse_document

FLAVOR = "openai"
DEFAULT_TIMEOUT = 30.0
_SETTINGS = {
    "base_url",
    "model",
    "system",
    "prompt",
    "labels",
    "label_instruction",
    "temperature",
    "max_tokens",
    "extra_body",
    "timeout",
    "api_key_env",
    "price_per_1k_input",
    "price_per_1k_output",
    "tools",
    "tool_choice",
    "stream",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROLES = {"system", "user", "assistant", "tool", "developer"}


class _Fields(dict[str, Any]):
    """Template values; a field the template names but the input lacks is an input error."""

    def __missing__(self, key: str) -> Any:
        raise ModelInputError(f"input field {key!r} is missing (the prompt uses it)", key)


class OpenAIAdapter:
    """An OpenAI-compatible chat model. Thread-safe: ``httpx.Client`` pools connections
    across threads, and the adapter holds no per-call state."""

    flavor = FLAVOR

    def __init__(self, settings: Mapping[str, Any]) -> None:
        s = _check(settings)
        self.base_url: str = s["base_url"].rstrip("/")
        self.model: str = s["model"]
        self.labels: tuple[str, ...] | None = tuple(s["labels"]) if s.get("labels") else None
        self.prompt: str | None = s.get("prompt")
        self.api_key_env: str | None = s.get("api_key_env")
        self.timeout = float(s.get("timeout", DEFAULT_TIMEOUT))
        self.price_in = s.get("price_per_1k_input")
        self.price_out = s.get("price_per_1k_output")
        system = s.get("system")
        if self.labels and s.get("label_instruction", True):
            rule = "Answer with exactly one of: " + ", ".join(self.labels) + "."
            system = f"{system}\n\n{rule}" if system else rule
        self.system: str | None = system
        self._body: dict[str, Any] = dict(s.get("extra_body") or {})
        for key in ("temperature", "max_tokens", "tool_choice"):
            if s.get(key) is not None:
                self._body[key] = s[key]
        self.tools: tuple[str, ...] = ()
        if s.get("tools"):
            self._body["tools"] = [dict(t) for t in s["tools"]]
            self.tools = tuple(t["function"]["name"] for t in s["tools"])
        self.stream = bool(s.get("stream", False))
        if self.stream:
            # The final chunk then carries the usage, so budgets settle on real tokens.
            self._body["stream"] = True
            self._body["stream_options"] = {"include_usage": True}
        # Where errors say the call went: scheme, host and port, never userinfo.
        parts = urlsplit(self.base_url)
        self.endpoint = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        self._client = httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        self._client.close()

    def messages(self, input: Any) -> list[dict[str, Any]]:
        """The chat messages sent for ``input``."""
        if isinstance(input, Mapping) and "messages" in input:
            messages = input["messages"]
            if not isinstance(messages, list) or not messages:
                raise ModelInputError("input field 'messages' must be a non-empty list", "messages")
            out = [_message(m, i) for i, m in enumerate(messages)]
            if self.system and out[0]["role"] != "system":
                out.insert(0, {"role": "system", "content": self.system})
            return out
        if isinstance(input, str):
            content = self.prompt.format_map(_Fields(input=input)) if self.prompt else input
        elif isinstance(input, Mapping):
            if self.prompt is None:
                raise ModelInputError(
                    "a mapping input needs a 'prompt' template in the model's settings, "
                    "or 'messages'"
                )
            content = self.prompt.format_map(_Fields({str(k): v for k, v in input.items()}))
        else:
            raise ModelInputError(
                f"input must be a string or a mapping, got {type(input).__name__}"
            )
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": content}]

    def predict(self, input: Any) -> Prediction:
        body = {**self._body, "model": self.model, "messages": self.messages(input)}
        headers = {"Accept": "text/event-stream" if self.stream else "application/json"}
        key = self._key()
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        where = f"{self.model} at {self.endpoint}"
        url = f"{self.base_url}/chat/completions"
        data: Any
        try:
            if self.stream:
                with self._client.stream("POST", url, json=body, headers=headers) as response:
                    if response.status_code != 200:
                        response.read()
                        raise self._status_error(response, where, key)
                    data = _assemble(response, where, time.monotonic() + self.timeout)
            else:
                response = self._client.post(url, json=body, headers=headers)
                if response.status_code != 200:
                    raise self._status_error(response, where, key)
                try:
                    data = response.json()
                except ValueError:
                    data = None
        except httpx.TimeoutException:
            raise ModelTimeoutError(f"{where} did not answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ModelCallError(
                f"cannot reach {where}: {type(exc).__name__}", retryable=True
            ) from None
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content")
            finish_reason = choice.get("finish_reason")
            if content is not None and not isinstance(content, str):
                raise TypeError("content")
            raw_calls = message.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise TypeError("tool_calls")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ModelCallError(
                f"{where} answered HTTP 200 with a body that is not a chat completion",
                status=200,
            ) from None
        calls = [self._tool_call(c, i, where) for i, c in enumerate(raw_calls)]
        usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
        tokens_in = _count(usage.get("prompt_tokens"))
        tokens_out = _count(usage.get("completion_tokens"))
        output: dict[str, Any] = {"content": content, "finish_reason": finish_reason}
        extra: dict[str, Any] = {"id": data.get("id"), "model": data.get("model")}
        if calls:
            output["tool_calls"] = calls
            # What the call record keeps: which tools were asked for, never the arguments
            # (they are built from the caller's input), only their digest.
            extra["tool_calls"] = [
                {"id": c["id"], "name": c["name"], "arguments_sha256": _digest(c["arguments"])}
                for c in calls
            ]
        if self.stream:
            extra["streamed"] = True
            extra["chunks"] = data["chunks"]
        return Prediction(
            label=self._label(content, where) if self.labels and not calls else None,
            output=output,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=self._cost(tokens_in, tokens_out),
            extra=extra,
        )

    def _tool_call(self, raw: Any, i: int, where: str) -> dict[str, Any]:
        """One tool call of the answer as ``{"id", "name", "arguments"}`` (parsed JSON)."""
        try:
            function = raw["function"]
            name, text, call_id = function["name"], function.get("arguments") or "{}", raw["id"]
            if not (isinstance(name, str) and isinstance(text, str) and isinstance(call_id, str)):
                raise TypeError("tool call")
        except (KeyError, TypeError):
            raise ModelCallError(
                f"{where} answered a malformed tool call (tool_calls[{i}])", status=200
            ) from None
        if self.tools and name not in self.tools:
            raise ModelCallError(
                f"{where} called the tool {name[:64]!r}, which it was not given "
                f"(given: {', '.join(self.tools)})",
                status=200,
            )
        try:
            arguments = json.loads(text)
        except ValueError:
            # The text is model output built from the caller's input: only its size is told.
            raise ModelCallError(
                f"{where} called {name!r} with arguments that are not JSON "
                f"({len(text)} characters)",
                status=200,
            ) from None
        if not isinstance(arguments, dict):
            raise ModelCallError(
                f"{where} called {name!r} with arguments that are not a JSON object", status=200
            )
        return {"id": call_id, "name": name, "arguments": arguments}

    def batch_predict(self, inputs: Iterable[Any]) -> list[Prediction]:
        return [self.predict(x) for x in inputs]

    def _key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ModelCallError(
                f"the environment variable {self.api_key_env} (the API key of {self.model}) "
                "is not set"
            )
        return key

    def _status_error(
        self, response: httpx.Response, where: str, key: str | None
    ) -> ModelCallError:
        status = response.status_code
        kind = _error_kind(response, key)
        detail = f" ({kind})" if kind else ""
        if status == 429:
            retry_after = response.headers.get("retry-after", "")
            hint = f"; retry after {retry_after}s" if retry_after.isdigit() else ""
            return ModelCallError(
                f"{where} is rate limited (HTTP 429){detail}{hint}", status=429, retryable=True
            )
        if status >= 500:
            return ModelCallError(
                f"{where} failed with HTTP {status}{detail}", status=status, retryable=True
            )
        if status in (401, 403) and self.api_key_env:
            detail += f"; check the key in ${self.api_key_env}"
        return ModelCallError(f"{where} refused the call with HTTP {status}{detail}", status=status)

    def _label(self, content: str | None, where: str) -> str:
        assert self.labels is not None
        answer = (content or "").strip().strip("\"'`.*").strip().casefold()
        for label in self.labels:
            if label.casefold() == answer:
                return label
        # The content is model output about the caller's input: never put it in the error.
        raise ModelCallError(
            f"{where} answered outside its {len(self.labels)} labels "
            f"({len(content or '')} characters)"
        )

    def _cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        if self.price_in is None and self.price_out is None:
            return None
        if tokens_in is None and tokens_out is None:
            return None
        return ((tokens_in or 0) * float(self.price_in or 0.0)) / 1000 + (
            (tokens_out or 0) * float(self.price_out or 0.0)
        ) / 1000


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _message(m: Any, i: int) -> dict[str, Any]:
    """One input message in the wire format: ``{role, content}``; an assistant message may
    carry ``tool_calls`` (as this adapter returns them, or as OpenAI sends them) and no
    content; a ``tool`` message answers one by ``tool_call_id``."""
    where = f"messages[{i}]"
    if not isinstance(m, Mapping) or m.get("role") not in _ROLES:
        raise ModelInputError(f"input field {where!r} must be {{role, content: string}}", where)
    role, content = m["role"], m.get("content")
    out: dict[str, Any] = {"role": role, "content": content}
    calls = m.get("tool_calls")
    if role == "assistant" and calls is not None:
        if (
            not isinstance(calls, list)
            or not calls
            or not (content is None or isinstance(content, str))
        ):
            raise ModelInputError(f"input field '{where}.tool_calls' must be a list", where)
        out["tool_calls"] = [_wire_call(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(calls)]
        return out
    if not isinstance(content, str):
        raise ModelInputError(f"input field {where!r} must be {{role, content: string}}", where)
    if role == "tool":
        if not isinstance(m.get("tool_call_id"), str) or not m["tool_call_id"]:
            raise ModelInputError(
                f"input field {where!r} (a tool result) needs tool_call_id", where
            )
        out["tool_call_id"] = m["tool_call_id"]
    return out


def _wire_call(call: Any, where: str) -> dict[str, Any]:
    if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
        function = call["function"]
        name, arguments = function.get("name"), function.get("arguments")
    elif isinstance(call, Mapping):
        name, arguments = call.get("name"), call.get("arguments")
        if isinstance(arguments, Mapping):
            arguments = json.dumps(arguments, ensure_ascii=False)
    else:
        name = arguments = None
    if not (
        isinstance(call, Mapping)
        and isinstance(call.get("id"), str)
        and isinstance(name, str)
        and isinstance(arguments, str)
    ):
        raise ModelInputError(
            f"input field {where!r} must be {{id, name, arguments}} or an OpenAI tool call", where
        )
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _assemble(response: httpx.Response, where: str, deadline: float) -> dict[str, Any]:
    """A streamed answer (server-sent events of ``chat.completion.chunk``) assembled into
    the shape of a whole ``chat.completion``, usage from the final chunk when it has one."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    result: dict[str, Any] = {"id": None, "model": None, "usage": None, "chunks": 0}
    finish_reason = None
    role = "assistant"
    done = False
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("stream deadline")
        if not line.startswith("data:"):
            continue  # blank separators, comments (": keep-alive"), event names
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                raise TypeError("chunk")
            if "error" in chunk:
                raise ModelCallError(
                    f"{where} reported an error in its stream ({_kind(chunk['error'])})",
                    status=200,
                    retryable=True,
                )
            result["chunks"] += 1
            result["id"] = result["id"] or chunk.get("id")
            result["model"] = result["model"] or chunk.get("model")
            if isinstance(chunk.get("usage"), dict):
                result["usage"] = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                role = delta.get("role") or role
                piece = delta.get("content")
                if piece is not None:
                    if not isinstance(piece, str):
                        raise TypeError("content")
                    content.append(piece)
                for part in delta.get("tool_calls") or []:
                    call = calls.setdefault(
                        int(part.get("index", 0)),
                        {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                    )
                    call["id"] = part.get("id") or call["id"]
                    function = part.get("function") or {}
                    call["function"]["name"] += function.get("name") or ""
                    call["function"]["arguments"] += function.get("arguments") or ""
                finish_reason = choice.get("finish_reason") or finish_reason
        except (ValueError, TypeError, AttributeError):
            raise ModelCallError(
                f"{where} streamed a chunk that is not a chat.completion.chunk", status=200
            ) from None
    if not done:
        raise ModelCallError(
            f"{where} ended its stream before [DONE] ({result['chunks']} chunks)",
            status=200,
            retryable=True,
        )
    message: dict[str, Any] = {"role": role, "content": "".join(content) if content else None}
    if calls:
        message["tool_calls"] = [calls[k] for k in sorted(calls)]
    result["choices"] = [{"index": 0, "message": message, "finish_reason": finish_reason}]
    return result


def _kind(error: Any) -> str:
    kind = error.get("code") or error.get("type") if isinstance(error, Mapping) else None
    return kind[:64] if isinstance(kind, str) and re.fullmatch(r"[\w.:-]+", kind) else "unknown"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _error_kind(response: httpx.Response, key: str | None) -> str:
    """The error's type or code from an OpenAI-style error body, short and key-free.

    Only the machine-readable kind is kept: an error message may quote the prompt.
    """
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, Mapping):
        return ""
    kind = error.get("code") or error.get("type")
    if not isinstance(kind, str):
        return ""
    kind = kind[:64]
    if key and key in kind:
        return ""
    return kind if re.fullmatch(r"[\w.:-]+", kind) else ""


def _check(settings: Mapping[str, Any]) -> dict[str, Any]:
    if "api_key" in settings:
        raise DefinitionError(
            "an API key must not be stored with a model: put it in an environment variable "
            "and name that variable in 'api_key_env'"
        )
    s = {k: v for k, v in settings.items() if k in _SETTINGS}
    base_url = s.get("base_url")
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https"):
        raise DefinitionError("openai 'base_url' must be an http(s) URL")
    if not isinstance(s.get("model"), str) or not s["model"]:
        raise DefinitionError("openai 'model' must name the served model")
    for key in ("system", "prompt"):
        if s.get(key) is not None and not isinstance(s[key], str):
            raise DefinitionError(f"openai {key!r} must be a string")
    if s.get("prompt") is not None:
        try:
            list(string.Formatter().parse(s["prompt"]))
        except ValueError:
            raise DefinitionError("openai 'prompt' is not a valid {field} template") from None
    labels = s.get("labels")
    if labels is not None and (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(x, str) and x.strip() for x in labels)
        or len({x.casefold() for x in labels}) != len(labels)
    ):
        raise DefinitionError("openai 'labels' must be a list of distinct non-empty strings")
    temperature = s.get("temperature")
    if temperature is not None and not (sig.is_number(temperature) and 0 <= temperature <= 2):
        raise DefinitionError("openai 'temperature' must be a number in [0, 2]")
    max_tokens = s.get("max_tokens")
    if max_tokens is not None and not (sig.is_integer(max_tokens) and max_tokens > 0):
        raise DefinitionError("openai 'max_tokens' must be a positive integer")
    timeout = s.get("timeout", DEFAULT_TIMEOUT)
    if not (sig.is_number(timeout) and timeout > 0):
        raise DefinitionError("openai 'timeout' must be a positive number of seconds")
    for key in ("price_per_1k_input", "price_per_1k_output"):
        if s.get(key) is not None and not (sig.is_number(s[key]) and s[key] >= 0):
            raise DefinitionError(f"openai {key!r} must be a non-negative number")
    env = s.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not _ENV_NAME.fullmatch(env)):
        raise DefinitionError("openai 'api_key_env' must be an environment variable name")
    tools = s.get("tools")
    if tools is not None and (
        not isinstance(tools, list)
        or not tools
        or not all(
            isinstance(t, Mapping)
            and t.get("type") == "function"
            and isinstance(t.get("function"), Mapping)
            and isinstance(t["function"].get("name"), str)
            and _TOOL_NAME.fullmatch(t["function"]["name"])
            for t in tools
        )
    ):
        raise DefinitionError(
            "openai 'tools' must be a list of {type: function, function: {name, description, "
            "parameters}} with names of letters, digits, _ and - (at most 64)"
        )
    choice = s.get("tool_choice")
    if choice is not None and not (
        choice in ("auto", "none", "required") or isinstance(choice, Mapping)
    ):
        raise DefinitionError("openai 'tool_choice' must be auto, none, required or a mapping")
    if s.get("stream") is not None and not isinstance(s["stream"], bool):
        raise DefinitionError("openai 'stream' must be true or false")
    extra = s.get("extra_body")
    if extra is not None and not isinstance(extra, Mapping):
        raise DefinitionError("openai 'extra_body' must be a mapping of request fields")
    return s


def load(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> ModelAdapter:
    """Flavor loader: prompt document (may be empty) + config -> :class:`OpenAIAdapter`."""
    document = parse_document(artifact)
    if not isinstance(document, Mapping):
        raise DefinitionError("an openai artifact is a mapping of settings (or empty)")
    unknown = sorted(set(document) - _SETTINGS - {"api_key"})
    if unknown:
        raise DefinitionError(f"unknown openai setting(s) in the artifact: {', '.join(unknown)}")
    # The config may also carry settings of the gateway's; only this flavor's are taken.
    ours = {k: v for k, v in config.items() if k in _SETTINGS or k == "api_key"}
    return OpenAIAdapter({**document, **ours})


flavors.register_flavor(FLAVOR, load)
