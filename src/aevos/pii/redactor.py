"""Detect, redact and tokenise PII in text and in JSON-like values."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import PiiConfigError
from .base import Recognizer
from .engine import Engine, RecognizerEngine
from .finding import Finding, Redaction
from .normalize import Normalized, normalize

if TYPE_CHECKING:
    from .vault import Vault

_Path = tuple[str, ...]


class Redactor:
    """Finds PII and replaces it, in the original text, by ``<KIND>`` or a vault token.

    Detection runs on a normalised copy of the text (see :mod:`aevos.pii.normalize`) and
    each span is cut from the original, so an obfuscated value disappears whole, including
    the zero-width characters or tags hidden inside it.

    ``engine`` defaults to :class:`RecognizerEngine` (no dependencies); pass
    ``PresidioEngine()`` to use Presidio instead. ``extra`` adds recognisers to the default
    engine. Findings scoring below ``min_score`` are ignored.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        extra: Iterable[Recognizer] = (),
        min_score: float = 0.5,
    ) -> None:
        extra = list(extra)
        if engine is not None and extra:
            raise PiiConfigError(
                "extra recognizers extend the default engine; build "
                "RecognizerEngine(extra=...) yourself to combine them with another engine"
            )
        if not 0.0 <= min_score <= 1.0:
            raise PiiConfigError(f"min_score must be between 0 and 1, got {min_score}")
        self.engine: Engine = engine if engine is not None else RecognizerEngine(extra=extra)
        self.min_score = min_score

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds this redactor can find."""
        return self.engine.kinds

    # -- detection ----------------------------------------------------------------------

    def _kinds(self, kinds: Collection[str] | None) -> frozenset[str] | None:
        if kinds is None:
            return None
        chosen = frozenset(kinds)
        unknown = chosen - self.engine.kinds
        if unknown:
            raise PiiConfigError(
                f"unknown PII kind(s) {sorted(unknown)}; this redactor finds "
                f"{sorted(self.engine.kinds)}"
            )
        return chosen

    def _scan(self, text: str, kinds: Collection[str] | None) -> tuple[Normalized, list[Finding]]:
        """Findings with spans in the *normalised* text."""
        wanted = self._kinds(kinds)
        norm = normalize(text)
        found = [
            f
            for f in self.engine.analyze(norm.text)
            if f.score >= self.min_score and (wanted is None or f.kind in wanted)
        ]
        return norm, found

    @staticmethod
    def _source(norm: Normalized, f: Finding) -> Finding:
        start, end = norm.source_span(f.start, f.end)
        return Finding(f.kind, start, end, f.score)

    def detect(self, text: str, *, kinds: Collection[str] | None = None) -> list[Finding]:
        """The PII in ``text``, sorted by start, spans in ``text`` itself."""
        norm, found = self._scan(text, kinds)
        return [self._source(norm, f) for f in found]

    # -- redaction ----------------------------------------------------------------------

    def _replace(
        self, text: str, norm: Normalized, found: list[Finding], labels: list[str]
    ) -> Redaction:
        pieces: list[str] = []
        findings: list[Finding] = []
        pos = 0
        for f, label in zip(found, labels, strict=True):
            source = self._source(norm, f)
            # Two findings can share one source unit (a ligature split in two): never
            # emit text twice.
            start = max(source.start, pos)
            pieces.append(text[pos:start])
            pieces.append(label)
            pos = max(pos, source.end)
            findings.append(source)
        pieces.append(text[pos:])
        return Redaction("".join(pieces), tuple(findings))

    def redact(
        self,
        text: str,
        *,
        kinds: Collection[str] | None = None,
        numbered: bool = False,
    ) -> Redaction:
        """Replace each finding by ``<KIND>``, or ``<KIND_n>`` with ``numbered=True``.

        Numbering is per kind and per value within this one text: the same address twice
        gives ``<EMAIL_1>`` twice, another one ``<EMAIL_2>``. ``kinds`` limits what is
        replaced (unknown kind names are an error, so a policy typo does not silently
        redact nothing). Redacting redacted text changes nothing.
        """
        norm, found = self._scan(text, kinds)
        if not found:
            return Redaction(text, ())
        if numbered:
            seen: dict[tuple[str, str], int] = {}
            counts: dict[str, int] = {}
            labels = []
            for f in found:
                key = (f.kind, self.engine.canonical(f.kind, norm.text[f.start : f.end]))
                if key not in seen:
                    counts[f.kind] = seen[key] = counts.get(f.kind, 0) + 1
                labels.append(f"<{f.kind}_{seen[key]}>")
        else:
            labels = [f"<{f.kind}>" for f in found]
        return self._replace(text, norm, found, labels)

    def redact_value(
        self,
        value: Any,
        *,
        fields: Iterable[str] | None = None,
        kinds: Collection[str] | None = None,
        numbered: bool = False,
    ) -> Any:
        """A copy of a JSON-like value with PII redacted in its strings.

        Dicts, lists and tuples are walked; strings are redacted; integers are checked
        too (a card number stored as an int comes back as the redacted string). Keys are
        left alone. ``fields`` limits redaction to dotted paths such as ``ticket.text``
        or ``tickets.*.text`` (``*`` matches any key or list index); a path that selects
        a container redacts everything under it; paths that do not exist are ignored.
        """
        self._kinds(kinds)
        if fields is None:
            paths: list[_Path] = [()]
        else:
            paths = [_parse_path(p) for p in fields]
        return self._walk(value, paths, kinds, numbered)

    def _walk(
        self, value: Any, paths: list[_Path], kinds: Collection[str] | None, numbered: bool
    ) -> Any:
        if not paths:
            return value
        everything = any(not p for p in paths)
        if isinstance(value, str):
            return self.redact(value, kinds=kinds, numbered=numbered).text if everything else value
        if isinstance(value, int) and not isinstance(value, bool):
            if everything and abs(value) >= 1_000_000:
                redacted = self.redact(str(value), kinds=kinds, numbered=numbered)
                return redacted.text if redacted.findings else value
            return value
        if isinstance(value, Mapping):
            return {
                k: self._walk(v, _descend(paths, str(k)), kinds, numbered) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            items = [
                self._walk(v, _descend(paths, str(i)), kinds, numbered) for i, v in enumerate(value)
            ]
            return tuple(items) if isinstance(value, tuple) else items
        return value

    # -- reversible tokenisation --------------------------------------------------------

    def tokenize(
        self,
        text: str,
        *,
        tenant: str,
        vault: Vault,
        kinds: Collection[str] | None = None,
    ) -> Redaction:
        """Replace each finding by a stable token such as ``<EMAIL:tok_bcdf...>``.

        The token is an HMAC of (tenant, kind, canonical value) under the vault key: the
        same value gets the same token in every text of that tenant (joins and counts
        still work on tokenised data), and different tenants get different tokens. The
        canonical value is stored encrypted in the vault; :meth:`detokenize` restores it
        (so ``4111-1111-...`` comes back as ``4111111111111111``, an obfuscated e-mail as
        the plain address).
        """
        pending: list[tuple[str, str]] = []
        redaction = self.tokenize_later(
            text, tenant=tenant, vault=vault, kinds=kinds, pending=pending
        )
        if pending:
            vault.store_values(tenant, pending)
        return redaction

    def tokenize_later(
        self,
        text: str,
        *,
        tenant: str,
        vault: Vault,
        pending: list[tuple[str, str]],
        kinds: Collection[str] | None = None,
    ) -> Redaction:
        """:meth:`tokenize` without the write: the ``(kind, value)`` pairs to store are
        appended to ``pending``, so that many texts (every string of a run's input) are
        stored in one ``vault.store_values(tenant, pending)``, which the caller must do
        before anything that holds the tokens is committed."""
        norm, found = self._scan(text, kinds)
        if not found:
            return Redaction(text, ())
        values = [
            (f.kind, self.engine.canonical(f.kind, norm.text[f.start : f.end])) for f in found
        ]
        pending.extend(values)
        labels = [f"<{kind}:{vault.token(tenant, kind, value)}>" for kind, value in values]
        return self._replace(text, norm, found, labels)

    def detokenize(
        self,
        text: str,
        *,
        tenant: str,
        vault: Vault,
        allowed: bool,
        strict: bool = False,
    ) -> str:
        """Put the original values back in place of this tenant's tokens.

        ``allowed`` is the caller's authorisation decision and has no default: pass
        ``allowed=True`` only after checking that the principal's role may see PII (the
        policy engine decides that). Anything but ``True`` raises
        :class:`~aevos.errors.PiiAccessDeniedError`. Tokens of another tenant, or erased
        ones, stay as they are; with ``strict=True`` they raise
        :class:`~aevos.errors.PiiTokenNotFoundError` instead.
        """
        return vault.detokenize(text, tenant=tenant, allowed=allowed, strict=strict)


def _parse_path(path: str) -> _Path:
    parts = tuple(path.split("."))
    if not path or any(not part for part in parts):
        raise PiiConfigError(f"field path {path!r} must be dot-separated names, e.g. 'ticket.text'")
    return parts


def _descend(paths: list[_Path], key: str) -> list[_Path]:
    """The remaining paths under ``key`` (a path already used up covers everything below)."""
    out: list[_Path] = []
    for p in paths:
        if not p:
            out.append(p)
        elif p[0] == "*" or p[0] == key:
            out.append(p[1:])
    return out
