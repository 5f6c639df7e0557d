"""The ``oip`` flavor: a model served over the Open Inference Protocol (V2 REST).

KServe, NVIDIA Triton and Seldon MLServer all serve ``POST {base_url}/v2/models/{model}
[/versions/{version}]/infer`` with a JSON body of named tensors (``inputs``: name, shape,
datatype, flat ``data``) and answer with ``outputs`` of the same shape; readiness is
``GET /v2/health/ready`` and ``GET /v2/models/{model}[/versions/{version}]/ready``, and
metadata ``GET /v2/models/{model}[/versions/{version}]``. This adapter is a synchronous
``httpx`` client of that protocol: the model lives in the server, so registering an ``oip``
version stores only where it is served and how to call it, and the gateway governs its calls
like any other version's (canary, cascade, breaker, budgets, records).

Settings come from the version's artifact (a JSON/YAML document) overridden by its config:

- ``base_url`` (required, e.g. ``http://127.0.0.1:8080``), ``model`` (required: the served
  model's name), ``version`` (the served version, if the server has several);
- ``input``: the input tensor's name (default ``input-0``); ``datatype``: ``FP64``
  (default for numbers), ``FP32``, ``INT64``, ``INT32`` or ``BYTES`` (default for text);
- ``features``: feature names, to turn a mapping input into a row in that order;
- ``outputs``: the output tensors to ask for (default: all the server returns);
  ``label_output``: the one whose first value is the label (default: the first returned);
  ``proba_output``: one holding class probabilities, whose largest is the confidence;
  ``classes``: class names in the order of ``proba_output``'s columns (the label is then
  the argmax's class when no ``label_output`` is returned);
- ``parameters``: request parameters sent as they are (e.g. ``{"content_type": "np"}``);
- ``timeout`` in seconds (default 10); ``retries``: how many times a call that never reached
  the model (connection refused or reset, HTTP 502/503/504) is retried at once, after 0.05 s
  then doubling (default 2; inference is idempotent, so a retry cannot do harm);
- ``api_key_env``: the NAME of an environment variable holding a bearer token (KServe or
  Triton behind an authenticating proxy); a setting named ``api_key`` is refused;
- ``max_batch``: the most rows one call may send (default 1024).

Input: a list of numbers (one row), a mapping of ``features``, a string (one BYTES element
sent with ``content_type: str``, for a served text pipeline), or ``{"inputs": [...]}``:
OIP input tensors sent as given. ``batch_predict`` sends many rows in one request.
The answer is ``Prediction(label, confidence, output={"outputs": {name: values}},
extra={"id", "model_name", "model_version"})``; values are nested to their tensor's shape.

A server that cannot be reached, that is not ready, or that answers 5xx is a retryable
:class:`~aevos.errors.ModelCallError` (so the breaker counts it and fallbacks answer); an
answer that is not an inference response, or an HTTP 4xx, is not retryable. The server's
own error text may quote the input: errors keep only its status and length.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ...errors import DefinitionError, ModelCallError, ModelInputError, ModelTimeoutError
from .. import flavors
from ..types import ModelAdapter, Prediction
from . import signature as sig
from .document import parse_document

FLAVOR = "oip"
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2
DEFAULT_MAX_BATCH = 1024
_BACKOFF = 0.05
_SETTINGS = {
    "base_url",
    "model",
    "version",
    "input",
    "datatype",
    "features",
    "outputs",
    "label_output",
    "proba_output",
    "classes",
    "parameters",
    "timeout",
    "retries",
    "api_key_env",
    "max_batch",
}
_DATATYPES = {"FP64", "FP32", "INT64", "INT32", "BYTES"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TENSOR_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
_RETRY_STATUS = {502, 503, 504}


class OIPAdapter:
    """A model behind an Open Inference Protocol server. Thread-safe: ``httpx.Client``
    pools connections across threads, and the adapter holds no per-call state."""

    flavor = FLAVOR

    def __init__(self, settings: Mapping[str, Any]) -> None:
        s = _check(settings)
        self.base_url: str = s["base_url"].rstrip("/")
        self.model: str = s["model"]
        self.version: str | None = None if s.get("version") is None else str(s["version"])
        self.input_name: str = s.get("input", "input-0")
        self.datatype: str | None = s.get("datatype")
        self.features: tuple[str, ...] | None = tuple(s["features"]) if s.get("features") else None
        self.outputs: tuple[str, ...] = tuple(s.get("outputs") or ())
        self.label_output: str | None = s.get("label_output")
        self.proba_output: str | None = s.get("proba_output")
        self.classes: tuple[Any, ...] | None = tuple(s["classes"]) if s.get("classes") else None
        self.parameters: dict[str, Any] = dict(s.get("parameters") or {})
        self.timeout = float(s.get("timeout", DEFAULT_TIMEOUT))
        self.retries = int(s.get("retries", DEFAULT_RETRIES))
        self.api_key_env: str | None = s.get("api_key_env")
        self.max_batch = int(s.get("max_batch", DEFAULT_MAX_BATCH))
        path = f"/v2/models/{quote(self.model, safe='')}"
        if self.version is not None:
            path += f"/versions/{quote(self.version, safe='')}"
        self.model_path = path
        parts = urlsplit(self.base_url)
        # Where errors say the call went: scheme, host and port, never userinfo.
        self.endpoint = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        self._where = f"{self.model}" + (f"@{self.version}" if self.version else "")
        self._where += f" at {self.endpoint}"
        self._client = httpx.Client(timeout=self.timeout)

    def close(self) -> None:
        self._client.close()

    # -- the protocol's other endpoints ------------------------------------------------------

    def ready(self) -> bool:
        """Whether the server is ready and serves this model (``GET .../ready``: 200)."""
        try:
            server = self._client.get(f"{self.base_url}/v2/health/ready", headers=self._headers())
            if server.status_code != 200:
                return False
            model = self._client.get(
                f"{self.base_url}{self.model_path}/ready", headers=self._headers()
            )
        except httpx.HTTPError:
            return False
        return model.status_code == 200

    def metadata(self) -> dict[str, Any]:
        """The served model's metadata (name, versions, platform, inputs, outputs)."""
        response = self._send("GET", f"{self.base_url}{self.model_path}", None)
        try:
            data = response.json()
            if not isinstance(data, dict) or not isinstance(data.get("name"), str):
                raise TypeError("name")
        except (ValueError, TypeError):
            raise ModelCallError(
                f"{self._where} answered HTTP 200 with a body that is not model metadata",
                status=200,
            ) from None
        return data

    # -- inference ---------------------------------------------------------------------------

    def request(self, inputs: Sequence[Any]) -> dict[str, Any]:
        """The inference request body for ``inputs`` (one or more rows)."""
        if len(inputs) == 1 and isinstance(inputs[0], Mapping) and "inputs" in inputs[0]:
            tensors = _raw_tensors(inputs[0]["inputs"])
        else:
            if not inputs:
                raise ModelInputError("nothing to predict: no input rows")
            if len(inputs) > self.max_batch:
                raise ModelInputError(
                    f"{len(inputs)} rows exceed this model's max_batch of {self.max_batch}"
                )
            tensors = [self._tensor([self._row(x) for x in inputs])]
        body: dict[str, Any] = {"id": uuid.uuid4().hex, "inputs": tensors}
        if self.outputs:
            body["outputs"] = [{"name": name} for name in self.outputs]
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body

    def predict(self, input: Any) -> Prediction:
        return self._infer([input])[0]

    def batch_predict(self, inputs: Iterable[Any]) -> list[Prediction]:
        rows = list(inputs)
        if any(isinstance(x, Mapping) and "inputs" in x for x in rows):
            return [self.predict(x) for x in rows]
        return self._infer(rows)

    def _infer(self, rows: Sequence[Any]) -> list[Prediction]:
        body = self.request(rows)
        response = self._send("POST", f"{self.base_url}{self.model_path}/infer", body)
        outputs, data = self._outputs(response)
        count = len(rows) if not (len(rows) == 1 and _is_raw(rows[0])) else 1
        return [self._prediction(outputs, data, i, count) for i in range(count)]

    def _row(self, value: Any) -> list[Any]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, Mapping):
            if self.features is None:
                raise ModelInputError(
                    "a mapping input needs 'features' in the model's settings (their order "
                    "in a row), or 'inputs' (OIP tensors)"
                )
            row = []
            for name in self.features:
                if name not in value:
                    raise ModelInputError(f"input field {name!r} is missing", name)
                row.append(_number(value[name], name))
            return row
        if isinstance(value, list | tuple):
            if not value:
                raise ModelInputError("an input row must not be empty")
            if self.features is not None and len(value) != len(self.features):
                raise ModelInputError(
                    f"an input row has {len(value)} values; this model takes "
                    f"{len(self.features)} ({', '.join(self.features)})"
                )
            return [_number(v, f"[{i}]") for i, v in enumerate(value)]
        raise ModelInputError(
            f"input must be a list of numbers, a mapping, a string or {{'inputs': [...]}}, "
            f"got {type(value).__name__}"
        )

    def _tensor(self, rows: list[list[Any]]) -> dict[str, Any]:
        text = [isinstance(r[0], str) for r in rows]
        if any(text):
            if not all(text) or any(len(r) != 1 for r in rows):
                raise ModelInputError("text and numeric inputs cannot share one call")
            return {
                "name": self.input_name,
                "shape": [len(rows)],
                "datatype": "BYTES",
                "data": [r[0] for r in rows],
                "parameters": {"content_type": "str"},
            }
        width = len(rows[0])
        if any(len(r) != width for r in rows):
            raise ModelInputError("the input rows have different lengths")
        datatype = self.datatype or "FP64"
        data = [v for r in rows for v in r]
        if datatype.startswith("INT") and not all(float(v).is_integer() for v in data):
            raise ModelInputError(f"this model takes {datatype} values; the input has fractions")
        if datatype.startswith("INT"):
            data = [int(v) for v in data]
        return {
            "name": self.input_name,
            "shape": [len(rows), width],
            "datatype": datatype,
            "data": data,
        }

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ModelCallError(
                    f"the environment variable {self.api_key_env} (the token of "
                    f"{self._where}) is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _send(self, method: str, url: str, body: dict[str, Any] | None) -> httpx.Response:
        headers = self._headers()
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                response = self._client.request(method, url, json=body, headers=headers)
            except httpx.TimeoutException:
                raise ModelTimeoutError(
                    f"{self._where} did not answer within {self.timeout:g}s"
                ) from None
            except httpx.HTTPError as exc:
                error = ModelCallError(
                    f"cannot reach {self._where}: {type(exc).__name__}", retryable=True
                )
            else:
                if response.status_code == 200:
                    return response
                error = self._status_error(response)
                if response.status_code not in _RETRY_STATUS:
                    raise error
            pause = _BACKOFF * 2**attempt
            if attempt >= self.retries or time.monotonic() + pause >= deadline:
                if not attempt:
                    raise error
                raise ModelCallError(
                    f"{error.message} (after {attempt + 1} attempts)",
                    status=error.status,
                    retryable=True,
                )
            time.sleep(pause)
            attempt += 1

    def _status_error(self, response: httpx.Response) -> ModelCallError:
        status = response.status_code
        # MLServer, KServe and Triton put the reason in {"error": "..."}; it may quote the
        # input, so only its length is kept.
        size = len(response.content)
        detail = f" ({size} bytes of error body)" if size else ""
        if status == 404:
            return ModelCallError(
                f"{self._where} is not served there (HTTP 404): check the model name and "
                "version, and that the server has loaded it",
                status=404,
            )
        if status >= 500:
            return ModelCallError(
                f"{self._where} failed with HTTP {status}{detail}", status=status, retryable=True
            )
        hint = (
            f"; check the token in ${self.api_key_env}"
            if status in (401, 403) and (self.api_key_env)
            else ""
        )
        return ModelCallError(
            f"{self._where} refused the call with HTTP {status}{detail}{hint}", status=status
        )

    def _outputs(self, response: httpx.Response) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        try:
            data = response.json()
            if not isinstance(data, dict) or not isinstance(data.get("outputs"), list):
                raise TypeError("outputs")
            outputs: dict[str, list[Any]] = {}
            for tensor in data["outputs"]:
                name, shape, values = tensor["name"], tensor["shape"], tensor["data"]
                if not (
                    isinstance(name, str) and isinstance(shape, list) and isinstance(values, list)
                ):
                    raise TypeError("tensor")
                outputs[name] = _reshape(values, [int(d) for d in shape])
        except (ValueError, KeyError, TypeError):
            raise ModelCallError(
                f"{self._where} answered HTTP 200 with a body that is not an inference response",
                status=200,
            ) from None
        if not outputs:
            raise ModelCallError(f"{self._where} answered no outputs", status=200)
        for wanted in (self.label_output, self.proba_output):
            if wanted is not None and wanted not in outputs:
                raise ModelCallError(
                    f"{self._where} answered without the output {wanted!r} "
                    f"(it answered: {', '.join(sorted(outputs))})",
                    status=200,
                )
        return outputs, data

    def _prediction(
        self, outputs: dict[str, list[Any]], data: dict[str, Any], i: int, count: int
    ) -> Prediction:
        mine = {name: _row_of(values, i, count) for name, values in outputs.items()}
        confidence: float | None = None
        label: Any = None
        if self.proba_output is not None:
            probs = _flat(mine[self.proba_output])
            if not probs or not all(sig.is_number(p) for p in probs):
                raise ModelCallError(
                    f"{self._where} answered {self.proba_output!r} that is not probabilities",
                    status=200,
                )
            best = max(range(len(probs)), key=lambda k: probs[k])
            confidence = min(1.0, max(0.0, float(probs[best])))
            if self.classes is not None:
                if len(self.classes) != len(probs):
                    raise ModelCallError(
                        f"{self._where} answered {len(probs)} probabilities for "
                        f"{len(self.classes)} classes",
                        status=200,
                    )
                label = self.classes[best]
        name = self.label_output or next((n for n in outputs if n != self.proba_output), None)
        if name is not None:
            values = _flat(mine[name])
            label = values[0] if len(values) == 1 else values
        return Prediction(
            label=label,
            confidence=confidence,
            output={"outputs": mine},
            extra={
                "id": data.get("id"),
                "model_name": data.get("model_name"),
                "model_version": data.get("model_version"),
            },
        )


def _is_raw(value: Any) -> bool:
    return isinstance(value, Mapping) and "inputs" in value


def _number(value: Any, field: str) -> float | int:
    if not sig.is_number(value) or not math.isfinite(value):
        raise ModelInputError(
            f"input field {field!r} must be a finite number, got {type(value).__name__}", field
        )
    return value  # type: ignore[no-any-return]


def _raw_tensors(tensors: Any) -> list[dict[str, Any]]:
    if not isinstance(tensors, list) or not tensors:
        raise ModelInputError("input field 'inputs' must be a non-empty list of tensors", "inputs")
    out = []
    for i, t in enumerate(tensors):
        if not (
            isinstance(t, Mapping)
            and isinstance(t.get("name"), str)
            and _TENSOR_NAME.fullmatch(t["name"])
            and isinstance(t.get("shape"), list)
            and all(sig.is_integer(d) and d >= 0 for d in t["shape"])
            and t.get("datatype") in _DATATYPES | {"BOOL", "UINT8", "FP16"}
            and isinstance(t.get("data"), list)
        ):
            raise ModelInputError(
                f"input field 'inputs[{i}]' must be an OIP tensor "
                "{name, shape: [int], datatype, data: [...]}",
                f"inputs[{i}]",
            )
        if math.prod(t["shape"]) != len(_flat(t["data"])):
            raise ModelInputError(
                f"input field 'inputs[{i}]' has {len(_flat(t['data']))} values for shape "
                f"{t['shape']}",
                f"inputs[{i}]",
            )
        out.append(dict(t))
    return out


def _flat(values: Any) -> list[Any]:
    if isinstance(values, list):
        return [v for x in values for v in _flat(x)]
    return [values]


def _reshape(values: list[Any], shape: list[int]) -> list[Any]:
    """``values`` (flat, or already nested as some servers send them) nested to ``shape``."""
    flat = _flat(values)
    if math.prod(shape) != len(flat):
        raise ValueError("shape")
    if len(shape) <= 1:
        return flat

    def nest(items: list[Any], dims: list[int]) -> list[Any]:
        if len(dims) == 1:
            return items
        step = len(items) // dims[0] if dims[0] else 0
        return [nest(items[k * step : (k + 1) * step], dims[1:]) for k in range(dims[0])]

    return nest(flat, shape)


def _row_of(values: list[Any], i: int, count: int) -> Any:
    """Row ``i`` of an output whose first dimension is the batch (when it is)."""
    if len(values) == count:
        return values[i]
    return values


def _check(settings: Mapping[str, Any]) -> dict[str, Any]:
    if "api_key" in settings:
        raise DefinitionError(
            "a token must not be stored with a model: put it in an environment variable "
            "and name that variable in 'api_key_env'"
        )
    s = {k: v for k, v in settings.items() if k in _SETTINGS}
    base_url = s.get("base_url")
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https"):
        raise DefinitionError("oip 'base_url' must be an http(s) URL")
    if not isinstance(s.get("model"), str) or not _TENSOR_NAME.fullmatch(s["model"]):
        raise DefinitionError("oip 'model' must name the served model")
    version = s.get("version")
    if version is not None and not (
        (isinstance(version, str) and _TENSOR_NAME.fullmatch(version)) or sig.is_integer(version)
    ):
        raise DefinitionError("oip 'version' must be the served version's name or number")
    for key in ("input", "label_output", "proba_output"):
        if s.get(key) is not None and not (
            isinstance(s[key], str) and _TENSOR_NAME.fullmatch(s[key])
        ):
            raise DefinitionError(f"oip {key!r} must be a tensor name")
    if s.get("datatype") is not None and s["datatype"] not in _DATATYPES:
        raise DefinitionError(f"oip 'datatype' must be one of {', '.join(sorted(_DATATYPES))}")
    for key in ("features", "outputs"):
        value = s.get(key)
        if value is not None and (
            not isinstance(value, list)
            or not value
            or not all(isinstance(x, str) and x for x in value)
            or len(set(value)) != len(value)
        ):
            raise DefinitionError(f"oip {key!r} must be a list of distinct non-empty names")
    classes = s.get("classes")
    if classes is not None and (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str | int) and not isinstance(c, bool) for c in classes)
    ):
        raise DefinitionError("oip 'classes' must be a non-empty list of class names")
    if s.get("parameters") is not None and not isinstance(s["parameters"], Mapping):
        raise DefinitionError("oip 'parameters' must be a mapping")
    timeout = s.get("timeout", DEFAULT_TIMEOUT)
    if not (sig.is_number(timeout) and timeout > 0):
        raise DefinitionError("oip 'timeout' must be a positive number of seconds")
    retries = s.get("retries", DEFAULT_RETRIES)
    if not (sig.is_integer(retries) and 0 <= retries <= 10):
        raise DefinitionError("oip 'retries' must be an integer in [0, 10]")
    max_batch = s.get("max_batch", DEFAULT_MAX_BATCH)
    if not (sig.is_integer(max_batch) and 0 < max_batch <= 100_000):
        raise DefinitionError("oip 'max_batch' must be an integer in [1, 100000]")
    env = s.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not _ENV_NAME.fullmatch(env)):
        raise DefinitionError("oip 'api_key_env' must be an environment variable name")
    return s


def load(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> ModelAdapter:
    """Flavor loader: a settings document (may be empty) + config -> :class:`OIPAdapter`."""
    document = parse_document(artifact)
    if not isinstance(document, Mapping):
        raise DefinitionError("an oip artifact is a mapping of settings (or empty)")
    unknown = sorted(set(document) - _SETTINGS - {"api_key"})
    if unknown:
        raise DefinitionError(f"unknown oip setting(s) in the artifact: {', '.join(unknown)}")
    # The config may also carry settings of the gateway's; only this flavor's are taken.
    ours = {k: v for k, v in config.items() if k in _SETTINGS or k == "api_key"}
    return OIPAdapter({**document, **ours})


flavors.register_flavor(FLAVOR, load)
