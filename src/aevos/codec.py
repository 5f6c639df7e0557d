"""The one serialisation format of recorded values: JSON.

JSON rather than pickle because recorded inputs and outputs are read back by other
processes, other code versions and (via the API) other people; unpickling any of that would
run arbitrary code. Values must be JSON-native (dict with str keys, list, tuple, str, int,
float, bool, None); anything else is refused with the path to the offending value.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from .errors import SerializationError

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_decode = json.JSONDecoder().decode


def encode(value: Any, where: str) -> str:
    """Serialise ``value``; ``where`` names it in the error ("input of workflow 'x'")."""
    try:
        text = _encoder.encode(value)
    except (TypeError, ValueError) as exc:
        path, culprit = _find_culprit(value, "$")
        detail = (
            f"{type(culprit).__name__} at {path}"
            if path is not None
            else str(exc).split("\n", 1)[0]
        )
        raise SerializationError(
            f"{where} is not JSON-serialisable: {detail}; record only JSON values "
            "(dict, list, str, int, float, bool, None) or convert it first"
        ) from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A lone surrogate ("\ud800") is a Python str but not Unicode text: no database
            # stores it and no digest can hash it.
            raise SerializationError(
                f"{where} is not valid Unicode: a lone surrogate at character {exc.start} "
                "of its JSON; decode such text with errors='replace' first"
            ) from None
    return text


def decode(text: str) -> Any:
    return _decode(text)


def _find_culprit(value: Any, path: str) -> tuple[str | None, Any]:
    if value is None or isinstance(value, str | bool | int):
        return None, None
    if isinstance(value, float):
        return (path, value) if not math.isfinite(value) else (None, None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path} (key {key!r})", key
            found = _find_culprit(item, f"{path}.{key}")
            if found[0] is not None:
                return found
        return None, None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_culprit(item, f"{path}[{index}]")
            if found[0] is not None:
                return found
        return None, None
    return path, value


def digest(value: Any) -> str:
    """sha256 of the value's canonical JSON (sorted keys): stable, and reveals nothing."""
    import hashlib

    canonical = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- model inputs ------------------------------------------------------------------------------
#
# A model input is recorded only by digest (the model.called audit record) and, when kept, as
# a case (aevos.cases); both are made from one canonical form, so a kept case's digest is
# the audit record's by construction.


def _input_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    raise TypeError(type(value).__name__)


_encode_str = json.encoder.encode_basestring
_INPUT_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_input_default,
)


def canonical_input(value: Any) -> str | bytes:
    """A model input's canonical form: raw bytes as they are, anything else as canonical
    JSON (sorted keys, compact; nested bytes become their ``sha256:`` digest, arrays lists).
    Decoding that JSON gives a value whose canonical form is the same text."""
    if type(value) is str:
        # What the encoder produces for a string, without its dispatch (text is the common
        # input, and this is on every model call's path).
        return str(_encode_str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        return _INPUT_ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"a model input must be JSON values or bytes; got {type(value).__name__} "
            f"({str(exc).splitlines()[0][:80]})"
        ) from None


def input_digest(value: Any) -> str:
    """SHA-256 of the input's canonical form (:func:`canonical_input`). What the audit log
    records of a model input: never the input itself."""
    canonical = canonical_input(value)
    data = canonical if isinstance(canonical, bytes) else canonical.encode()
    return hashlib.sha256(data).hexdigest()
