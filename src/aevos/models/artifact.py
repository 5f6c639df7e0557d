"""Safe artifact serialisation: scikit-learn models as skops files, pickles refused.

A pickle runs arbitrary code while it loads, so an artifact from the registry (which anyone
with database access can write) must never be unpickled unless a person explicitly trusts
it. scikit-learn models are stored with skops instead: a zip of JSON and ``.npy`` arrays
whose loader builds only types it was told to trust, and :func:`load_sklearn` refuses, by
name, every type outside skops's default allow-list unless the caller trusts it.

:func:`dump_sklearn` also makes the bytes canonical: skops names the files inside the zip
after ``id()`` of the objects and stamps them with the current time, so dumping one model
twice gave two digests. Renumbering those ids and fixing the timestamps means the same
fitted model dumps to the same bytes (in the same environment), so registering it again is
recognised as the same content-addressed version.

skops and scikit-learn are imported on first use: importing aevos stays light.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArtifactError, UnsafeArtifactError

__all__ = ["dump_sklearn", "is_pickle", "is_skops", "load_sklearn", "type_name"]

# Bytes that are pickle opcodes: only data starting with one is parsed as a legacy pickle.
_OPCODES = frozenset(ord(op.code) for op in pickletools.opcodes)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def _skops_io() -> Any:
    try:
        return importlib.import_module("skops.io")
    except ImportError:
        raise InvalidArtifactError(
            "scikit-learn artifacts need the skops package: pip install scikit-learn skops"
        ) from None


def is_pickle(data: bytes) -> bool:
    """Whether ``data`` is a pickle stream (any protocol), found without unpickling it.

    Protocol 2 and later begin with the PROTO opcode and the protocol number; older
    protocols have no header, so their opcodes are parsed (never executed) up to STOP.
    """
    if len(data) >= 2 and data[0] == 0x80 and data[1] >= 2:
        return True
    if not data or data[0] not in _OPCODES:
        return False
    try:
        last = None
        # Parsing bytes that are not a pickle (a JSON file that happens to start with an
        # opcode's byte) makes pickletools decode text as escapes, which warns on Python's
        # side about an "invalid escape sequence": noise about data that is refused anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for opcode, _arg, _pos in pickletools.genops(data):
                last = opcode.name
    except Exception:  # any malformed stream: not a pickle
        return False
    return last == "STOP"


def is_skops(data: bytes) -> bool:
    """Whether ``data`` looks like a skops file (a zip archive holding ``schema.json``)."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "schema.json" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def type_name(value: str | type) -> str:
    """A type's fully qualified name as skops reports it (``module.QualName``)."""
    if isinstance(value, str):
        return value
    return f"{value.__module__}.{value.__qualname__}"


def dump_sklearn(estimator: Any) -> bytes:
    """``estimator`` (a fitted scikit-learn model or pipeline) as canonical skops bytes."""
    sio = _skops_io()
    raw: bytes = sio.dumps(estimator)
    return _canonical(raw)


def _canonical(raw: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(raw)) as source:
        schema = json.loads(source.read("schema.json"))
        ids: dict[Any, int] = {}
        files: dict[str, str] = {}

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if "__id__" in node:
                    # From 1: skops treats a saved id of 0 as "not memoised".
                    node["__id__"] = ids.setdefault(node["__id__"], len(ids) + 1)
                name = node.get("file")
                if isinstance(name, str) and name in source.NameToInfo:
                    suffix = name.rpartition(".")[2]
                    node["file"] = files.setdefault(name, f"{len(files) + 1}.{suffix}")
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(schema)
        entries = {files.get(name, name): source.read(name) for name in source.namelist()}
    # Written the way skops writes it, so the file stays what skops itself produces.
    entries["schema.json"] = json.dumps(schema, indent=2).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, entries[name])
    return out.getvalue()


def load_sklearn(
    data: bytes,
    *,
    trusted_types: Iterable[str | type] | None = None,
    trusted: bool = False,
) -> Any:
    """The scikit-learn object in ``data``, built without running code from the artifact.

    A skops file loads when every type it needs is trusted by skops's defaults or listed in
    ``trusted_types``; otherwise :class:`~aevos.errors.UnsafeArtifactError` names the
    others. A pickle is refused the same way. ``trusted=True`` trusts the artifact whole
    (every type it names, and unpickling): only for artifacts whose origin you vouch for.
    """
    if is_pickle(data):
        if not trusted:
            raise UnsafeArtifactError(
                "the artifact is a pickle, which can run arbitrary code while it loads; "
                "refused. Re-save the model with aevos.models.artifact.dump_sklearn (skops), "
                "or load it with trusted=True if you vouch for where it came from"
            )
        # The caller vouched for this artifact explicitly (and the registry audits it).
        return pickle.loads(data)
    if not is_skops(data):
        raise InvalidArtifactError(
            "the artifact is neither a skops file (a zip holding schema.json, as written by "
            "aevos.models.artifact.dump_sklearn) nor a pickle"
        )
    sio = _skops_io()
    try:
        needed: list[str] = list(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise InvalidArtifactError(f"the skops file cannot be read: {exc}") from None
    allowed = {type_name(t) for t in trusted_types or ()}
    refused = sorted(set(needed) - allowed)
    if refused and not trusted:
        raise UnsafeArtifactError(
            f"the artifact needs {len(refused)} type(s) that skops does not trust by default: "
            f"{', '.join(refused)}; pass trusted_types naming them if you trust them"
        )
    try:
        return sio.loads(data, trusted=needed)
    except Exception as exc:
        raise InvalidArtifactError(
            f"the skops file cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
