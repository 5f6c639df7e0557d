"""Flavor loaders: how a version's artifact bytes and config become a :class:`ModelAdapter`.

Adapters register their flavor here; the registry calls :func:`load_adapter` and never
needs to know the flavors. ``trusted`` is passed through so a loader that could execute
code from the artifact (a pickle) refuses unless the caller explicitly trusts it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import DefinitionError
from .types import ModelAdapter

Loader = Callable[[bytes, Mapping[str, Any], bool], ModelAdapter]

_loaders: dict[str, Loader] = {}
_lock = threading.Lock()
# Built-in flavors live in these modules; they are imported the first time they are asked
# for, so an install without scikit-learn or tesseract can still use the others.
_BUILTIN = {
    "sklearn": "aevos.models.adapters.sklearn",
    "rules": "aevos.models.adapters.rules",
    "ocr": "aevos.models.adapters.ocr",
    "embedding": "aevos.models.adapters.embedding",
    "openai": "aevos.models.adapters.openai",
}


def register_flavor(name: str, loader: Loader) -> None:
    with _lock:
        _loaders[name] = loader


def flavors() -> list[str]:
    return sorted(set(_loaders) | set(_BUILTIN))


def load_adapter(
    flavor: str, artifact: bytes, config: Mapping[str, Any], *, trusted: bool = False
) -> ModelAdapter:
    loader = _loaders.get(flavor)
    if loader is None and flavor in _BUILTIN:
        import importlib

        importlib.import_module(_BUILTIN[flavor])  # registers itself
        loader = _loaders.get(flavor)
    if loader is None:
        raise DefinitionError(f"unknown model flavor {flavor!r} (known: {', '.join(flavors())})")
    return loader(artifact, config, trusted)
