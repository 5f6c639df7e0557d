"""Flavor loaders: how a version's artifact bytes and config become a :class:`ModelAdapter`.

Adapters register their flavor here; the registry calls :func:`load_adapter` and never
needs to know the flavors. ``trusted`` is passed through so a loader that could execute
code from the artifact (a pickle) refuses unless the caller explicitly trusts it.

A *composite* flavor (:func:`register_composite`) is one whose artifact names other blobs
of the registry's blob store by sha256 digest instead of holding the model itself. The
registry asks it which digests an artifact names (to store them with the version, and to
refuse a version whose parts it does not have), lets it check the whole at registration,
and hands its loader a :data:`PartLoader` that loads a named part from verified bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DefinitionError
from .types import ModelAdapter

Loader = Callable[[bytes, Mapping[str, Any], bool], ModelAdapter]
# (flavor, sha256, config) -> the part loaded, untrusted, from bytes verified against sha256.
PartLoader = Callable[[str, str, Mapping[str, Any]], ModelAdapter]


@dataclass(frozen=True)
class Composite:
    """A flavor whose artifact (a manifest) names its parts by digest.

    ``parts(artifact)`` validates the manifest and returns the digests it names;
    ``check(artifact, load_part)`` refuses, at registration, a whole that cannot work (parts
    that disagree on their classes); ``load(artifact, config, load_part)`` builds the adapter.
    """

    parts: Callable[[bytes], Sequence[str]]
    check: Callable[[bytes, PartLoader], None]
    load: Callable[[bytes, Mapping[str, Any], PartLoader], ModelAdapter]


_loaders: dict[str, Loader] = {}
_composites: dict[str, Composite] = {}
_lock = threading.Lock()
# Built-in flavors live in these modules; they are imported the first time they are asked
# for, so an install without scikit-learn or tesseract can still use the others.
_BUILTIN = {
    "sklearn": "aevos.models.adapters.sklearn",
    "rules": "aevos.models.adapters.rules",
    "ocr": "aevos.models.adapters.ocr",
    "embedding": "aevos.models.adapters.embedding",
    "openai": "aevos.models.adapters.openai",
    "oip": "aevos.models.adapters.oip",
    "composite": "aevos.models.adapters.composite",
}


def register_flavor(name: str, loader: Loader) -> None:
    with _lock:
        _loaders[name] = loader


def register_composite(name: str, composite: Composite) -> None:
    """Register a flavor whose artifacts name their parts by digest (see :class:`Composite`)."""
    with _lock:
        _composites[name] = composite


def flavors() -> list[str]:
    return sorted(set(_loaders) | set(_composites) | set(_BUILTIN))


def _import_builtin(flavor: str) -> None:
    if flavor in _BUILTIN and flavor not in _loaders and flavor not in _composites:
        import importlib

        importlib.import_module(_BUILTIN[flavor])  # registers itself


def composite(flavor: str) -> Composite | None:
    """The composite behind ``flavor``, or None when ``flavor`` is a plain one (or unknown)."""
    _import_builtin(flavor)
    return _composites.get(flavor)


def load_adapter(
    flavor: str,
    artifact: bytes,
    config: Mapping[str, Any],
    *,
    trusted: bool = False,
    load_part: PartLoader | None = None,
) -> ModelAdapter:
    _import_builtin(flavor)
    whole = _composites.get(flavor)
    if whole is not None:
        if load_part is None:
            raise DefinitionError(
                f"flavor {flavor!r} is composite: its parts live in the registry's blob store, "
                "so load its versions through the model registry"
            )
        return whole.load(artifact, config, load_part)
    loader = _loaders.get(flavor)
    if loader is None:
        raise DefinitionError(f"unknown model flavor {flavor!r} (known: {', '.join(flavors())})")
    return loader(artifact, config, trusted)
