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

import os
import re
import string
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
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
        for key in ("temperature", "max_tokens"):
            if s.get(key) is not None:
                self._body[key] = s[key]
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
            for i, m in enumerate(messages):
                if not (
                    isinstance(m, Mapping)
                    and m.get("role") in _ROLES
                    and isinstance(m.get("content"), str)
                ):
                    raise ModelInputError(
                        f"input field 'messages[{i}]' must be {{role, content: string}}",
                        f"messages[{i}]",
                    )
            out = [{"role": m["role"], "content": m["content"]} for m in messages]
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
        headers = {"Accept": "application/json"}
        key = self._key()
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        where = f"{self.model} at {self.endpoint}"
        try:
            response = self._client.post(
                f"{self.base_url}/chat/completions", json=body, headers=headers
            )
        except httpx.TimeoutException:
            raise ModelTimeoutError(f"{where} did not answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ModelCallError(
                f"cannot reach {where}: {type(exc).__name__}", retryable=True
            ) from None
        if response.status_code != 200:
            raise self._status_error(response, where, key)
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"]["content"]
            finish_reason = choice.get("finish_reason")
            if content is not None and not isinstance(content, str):
                raise TypeError("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ModelCallError(
                f"{where} answered HTTP 200 with a body that is not a chat completion",
                status=200,
            ) from None
        usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
        tokens_in = _count(usage.get("prompt_tokens"))
        tokens_out = _count(usage.get("completion_tokens"))
        return Prediction(
            label=self._label(content, where) if self.labels else None,
            output={"content": content, "finish_reason": finish_reason},
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=self._cost(tokens_in, tokens_out),
            extra={"id": data.get("id"), "model": data.get("model")},
        )

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
