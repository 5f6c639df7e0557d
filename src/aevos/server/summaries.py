"""Bounded listings: a large input, output or case is listed as a summary, never whole.

A listing (``GET /v1/runs``, ``GET /v1/runs/{id}/steps``, ``GET /v1/tasks``) holds up to a
thousand items; one large value in each would make a response of gigabytes. A value whose
JSON encoding is longer than the server's ``listed_value_bytes`` (default
:data:`DEFAULT_LISTED_VALUE_BYTES`) is replaced in listings by a :class:`Summary`, and the
item's ``truncated`` names the fields that were. The summary's ``href`` fetches the value
whole, with the same permission and tenant checks as the listing; its body is exactly the
encoding the summary describes (``bytes`` long, with that ``sha256``). Single-resource reads
(``GET /v1/runs/{id}``, ``GET /v1/tasks/{id}``) return values whole.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .. import errors as e

DEFAULT_LISTED_VALUE_BYTES = 8 * 1024
MAX_LISTED_VALUE_BYTES = 1 << 30


class Summary(BaseModel):
    """What a listing shows of a value too large to list."""

    truncated: Literal[True] = True
    bytes: int = Field(description="The length of the value's JSON encoding (UTF-8).")
    sha256: str = Field(description="The SHA-256 (hex) of that encoding.")
    href: str = Field(description="Where to GET the value whole (the same token).")


def encode(value: Any) -> bytes:
    """A value's JSON as the API sends it (Starlette's JSONResponse encoding)."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def value_response(value: Any) -> JSONResponse:
    """The body a summary's ``href`` answers with: the value's encoding, byte for byte."""
    return JSONResponse(value)


class Lister:
    """Lists values of one item: small ones as they are, large ones as summaries."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.truncated: list[str] = []

    def __call__(self, field: str, value: Any, href: str) -> Any:
        # Scalars and short strings cannot pass the limit (a character is at most six
        # bytes of JSON, as \u0000): no need to encode them.
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str) and len(value) * 6 + 2 <= self.limit:
            return value
        encoded = encode(value)
        if len(encoded) <= self.limit:
            return value
        self.truncated.append(field)
        return Summary(
            bytes=len(encoded), sha256=hashlib.sha256(encoded).hexdigest(), href=href
        ).model_dump()


def listed_value_bytes(value: int | None) -> int:
    """The summary threshold: ``value``, or :data:`DEFAULT_LISTED_VALUE_BYTES`."""
    if value is None:
        return DEFAULT_LISTED_VALUE_BYTES
    if isinstance(value, bool) or not 0 < value <= MAX_LISTED_VALUE_BYTES:
        raise e.DefinitionError(
            f"listed_value_bytes must be 1 to {MAX_LISTED_VALUE_BYTES} bytes, not {value}"
        )
    return value
