"""Artifacts that are documents: UTF-8 JSON or YAML (decision tables, prompts, engine settings)."""

from __future__ import annotations

import json
from typing import Any

from ...errors import InvalidArtifactError


def parse_document(artifact: bytes) -> Any:
    """Decode a JSON or YAML artifact; empty bytes are an empty mapping."""
    try:
        text = artifact.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArtifactError("the artifact is not UTF-8 text") from None
    if not text.strip():
        return {}
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # YAML flow style ({engine: tesseract}) starts the same way
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidArtifactError(f"the artifact is not valid JSON or YAML{at}") from None
