"""The recogniser interface, context-word lookup, and the pattern hook for national IDs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from ..errors import PiiConfigError
from .finding import Finding

_KIND = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z][A-Z0-9]*)*")


@runtime_checkable
class Recognizer(Protocol):
    """Finds one or more kinds of PII in normalised text.

    ``find`` gets the normalised text and, for a ``contextual`` recogniser, the findings of
    the non-contextual ones (so context words inside an e-mail address do not count, and a
    found value counts as one word, exactly as its placeholder will after redaction).
    Implementations return spans and scores only; they must not keep or log the value.
    """

    kinds: frozenset[str]
    contextual: bool

    def find(self, text: str, prior: Sequence[Finding]) -> Iterable[Finding]: ...

    def canonical(self, kind: str, value: str) -> str:
        """The value in one canonical spelling (tokens and ``<KIND_n>`` numbering use it)."""
        ...


def check_kind(kind: str) -> str:
    """Reject kind names that would not round-trip through ``<KIND>`` placeholders."""
    if not _KIND.fullmatch(kind):
        raise PiiConfigError(
            f"PII kind {kind!r} must be upper case letters, digits and single underscores "
            "(e.g. 'NATIONAL_ID'), starting with a letter"
        )
    return kind


def keyword_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """A case-insensitive whole-word pattern for context words.

    Words glued to ``<``, ``>`` or ``_`` do not count, so the ``PHONE`` inside a
    ``<PHONE_1>`` placeholder or a ``<PHONE:tok_...>`` token is not context.
    """
    alternation = "|".join(
        re.escape(w).replace(r"\ ", r"[\s\-]*") for w in sorted(words, key=len, reverse=True)
    )
    return re.compile(rf"(?<![\w<])(?:{alternation})(?![\w>])", re.IGNORECASE)


def has_context(
    text: str,
    start: int,
    keywords: re.Pattern[str],
    prior: Sequence[Finding],
    *,
    max_words: int = 5,
) -> bool:
    """Whether a context word occurs within ``max_words`` words before ``start``.

    Words are counted with every prior finding collapsed to one opaque word, so the answer
    is the same before and after redaction (redaction is idempotent).
    """
    lo = max(0, start - 200)
    pieces: list[str] = []
    pos = lo
    for f in prior:
        if f.end <= lo or f.start >= start:
            continue
        pieces.append(text[pos : max(pos, f.start)])
        pieces.append(" \x00 ")
        pos = max(pos, f.end)
    pieces.append(text[pos:start])
    words = "".join(pieces).split()
    return keywords.search(" ".join(words[-(max_words + 2) :])) is not None


_last_count: tuple[str, int] = ("", 0)


def digit_count(text: str) -> int:
    """How many ASCII digits ``text`` holds (remembered for the last text asked about).

    Recognisers use it as a gate: most text has too few digits to hold a card, IBAN or
    phone number, and counting them is far cheaper than running the patterns.
    """
    global _last_count
    last = _last_count  # one read: another thread may replace it
    if last[0] is text:
        return last[1]
    count = sum(text.count(d) for d in "0123456789")
    _last_count = (text, count)
    return count


def compact(value: str) -> str:
    """Letters and digits only, upper case: the default canonical form."""
    return "".join(ch for ch in value if ch.isalnum()).upper()


class PatternRecognizer:
    """A regular expression plus an optional validator, for one kind.

    This is the hook for national identifiers and other house formats::

        def dni_valid(value: str) -> bool:                   # Spanish DNI check letter
            digits, letter = value[:8], value[8]
            return "TRWAGMYFPDXBNJZSQVHLCKE"[int(digits) % 23] == letter

        redactor = Redactor(extra=[national_id(r"\\b\\d{8}[ -]?[A-Z]\\b", validate=dni_valid)])

    ``validate`` receives the canonical form (letters and digits, upper case, unless
    ``canonical`` says otherwise). With ``context`` words, a match without one of them
    nearby is dropped (the recogniser then runs after the others, see
    :class:`Recognizer`).
    """

    def __init__(
        self,
        kind: str,
        pattern: str | re.Pattern[str],
        *,
        validate: Callable[[str], bool] | None = None,
        score: float = 0.8,
        context: Iterable[str] = (),
        canonical: Callable[[str], str] = compact,
        flags: int = re.IGNORECASE,
    ) -> None:
        if not 0.0 < score <= 1.0:
            raise PiiConfigError(f"score must be in (0, 1], got {score}")
        self.kind = check_kind(kind)
        self.kinds = frozenset({kind})
        self.pattern = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)
        self.validate = validate
        self.score = score
        words = tuple(context)
        self.context = keyword_pattern(words) if words else None
        self.contextual = self.context is not None
        self._canonical = canonical

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        for m in self.pattern.finditer(text):
            if m.end() == m.start():
                continue
            if self.validate is not None and not self.validate(self._canonical(m.group())):
                continue
            if self.context is not None and not has_context(text, m.start(), self.context, prior):
                continue
            yield Finding(self.kind, m.start(), m.end(), self.score)

    def canonical(self, kind: str, value: str) -> str:
        return self._canonical(value)


def national_id(
    pattern: str | re.Pattern[str],
    *,
    validate: Callable[[str], bool] | None = None,
    kind: str = "NATIONAL_ID",
    score: float = 0.8,
    context: Iterable[str] = (),
) -> PatternRecognizer:
    """A recogniser for a national identifier format (kind ``NATIONAL_ID`` by default)."""
    return PatternRecognizer(kind, pattern, validate=validate, score=score, context=context)
